"""The Celery executor end to end: a real Redis, real `bastion worker` processes.

The test process plays the server (it accepts runs through a Dispatcher publishing with a
CeleryExecutor, and runs its recovery where a test needs it); workers are started with
`python -m bastion worker`, exactly as an operator would, and killed like a crashed host.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from pydantic import SecretStr
from sqlalchemy import select

from bastion.audit.log import AuditLog
from bastion.config import Settings
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.db.tables import Run, RunStep, Workflow, Workspace
from bastion.execution.celery_executor import (
    TASK_NAME,
    CeleryExecutor,
    celery_app,
    queue_name,
)
from bastion.execution.dispatcher import Dispatcher
from bastion.execution.engine import Engine
from bastion.execution.factory import executor_of
from bastion.runs.ledger import Ledger
from bastion.runs.records import FINISHED, Status, Trigger
from bastion.triggers.gate import Gate, Origin, RunRequest
from bastion.workflows import graph as graphs
from bastion.workflows.store import Workflows
from tests.execution.test_engine import THREE

pytestmark = pytest.mark.services

OPS, OTHER = 1, 2
BASTION = [sys.executable, "-m", "bastion"]
DELAY_SECONDS = 3


def _chain(*nodes: dict[str, Any]) -> dict[str, Any]:
    edges = [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(nodes)]
    return {"nodes": list(nodes), "edges": edges}


SEED = {"id": "seed", "type": "set", "params": {"values": {"n": 1}}}
TAIL = {"id": "tail", "type": "transform", "params": {"expression": "steps.seed.n"}}
RESUMABLE = _chain(
    SEED, {"id": "wait", "type": "delay", "params": {"seconds": DELAY_SECONDS}}, TAIL
)
PAUSE = _chain({"id": "wait", "type": "delay", "params": {"seconds": DELAY_SECONDS}})
UNSAFE = _chain(SEED, {"id": "sub", "type": "sub_workflow", "params": {"workflow": "pause"}}, TAIL)


@dataclass
class Deployment:
    """One database and one Redis shared by the test (the server) and its workers."""

    root: Path
    env: dict[str, str]
    redis_url: str
    db: Database
    workflows: Workflows
    executor: CeleryExecutor
    dispatcher: Dispatcher
    audit: AuditLog
    workers: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start_worker(self, *workspaces: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
        output = self.root / f"worker-{len(self.workers)}.out"
        args = [*BASTION, "worker", "--concurrency", str(concurrency)]
        for slug in workspaces:
            args += ["--workspace", slug]
        with output.open("wb") as sink:
            # A session of its own: killing the group is a host dying, pool processes too.
            proc = subprocess.Popen(
                args,
                cwd=self.root,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append((proc, output))
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """The worker and its pool processes die at once, like their host."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the main process only (as `docker stop` does): a warm shutdown.
        Signalling the whole group would kill the pool processes mid-run (Celery's rule;
        systemd units want KillMode=mixed)."""
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    def worker_output(self) -> str:
        return "\n".join(
            f"--- worker {n} ---\n{out.read_text(errors='replace')}"
            for n, (_, out) in enumerate(self.workers)
        )

    def queue_length(self, workspace_id: int) -> int:
        with redis.Redis.from_url(self.redis_url) as client:
            return int(client.llen(queue_name(workspace_id)))

    def drop_queue(self, workspace_id: int) -> None:
        with redis.Redis.from_url(self.redis_url) as client:
            client.delete(queue_name(workspace_id))

    async def workflow(self, graph: dict[str, Any], *, name: str, workspace: int = OPS) -> Workflow:
        return await self.workflows.create(workspace, name, "", graphs.parse(graph), "user:olive")

    async def start(self, workflow: Workflow, data: Any = None) -> Run:
        [run] = await Gate(self.dispatcher, self.audit).start(
            workflow, [RunRequest(data or {})], Origin(Trigger.MANUAL, "user:olive")
        )
        return run

    async def run(self, run_id: str) -> Run:
        async with self.db.session() as session:
            run = await session.get(Run, run_id)
        assert run is not None
        return run

    async def until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        try:
            async with asyncio.timeout(30):
                while True:
                    if await check():
                        return
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pytest.fail(f"{what} did not happen\n{self.worker_output()}")

    async def finished(self, run_id: str) -> Run:
        async def done() -> bool:
            return (await self.run(run_id)).status in FINISHED

        await self.until(done, f"run {run_id} finishing")
        return await self.run(run_id)

    async def steps(self, run_id: str) -> list[tuple[str, str]]:
        async with self.db.session() as session:
            found = await session.scalars(
                select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.seq)
            )
            return [(step.node, step.status) for step in found]


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def deployment(
    tmp_path: Path, base_env: dict[str, str], redis_url: str, database_url: str
) -> AsyncIterator[Deployment]:
    migrations.upgrade(database_url)
    db = Database(database_url)
    async with db.transaction() as session:
        session.add_all(
            [
                Workspace(id=OPS, slug="ops", name="Ops"),
                Workspace(id=OTHER, slug="other", name="Other"),
            ]
        )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env = {
        **clean,
        **base_env,
        "BASTION_EXECUTOR": "celery",
        "BASTION_REDIS_URL": redis_url,
        "BASTION_DATABASE_URL": database_url,
        "BASTION_RUN_LEASE_SECONDS": "2",  # a killed worker's runs are orphans quickly
        "BASTION_SANDBOX_UID_BASE": "70000",
    }
    executor = CeleryExecutor(celery_app(redis_url))
    ledger = Ledger(db)
    deployment = Deployment(
        tmp_path,
        env,
        redis_url,
        db,
        Workflows(db),
        executor,
        Dispatcher(db, ledger, executor, max_input_bytes=64 * 1024),
        AuditLog(db, Keyring(os.urandom(32))),
    )
    try:
        yield deployment
    finally:
        for proc, _ in deployment.workers:
            deployment.kill(proc)
        await executor.stop()
        await db.dispose()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_workflow_runs_to_success_in_a_worker_process(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    run = await deployment.start(await deployment.workflow(THREE, name="three"), {"n": 42})
    done = await deployment.finished(run.id)
    assert done.status == Status.SUCCEEDED, done.error
    assert done.output == '{"result":true}'
    assert await deployment.steps(run.id) == [
        ("seed", "succeeded"),
        ("double", "succeeded"),
        ("big", "succeeded"),
    ]
    deployment.stop(worker)  # engines closed, no errors
    assert worker.returncode == 0, deployment.worker_output()
    assert "Traceback" not in deployment.worker_output()


async def test_a_run_delivered_twice_executes_once(deployment: Deployment) -> None:
    run = await deployment.start(await deployment.workflow(THREE, name="three"), {"n": 42})
    await deployment.executor.submit(run.id, OPS)
    assert deployment.queue_length(OPS) == 2
    # Both messages wait before the worker starts: its two processes race for the run.
    deployment.start_worker(concurrency=2)
    done = await deployment.finished(run.id)

    async def second_delivery_seen() -> bool:
        return "nothing to do" in deployment.worker_output()

    await deployment.until(second_delivery_seen, "the second delivery")
    assert done.status == Status.SUCCEEDED, done.error
    assert await deployment.steps(run.id) == [
        ("seed", "succeeded"),
        ("double", "succeeded"),
        ("big", "succeeded"),
    ]
    output = deployment.worker_output()
    assert output.count(f"run {run.id} succeeded") == 1, output
    assert output.count(f"run {run.id}: claimed elsewhere") == 1, output
    # Each process has sandbox uids of its own.
    assert "sandbox uids from 70000)" in output
    assert "sandbox uids from 70100)" in output


async def test_a_worker_executes_only_the_runs_of_its_workspaces(deployment: Deployment) -> None:
    elsewhere = await deployment.start(
        await deployment.workflow(THREE, name="three", workspace=OTHER), {"n": 1}
    )
    mine = await deployment.start(await deployment.workflow(THREE, name="three"), {"n": 1})
    deployment.start_worker("ops")
    assert (await deployment.finished(mine.id)).status == Status.SUCCEEDED
    await asyncio.sleep(1)
    assert (await deployment.run(elsewhere.id)).status == Status.QUEUED
    assert deployment.queue_length(OTHER) == 1  # waiting on its own queue, untouched
    assert await deployment.steps(elsewhere.id) == []


async def test_a_pickled_message_is_refused_by_the_worker(deployment: Deployment) -> None:
    # Whoever can write to Redis must not get code execution in workers through pickle.
    run = await deployment.start(await deployment.workflow(THREE, name="three"), {"n": 1})
    deployment.drop_queue(OPS)  # only the pickled message below remains
    await asyncio.to_thread(
        deployment.executor.app.send_task,
        TASK_NAME,
        args=[run.id],
        queue=queue_name(OPS),
        serializer="pickle",
    )
    deployment.start_worker()

    async def refused() -> bool:
        return "ContentDisallowed" in deployment.worker_output()

    await deployment.until(refused, "the pickled message being refused")
    await asyncio.sleep(0.5)
    assert (await deployment.run(run.id)).status == Status.QUEUED
    assert await deployment.steps(run.id) == []
    # The same run, published as JSON (what recovery does with a queued run), executes.
    await deployment.executor.submit(run.id, OPS)
    assert (await deployment.finished(run.id)).status == Status.SUCCEEDED


async def test_runs_of_a_killed_worker_are_finished_by_a_restarted_one(
    deployment: Deployment,
) -> None:
    await deployment.workflow(PAUSE, name="pause")
    resumable = await deployment.start(await deployment.workflow(RESUMABLE, name="resumable"))
    unsafe = await deployment.start(await deployment.workflow(UNSAFE, name="unsafe"))
    first = deployment.start_worker(concurrency=2)

    async def both_delayed() -> bool:
        seeded = [await deployment.steps(run.id) for run in (resumable, unsafe)]
        return seeded == [[("seed", "succeeded")]] * 2

    # Both runs are inside their delay: the seed step is recorded, the next is not.
    await deployment.until(both_delayed, "both runs reaching their delay")
    await asyncio.sleep(0.5)
    deployment.kill(first)
    assert (await deployment.run(resumable.id)).status == Status.RUNNING

    # The server's recovery resubmits runs whose lease lapsed; a new worker takes them.
    recovery = asyncio.create_task(deployment.dispatcher.recover())
    try:
        deployment.start_worker(concurrency=2)
        resumed = await deployment.finished(resumable.id)
        failed = await deployment.finished(unsafe.id)
    finally:
        recovery.cancel()
    assert resumed.status == Status.SUCCEEDED, resumed.error
    # Resumed from the checkpoint: the seed step ran once, the delay ran again.
    assert await deployment.steps(resumable.id) == [
        ("seed", "succeeded"),
        ("wait", "succeeded"),
        ("tail", "succeeded"),
    ]
    assert failed.status == Status.FAILED
    assert failed.error == (
        "interrupted during node 'sub'; not resumed, because running it again may repeat "
        "its side effects"
    )
    assert await deployment.steps(unsafe.id) == [("seed", "succeeded")]


def test_servers_configured_for_celery_publish_runs_instead_of_executing_them() -> None:
    settings = Settings(executor="celery", redis_url=SecretStr("redis://127.0.0.1:6379/0"))
    executor = executor_of(settings, cast(Engine, None))  # the engine stays in the workers
    assert isinstance(executor, CeleryExecutor)
    assert executor.app.conf.accept_content == ["json"]
    executor.app.close()


def test_a_tls_broker_has_its_certificate_verified() -> None:
    app = celery_app("rediss://redis.example:6380/0")
    with app.connection_for_write() as connection:
        assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    app.close()


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"BASTION_EXECUTOR": "inline"}, [], "the worker needs BASTION_EXECUTOR=celery"),
        ({}, ["--workspace", "ghost"], "no workspace 'ghost'"),
    ],
)
def test_the_worker_refuses_to_start_with_a_clear_error(
    deployment: Deployment, env: dict[str, str], args: list[str], message: str
) -> None:
    result = subprocess.run(
        [*BASTION, "worker", *args],
        cwd=deployment.root,
        env={**deployment.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr
