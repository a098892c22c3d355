"""/api/v1/runs: history, cancel, replay, and step events as a server-sent event stream."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import StreamingResponse

from bastion.accounts.rbac import Permission, Principal
from bastion.db.tables import Run, RunStep
from bastion.errors import Conflict, NotFound
from bastion.logs import request_id
from bastion.runs import history
from bastion.runs.records import FINISHED, Status, Trigger
from bastion.triggers.gate import Origin, RunRequest
from bastion.web import auditing
from bastion.web.api.principals import Requires, authorize_in
from bastion.web.middleware.client_ip import client_ip

router = APIRouter(tags=["runs"])
SignedIn = Annotated[Principal, Depends(Requires("signed-in"))]
InWorkspace = Annotated[Principal, Depends(Requires(Permission.READ))]
POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 3600.0  # a watcher reconnects with Last-Event-ID after this


def actor_of(principal: Principal) -> str:
    actor = f"user:{principal.username}"
    return actor if principal.token_id is None else f"{actor} (token {principal.token_id})"


def origin_of(request: Request, principal: Principal) -> Origin:
    """Runs a caller starts by hand: through the API with a token, else the console."""
    return Origin(
        Trigger.API if principal.token_id is not None else Trigger.MANUAL,
        actor_of(principal),
        client_ip=client_ip(request),
        request_id=request_id.get(),
    )


class RunOut(BaseModel):
    id: str
    workspace_id: int
    workflow_id: str
    version: int
    trigger: str
    actor: str
    status: str
    attempt: int
    parent_run_id: str | None
    input: Any
    output: Any
    error: str
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    trigger_id: str | None
    reason: str
    not_before: datetime | None
    failure: str

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls(
            id=run.id,
            workspace_id=run.workspace_id,
            workflow_id=run.workflow_id,
            version=run.version,
            trigger=run.trigger,
            actor=run.actor,
            status=run.status,
            attempt=run.attempt,
            parent_run_id=run.parent_run_id,
            input=json.loads(run.input),
            output=json.loads(run.output) if run.output is not None else None,
            error=run.error,
            queued_at=run.queued_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            cancel_requested=run.cancel_requested,
            trigger_id=run.trigger_id,
            reason=run.reason,
            not_before=run.not_before,
            failure=run.failure,
        )


class StepOut(BaseModel):
    seq: int
    node: str
    status: str
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    output: Any
    error: str

    @classmethod
    def of(cls, step: RunStep) -> StepOut:
        return cls(
            seq=step.seq,
            node=step.node,
            status=step.status,
            started_at=step.started_at,
            finished_at=step.finished_at,
            duration_ms=round(step.duration_ms, 3),
            output=json.loads(step.output),
            error=step.error,
        )


class RunDetail(RunOut):
    steps: list[StepOut]


class RunPage(BaseModel):
    runs: list[RunOut]
    next_before: str | None = Field(description="pass as `before` for the next page")


async def run_for(
    request: Request, principal: Principal, run_id: str, permission: Permission
) -> Run:
    run = await history.get_run(request.state.services.db, run_id)
    authorize_in(principal, run.workspace_id, permission, f"run {run_id[:40]!r}")
    return run


@router.get("/runs")
async def list_(
    workspace_id: int,
    principal: InWorkspace,
    request: Request,
    workflow_id: str | None = Query(default=None, max_length=32),
    status: Literal[tuple(Status)] | None = None,  # type: ignore[valid-type]
    trigger: Literal[tuple(Trigger)] | None = None,  # type: ignore[valid-type]
    before: str | None = Query(default=None, max_length=32),
    limit: int = Query(default=50, ge=1, le=500),
) -> RunPage:
    found = await history.list_runs(
        request.state.services.db,
        history.RunFilter(workspace_id, workflow_id, status, trigger, before, limit),
    )
    return RunPage(
        runs=[RunOut.of(run) for run in found],
        next_before=found[-1].id if len(found) == limit else None,
    )


@router.get("/runs/{run_id}")
async def show(run_id: str, principal: SignedIn, request: Request) -> RunDetail:
    run = await run_for(request, principal, run_id, Permission.READ)
    steps = await history.steps(request.state.services.db, run.id)
    return RunDetail(**RunOut.of(run).model_dump(), steps=[StepOut.of(s) for s in steps])


@router.post("/runs/{run_id}/cancel", status_code=202)
async def cancel(run_id: str, principal: SignedIn, request: Request) -> RunOut:
    """Stops the run (at its next step) and cancels the retries waiting to follow it."""
    run = await run_for(request, principal, run_id, Permission.DISPATCH_RUNS)
    cancelled, retries = await request.state.services.dispatcher.cancel(run.id)
    if cancelled is None:  # deleted with its workflow meanwhile
        raise NotFound(f"no run {run_id[:40]!r}")
    if run.status in FINISHED and not retries:
        raise Conflict(f"run {run_id} already ended ({run.status}) and has no pending retry")
    await auditing.record(
        request, "run.cancel", actor_of(principal), target=run.id, details={"retries": retries}
    )
    return RunOut.of(cancelled)


@router.post("/runs/{run_id}/replay", status_code=202)
async def replay(run_id: str, principal: SignedIn, request: Request) -> RunOut:
    """A new run of the same version with the same input."""
    run = await run_for(request, principal, run_id, Permission.DISPATCH_RUNS)
    services = request.state.services
    workflow = await services.workflows.get(run.workflow_id)
    origin = origin_of(request, principal)
    request_ = RunRequest(json.loads(run.input), run.version, f"replay of {run.id}")
    (replayed,) = await services.gate.start(workflow, [request_], origin)
    return RunOut.of(replayed)


@router.get("/runs/{run_id}/events", response_class=StreamingResponse)
async def events(run_id: str, principal: SignedIn, request: Request) -> StreamingResponse:
    """Step events as they are recorded (`step`), then the run's end (`end`).

    Reconnecting with `Last-Event-ID` (the last step's seq) continues after it.
    """
    run = await run_for(request, principal, run_id, Permission.READ)
    last = request.headers.get("last-event-id", "0")
    after = int(last) if last.isdigit() else 0
    return StreamingResponse(
        _stream(request, run.id, after),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


def _event(kind: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


async def _stream(request: Request, run_id: str, after: int) -> AsyncIterator[str]:
    services = request.state.services
    started = quiet_since = time.monotonic()
    while time.monotonic() - started < STREAM_SECONDS:
        # Status first: steps are committed before the run's end, so a finished run's
        # steps are all visible once its status is.
        run = await history.get_run(services.db, run_id)
        for step in await history.steps(services.db, run_id, after=after):
            after = step.seq
            quiet_since = time.monotonic()
            yield _event("step", StepOut.of(step).model_dump(mode="json"), step.seq)
        if run.status in FINISHED:
            yield _event("end", {"status": run.status, "error": run.error})
            return
        if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await services.signals.wait(run_id, POLL_SECONDS)
