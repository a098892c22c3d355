"""The Celery executor: servers publish run ids to Redis, `bastion worker` processes run them.

A message carries nothing but a run id. The run itself (workflow version, input, status,
lease) is in the database, and the engine's claim is the arbiter: a duplicate delivery, a
redelivery after a lost ack, or a resubmission by the server's recovery claims nothing and
runs nothing. So the broker only has to deliver *at least* once:

- acks come late, and the message of a pool process that died goes back to the queue: a
  run that nobody had claimed yet is not lost with the process;
- a run whose worker died after claiming it keeps its lease until it lapses; the server's
  recovery then resubmits it and the next worker resumes it from its last checkpoint;
- a run whose message was lost outright (Redis restarted without persistence) stays
  `queued` in the database, and the same recovery resubmits it.

Every workspace has its own queue, `bastion.ws.<id>`, so a worker can be dedicated to some
workspaces (a noisy tenant gets its own workers; the others do not wait behind it).

In a worker, each process keeps one event loop for its whole life, in a thread of its own,
holding the database, vault and engine; tasks hand their run to that loop and wait. The
loop also renews the leases of the runs in progress, and learns of cancellations from the
database there (no message reaches a worker to cancel a run).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar
from urllib.parse import urlsplit

from billiard.process import current_process  # type: ignore[import-untyped]
from celery import Celery, signals  # type: ignore[import-untyped]
from sqlalchemy import select

from bastion.audit.log import AuditLog
from bastion.background import BackgroundService, Supervisor
from bastion.config import Settings
from bastion.db import Database
from bastion.db.tables import Workspace
from bastion.errors import InvalidInput, Unavailable
from bastion.execution.engine import Engine, RetryPlanner
from bastion.execution.factory import open_engine
from bastion.runs.records import Status
from bastion.vault.credentials import Vault, VaultLimits

Planner = Callable[[AuditLog], RetryPlanner]
log = logging.getLogger("bastion.execution.celery")
T = TypeVar("T")

TASK_NAME = "bastion.execute_run"
QUEUE_PREFIX = "bastion.ws."
# How long Redis waits for the ack of a delivered message before delivering it again.
# Acks come late (when the run has ended), so this should exceed the longest run expected
# (the default delay limit is an hour). A run outliving it only costs a redundant delivery,
# which claims nothing: the lease of the running run is still being renewed.
VISIBILITY_TIMEOUT_SECONDS = 3600
# Sandbox uids of worker process i start at sandbox_uid_base + i * stride, so processes
# running code at the same time never share a uid (tenants cannot signal each other).
UID_STRIDE = 100
MAX_CONCURRENCY = 64
CLOSE_SECONDS = 15.0
# Run ids are generated hex; a message with anything else was not published by Bastion.
_RUN_ID = re.compile(r"[0-9a-f]{1,64}")


def queue_name(workspace_id: int) -> str:
    return f"{QUEUE_PREFIX}{workspace_id}"


def celery_app(broker_url: str) -> Celery:
    """A Celery app publishing to and consuming from `broker_url` (a Redis URL)."""
    app = Celery("bastion", broker=broker_url, set_as_current=False)
    app.conf.update(
        # JSON only. Pickle would let anyone able to write to Redis run code in every
        # worker (unpickling is code execution); JSON carries the run id and nothing more.
        task_serializer="json",
        accept_content=["json"],
        # Ack when the run has ended, and requeue the message if its process dies first:
        # a crash never loses a run that nobody has claimed yet.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message per process at a time: a message reserved by a busy process would
        # wait behind its run while another process sits idle.
        worker_prefetch_multiplier=1,
        # The database holds every result; a result backend would be a second copy.
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        # A dispatch waits for its publish; during a Redis outage it gives up soon (the
        # run is already committed, and recovery publishes it again later).
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        # Remote control listens on a broadcast channel anyone with Redis access can
        # write to (shutdown, add_consumer for other workspaces' queues, ...): off.
        worker_enable_remote_control=False,
        # Bastion's own logging (files with rotation, secret scrubbing) stays in charge.
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # A Redis blip must not abort the runs in progress. Their acks are lost with the
        # channel, so their messages come back later, and claim nothing.
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    if urlsplit(broker_url).scheme == "rediss":
        # kombu's default for rediss:// is CERT_NONE: encrypted, but to whoever answers.
        app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    app.task(name=TASK_NAME, ignore_result=True, shared=False)(_execute_run)
    return app


class CeleryExecutor:
    """Publishes runs to their workspace's queue; `bastion worker` executes them."""

    name = "celery"

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._pending: list[tuple[str, int, asyncio.Future[None]]] = []
        self._publisher: asyncio.Task[None] | None = None

    async def submit(self, run_id: str, workspace_id: int) -> None:
        """Returns once the run's message is with the broker (or could not be sent).

        Runs submitted while a batch is being published go out together in the next:
        one thread hop and one broker connection per batch, not per run.
        """
        done = asyncio.get_running_loop().create_future()
        self._pending.append((run_id, workspace_id, done))
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish_pending())
        await asyncio.shield(done)

    async def _publish_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            # kombu's publishing blocks on sockets: off the event loop.
            try:
                await asyncio.to_thread(self._publish, [(r, w) for r, w, _ in batch])
            except Exception:
                # The runs are committed `queued`: recovery publishes them again, so a
                # caller that retried would only create duplicate runs.
                log.exception(
                    "%d run(s) could not be published; recovery will submit them again",
                    len(batch),
                )
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _publish(self, batch: list[tuple[str, int]]) -> None:
        with self.app.producer_or_acquire() as producer:
            for run_id, workspace_id in batch:
                # task_id = run id: the broker and worker logs name the run they are about.
                self.app.send_task(
                    TASK_NAME,
                    args=[run_id],
                    task_id=run_id,
                    queue=queue_name(workspace_id),
                    producer=producer,
                )

    def cancel(self, run_id: str) -> None:
        """Nothing to do here: the worker holding the run reads `cancel_requested` when it
        renews the lease, and stops the run at its next step."""

    async def stop(self) -> None:
        if self._publisher is not None:
            await self._publisher  # what was accepted reaches the broker before we close
        await asyncio.to_thread(self.app.close)


# -- the worker side ----------------------------------------------------------------------


class _ProcessEngine:
    """This process's engine, on one event loop that lives as long as the process.

    The loop runs in a thread of its own, so it keeps renewing leases whatever the pool
    does with the task's thread; the task only waits for its run there.
    """

    def __init__(self, settings: Settings, uid_base: int, planner: Planner | None) -> None:
        self._planner = planner
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bastion-engine", daemon=True
        )
        self._thread.start()
        self._stack = AsyncExitStack()
        try:
            self.engine = self._call(self._open(settings, uid_base))
        except BaseException:
            self.close()
            raise
        log.info("engine ready in process %d (sandbox uids from %d)", os.getpid(), uid_base)

    async def _open(self, settings: Settings, uid_base: int) -> Engine:
        db = Database(settings.effective_database_url)
        self._stack.push_async_callback(db.dispose)
        audit = AuditLog(db, settings.keyring(), fail_closed=settings.audit_fail_closed)
        vault = Vault(db, audit.keyring, audit, VaultLimits.of(settings))
        execution = await self._stack.enter_async_context(
            open_engine(
                settings,
                db,
                vault,
                uid_base=uid_base,
                retries=None if self._planner is None else self._planner(audit),
            )
        )
        # Supervised: if lease renewal died with a database hiccup, the leases would lapse
        # and another worker would run the same runs a second time.
        leases = Supervisor([BackgroundService("run-leases", execution.engine.keep_leases)])
        await leases.start()
        self._stack.push_async_callback(leases.stop)
        return execution.engine

    def _call(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)

    def execute(self, run_id: str) -> Status | None:
        return self._call(self.engine.execute(run_id))

    def close(self) -> None:
        try:
            self._call(self._stack.aclose(), CLOSE_SECONDS)
        except Exception:
            log.warning("the engine did not close cleanly", exc_info=True)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CLOSE_SECONDS)
            if not self._thread.is_alive():
                self._loop.close()


