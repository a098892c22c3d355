"""The engine: executes one run, whichever executor (inline or Celery) delivered it.

A run is claimed under a lease, its version compiled to LangGraph (cached: versions never
change), and driven with a checkpointer that persists the state after every step. A run
found running under a lapsed lease resumes from its last checkpoint, unless the step it
was in may have had side effects, in which case it fails and the retry policy decides.

Every node goes through `_run_node`: cancellation is checked at the step boundary,
credentials the node names are fetched through the vault with the run's access context,
templates are rendered, the output is scrubbed of those credentials before it enters the
state, and a step event is recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Protocol

import httpx
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphRecursionError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from bastion.db.types import utcnow
from bastion.errors import InvalidInput, NotFound
from bastion.execution import checkpoints
from bastion.execution.scrub import scrub, scrub_text
from bastion.runs import records
from bastion.runs.ledger import Ledger
from bastion.runs.records import Status
from bastion.runs.signals import RunSignals
from bastion.vault.credentials import Vault
from bastion.vault.errors import CredentialBlocked, OutOfScope
from bastion.vault.policy import AccessContext
from bastion.vault.secret import Secret
from bastion.workflows import graph as graphs
from bastion.workflows import templates
from bastion.workflows.compiler import Compiled
from bastion.workflows.egress import EgressPolicy
from bastion.workflows.errors import Failure, InvalidGraph, NodeFailed
from bastion.workflows.graph import Node
from bastion.workflows.nodes.base import CodeRunner, NodeContext, Runtime
from bastion.workflows.nodes.catalog import NODE_TYPES
from bastion.workflows.store import Workflows

log = logging.getLogger("bastion.execution")
COMPILED_CACHE = 256
MAX_DEPTH = 4  # sub-workflows within sub-workflows


@dataclass(frozen=True)
class EngineLimits:
    lease: timedelta = timedelta(seconds=30)
    max_output_bytes: int = 1024 * 1024
    event_output_bytes: int = 4096
    max_steps: int = 1000
    max_delay_seconds: float = 3600.0


class RunCancelled(Exception):
    pass


class StepFailed(Exception):
    """A node failed; the message is safe to store (names node and cause, no secrets)."""

    def __init__(
        self, message: str, *, blocked: bool = False, failure: Failure = Failure.NODE_ERROR
    ) -> None:
        super().__init__(message)
        self.blocked = blocked
        self.failure = failure


@dataclass(frozen=True)
class Outcome:
    status: Status
    output: str | None = None
    error: str = ""
    failure: str = ""  # a Failure, for a failed run


class RetryPlanner(Protocol):
    """Decides, in the transaction that records a failure, whether a retry follows."""

    def plan(self, session: Session, run_id: str, failure: str) -> None: ...


@dataclass
class _Handle:
    cancelled: bool = False


@dataclass
class RunContext:
    """What LangGraph carries to every node of one run (never persisted)."""

    run_id: str
    workspace_id: int
    workflow_id: str
    handle: _Handle
    depth: int = 0
    record: bool = True  # sub-workflow steps are part of their node's step
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class Engine:
    def __init__(
        self,
        *,
        ledger: Ledger,
        workflows: Workflows,
        vault: Vault,
        checkpointer: BaseCheckpointSaver[Any],
        egress: EgressPolicy,
        http: httpx.AsyncClient,
        code: CodeRunner,
        owner: str,
        limits: EngineLimits = EngineLimits(),
        signals: RunSignals | None = None,
        retries: RetryPlanner | None = None,
    ) -> None:
        self.ledger = ledger
        self.workflows = workflows
        self.vault = vault
        self.checkpointer = checkpointer
        self.owner = owner
        self.limits = limits
        self.signals = signals or RunSignals()
        self.retries = retries
        self.runtime = Runtime(egress, http, code, self, limits.max_delay_seconds)
        self._compiled: OrderedDict[tuple[str, int, bool], asyncio.Future[Compiled[RunContext]]] = (
            OrderedDict()
        )
        self._active: dict[str, _Handle] = {}
        self._finished: list[str] = []

    # -- runs ---------------------------------------------------------------------------

    async def execute(self, run_id: str) -> Status | None:
        """Claim and run `run_id`; its final status, or None when another executor has it."""
        claim = await self.ledger.write(
            lambda s: records.claim(s, run_id, self.owner, self.limits.lease)
        )
        if claim is None:
            return None
        handle = self._active[run_id] = _Handle()
        try:
            outcome = await self._drive(claim, handle)
            finished = await self.ledger.write(
                partial(self._finish, run_id=run_id, outcome=outcome)
            )
            if not finished:
                log.warning("run %s: lease lost before it finished; result dropped", run_id)
            self._finished.append(run_id)
            return outcome.status
        finally:
            del self._active[run_id]
            self.signals.notify(run_id)

    def _finish(self, session: Session, run_id: str, outcome: Outcome) -> bool:
        """The run's end and, when it failed, its retry: one transaction, so a crash
        between them cannot lose the retry."""
        finished = records.finish(
            session,
            run_id,
            self.owner,
            outcome.status,
            output=outcome.output,
            error=outcome.error,
            failure=outcome.failure,
        )
        if finished and outcome.status == Status.FAILED and self.retries is not None:
            self.retries.plan(session, run_id, outcome.failure)
        return finished

    def cancel(self, run_id: str) -> None:
        """Stop a run this engine holds at its next step boundary."""
        handle = self._active.get(run_id)
        if handle is not None:
            handle.cancelled = True

    async def keep_leases(self) -> None:
        """Renew the leases of the runs in progress, learn of cancellations, and drop the
        checkpoints of finished runs (forever)."""
        while True:
            await asyncio.sleep(self.limits.lease.total_seconds() / 3)
            await self._forget_finished()
            held = list(self._active)
            if not held:
                continue
            cancelled = await self.ledger.write(
                partial(records.renew, owner=self.owner, run_ids=held, lease=self.limits.lease)
            )
            for run_id in cancelled:
                self.cancel(run_id)

    async def _drive(self, claim: records.Claim, handle: _Handle) -> Outcome:
        try:
            compiled = await self._compile(claim.workflow_id, claim.version, checkpointed=True)
        except (NotFound, InvalidGraph) as exc:
            return _failed(f"cannot load version {claim.version}: {exc}", Failure.NODE_ERROR)
        context = RunContext(
            claim.run_id,
            claim.workspace_id,
            claim.workflow_id,
            handle,
            seq=itertools.count(claim.next_seq),
        )
        config: RunnableConfig = {
            "configurable": {"thread_id": claim.run_id},
            "recursion_limit": self.limits.max_steps,
        }
        start: dict[str, Any] | None = {"input": json.loads(claim.input), "steps": {}, "last": ""}
        if claim.resuming:
            snapshot = await compiled.langgraph.aget_state(config)
            if snapshot.values:
                unsafe = [name for name in snapshot.next if not _resumable(compiled, name)]
                if unsafe:
                    return _failed(
                        f"interrupted during node {unsafe[0]!r}; not resumed, because running "
                        "it again may repeat its side effects",
                        Failure.INTERRUPTED,
                    )
                start = None  # LangGraph continues from the checkpoint
                log.info(
                    "run %s resumes at %s", claim.run_id, ", ".join(snapshot.next) or "its end"
                )
        try:
            final = await compiled.langgraph.ainvoke(
                start, config, context=context, durability="sync"
            )
            output = records.to_json(
                compiled.result(final), limit=self.limits.max_output_bytes, what="run output"
            )
        except RunCancelled:
            return Outcome(Status.CANCELLED, error="cancelled by request")
        except StepFailed as exc:
            if exc.blocked:
                return Outcome(Status.BLOCKED, error=str(exc))
            return _failed(str(exc), exc.failure)
        except GraphRecursionError:
            return _failed(f"run exceeded {self.limits.max_steps} steps", Failure.NODE_ERROR)
        except InvalidInput as exc:  # the run output
            return _failed(str(exc), Failure.NODE_ERROR)
        except NodeFailed as exc:  # a branch expression
            return _failed(str(exc), exc.failure)
        except Exception as exc:  # a bug must fail the run, never the executor
            log.exception("run %s: internal error", claim.run_id)
            return _failed(f"internal error ({type(exc).__name__})", Failure.INTERNAL)
        return Outcome(Status.SUCCEEDED, output)

    async def _forget_finished(self) -> None:
        """Checkpoints of finished runs go in batches, off the runs' own path."""
        finished, self._finished = self._finished, []
        if finished:
            try:
                await checkpoints.forget(self.checkpointer, finished)
            except Exception:  # best effort: a leftover checkpoint is harmless
                log.warning(
                    "checkpoints of %d finished runs not deleted", len(finished), exc_info=True
                )

    async def _compile(
        self, workflow_id: str, version: int, *, checkpointed: bool
    ) -> Compiled[RunContext]:
        """The compiled graph of a version, loaded once however many runs ask at once."""
        key = (workflow_id, version, checkpointed)
        compiling = self._compiled.get(key)
        if compiling is None:
            compiling = asyncio.ensure_future(self._load(workflow_id, version, checkpointed))
            self._compiled[key] = compiling
            if len(self._compiled) > COMPILED_CACHE:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        try:
            return await asyncio.shield(compiling)
        except BaseException:
            if compiling.done():  # a failed load is not cached: the next run tries again
                self._compiled.pop(key, None)
            raise

    async def _load(
        self, workflow_id: str, version: int, checkpointed: bool
    ) -> Compiled[RunContext]:
        stored = await self.workflows.version(workflow_id, version)
        return Compiled(
            graphs.parse(stored.graph), self._run_node, self.checkpointer if checkpointed else None
        )

    # -- nodes --------------------------------------------------------------------------

    async def _run_node(self, node: Node, state: Mapping[str, Any], context: RunContext) -> Any:
        if context.handle.cancelled:
            raise RunCancelled
        started, clock = utcnow(), time.perf_counter()
        secrets: list[str] = []
        try:
            credentials = await self._credentials(node, context)
            secrets = [
                value.reveal() for fields in credentials.values() for value in fields.values()
            ]
            output = await self._call(node, state, context, credentials)
            output = scrub(output, secrets)
            records.to_json(
                output, limit=self.limits.max_output_bytes, what=f"output of {node.id!r}"
            )
        except (NodeFailed, InvalidInput) as exc:
            message = f"node {node.id!r} ({node.type}): {scrub_text(str(exc), secrets)}"
            self._record(context, node, started, clock, Status.FAILED, None, message)
            failure = exc.failure if isinstance(exc, NodeFailed) else Failure.NODE_ERROR
            raise StepFailed(message, failure=failure) from None
        except CredentialBlocked as exc:
            message = f"node {node.id!r} ({node.type}): {exc}"
            self._record(context, node, started, clock, Status.BLOCKED, None, message)
            raise StepFailed(message, blocked=True) from None
        self._record(context, node, started, clock, Status.SUCCEEDED, output, "")
        return output

    async def _call(
        self,
        node: Node,
        state: Mapping[str, Any],
        context: RunContext,
        credentials: Mapping[str, Mapping[str, Secret]],
    ) -> Any:
        kind = NODE_TYPES[node.type]
        lookup = templates.state_lookup(state, credentials)
        rendered = {
            name: value if name in kind.literal else templates.render(value, lookup)
            for name, value in node.params.items()
        }
        try:
            params = kind.params.model_validate(rendered)
        except ValidationError as exc:
            # Location and rule only: the rendered value may hold a credential.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
            )
            raise NodeFailed(f"parameters after templating are invalid: {problems}") from None
        node_context = NodeContext(
            context.run_id,
            context.workspace_id,
            context.workflow_id,
            node.id,
            state,
            self.runtime,
            context.depth,
        )
        return await kind.run(params, node_context)

    async def _credentials(self, node: Node, context: RunContext) -> dict[str, dict[str, Secret]]:
        names = templates.credential_names(node.params)
        if not names:
            return {}
        access = AccessContext(
            f"run:{context.run_id}", context.workspace_id, workflow_id=context.workflow_id
        )
        fetched: dict[str, dict[str, Secret]] = {}
        for name in sorted(names):
            try:
                credential_id = await self.vault.id_named(context.workspace_id, name)
                fetched[name] = await self.vault.resolve(access, credential_id)
            except NotFound:
                raise NodeFailed(f"credential {name!r} does not exist in this workspace") from None
            except OutOfScope as exc:
                raise NodeFailed(f"credential {name!r} may not be used here: {exc}") from None
        return fetched

    def _record(
        self,
        context: RunContext,
        node: Node,
        started: Any,
        clock: float,
        status: Status,
        output: Any,
        error: str,
    ) -> None:
        if not context.record:
            return
        step = {
            "run_id": context.run_id,
            "seq": next(context.seq),
            "node": node.id,
            "status": status,
            "started_at": started,
            "finished_at": utcnow(),
            "duration_ms": (time.perf_counter() - clock) * 1000,
            "output": records.truncated_json(output, self.limits.event_output_bytes),
            "error": records.clip(error),
        }
        self.ledger.post(lambda s: records.add_step(s, step))
        self.signals.notify(context.run_id)

    # -- sub-workflows (the SubWorkflows protocol of the node runtime) -------------------

    async def run(self, context: NodeContext, workflow: str, data: Any) -> Any:
        if context.depth >= MAX_DEPTH:
            raise NodeFailed(f"sub-workflows nest deeper than {MAX_DEPTH}")
        handle = self._active.get(context.run_id, _Handle())
        try:
            # Same workspace only: a name is looked up there, never elsewhere.
            child = await self.workflows.named(context.workspace_id, workflow)
            compiled = await self._compile(child.id, child.current_version, checkpointed=False)
        except (NotFound, InvalidGraph) as exc:
            raise NodeFailed(f"sub-workflow {workflow!r}: {exc}") from None
        child_context = RunContext(
            context.run_id, context.workspace_id, child.id, handle, context.depth + 1, record=False
        )
        try:
            final = await compiled.langgraph.ainvoke(
                {"input": data, "steps": {}, "last": ""},
                {"recursion_limit": self.limits.max_steps},
                context=child_context,
            )
        except StepFailed as exc:
            raise NodeFailed(f"sub-workflow {workflow!r}: {exc}", exc.failure) from None
        except GraphRecursionError:
            raise NodeFailed(
                f"sub-workflow {workflow!r} exceeded {self.limits.max_steps} steps"
            ) from None
        return compiled.result(final)


def _failed(error: str, failure: Failure) -> Outcome:
    return Outcome(Status.FAILED, error=error, failure=failure)


def _resumable(compiled: Compiled[RunContext], node_id: str) -> bool:
    node = compiled.graph.node(node_id)
    kind = NODE_TYPES[node.type]
    try:
        return kind.resumable(kind.params.model_validate(node.params))
    except ValidationError:  # templated parameters: cannot tell, so assume not
        return False