class _WorkerProcess:
    """What a worker process knows: the settings `run_worker` was given, and its engine
    once the first task needed it."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.planner: Planner | None = None
        self._engine: _ProcessEngine | None = None
        self._lock = threading.Lock()

    def engine(self) -> _ProcessEngine:
        with self._lock:
            if self._engine is None:
                if self.settings is None:
                    raise RuntimeError("this process was not started by `bastion worker`")
                self._engine = _ProcessEngine(
                    self.settings, self._uid_base(self.settings), self.planner
                )
            return self._engine

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None

    @staticmethod
    def _uid_base(settings: Settings) -> int:
        # Pool processes are numbered 0..concurrency-1 (a replacement takes the number of
        # the process it replaces).
        index = getattr(current_process(), "index", 0) or 0
        stride = max(UID_STRIDE, settings.sandbox_concurrency)
        return settings.sandbox_uid_base + stride * int(index)


_process = _WorkerProcess()


def _execute_run(run_id: object) -> None:
    """The task body. It never raises: a task that failed would be redelivered or retried
    by Celery, while the run's state in the database is what decides what happens next."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        log.warning("ignored a task message with an invalid run id")
        return
    try:
        status = _process.engine().execute(run_id)
    except Exception:
        log.exception("run %s could not be executed; recovery will submit it again", run_id)
        return
    if status is None:
        log.info("run %s: claimed elsewhere or already finished; nothing to do", run_id)
    else:
        log.info("run %s %s", run_id, status.value)


def _close_process_engine(**_: Any) -> None:
    _process.close()


def _keep_bastion_logging(**_: Any) -> None:
    """Connected to `setup_logging`: while a receiver exists, Celery leaves logging alone
    (otherwise it resets the root level in every process and adds handlers of its own)."""


def _existing_workspaces(settings: Settings) -> list[int]:
    async def query() -> list[int]:
        db = Database(settings.effective_database_url)
        try:
            async with db.session() as session:
                return list(await session.scalars(select(Workspace.id).order_by(Workspace.id)))
        finally:
            await db.dispose()

    return asyncio.run(query())


def run_worker(
    settings: Settings,
    *,
    workspaces: list[int] | None,
    concurrency: int,
    planner: Planner | None = None,
) -> None:
    """Consume the queues of `workspaces` (None: every workspace existing now) until a
    signal stops the worker. Blocks. `planner` makes the retry planner of each process's
    engine (the triggers layer's, passed in from outside).

    SIGTERM to this process is a warm shutdown: the runs in progress finish first. The
    pool processes die at once on a SIGTERM of their own (a whole process group or
    cgroup signalled: systemd units want KillMode=mixed); their runs then resume in
    another worker once their leases lapse.
    """
    if settings.redis_url is None:
        raise InvalidInput("the Celery executor needs a broker: set BASTION_REDIS_URL")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInput(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
    if workspaces is None:
        # Read before the pool forks: children must not inherit a loop or connections.
        workspaces = _existing_workspaces(settings)
        if not workspaces:
            raise InvalidInput(
                "there are no workspaces yet, so no queue to consume: create one first "
                "(bastion workspaces add SLUG)"
            )
    if not workspaces:
        raise InvalidInput("no workspace to consume")
    _process.settings = settings
    _process.planner = planner
    # Sent in each pool process as it exits.
    signals.worker_process_shutdown.connect(_close_process_engine, weak=False)
    signals.setup_logging.connect(_keep_bastion_logging, weak=False)
    app = celery_app(settings.redis_url.get_secret_value())
    queues = [queue_name(workspace_id) for workspace_id in sorted(set(workspaces))]
    log.info("worker consuming %s with %d process(es)", ", ".join(queues), concurrency)
    worker = app.Worker(
        hostname=f"bastion-{os.getpid()}@{socket.gethostname()}",
        queues=queues,
        concurrency=concurrency,
        # Prefork: every process has its own interpreter, event loop and sandbox uids,
        # and one stuck run cannot starve the others of the GIL.
        pool_cls="prefork",
        loglevel=settings.log_level,
        # Mingle, gossip and event heartbeats go over broadcast channels; workers need
        # nothing from each other (the database coordinates them).
        without_mingle=True,
        without_gossip=True,
        without_heartbeat=True,
    )
    worker.start()
    if worker.exitcode:
        raise Unavailable(f"the worker stopped with exit code {worker.exitcode}")
