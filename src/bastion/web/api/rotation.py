"""/api/v1/rotation: pools' status and history, control actions, and the status stream.

A pool belongs to the workspace its configuration names: that workspace's roles may read
it, its operators and owners control it; a pool naming no workspace is for
administrators only. A caller with no role there is told the pool does not exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse

from bastion.accounts.rbac import Permission, Principal
from bastion.audit.chain import Event
from bastion.db.tables import RotationHistory
from bastion.errors import NotFound, PermissionDenied
from bastion.rotation.controls import Action, Control
from bastion.rotation.errors import TransitionRefused
from bastion.rotation.pools import PoolConfig
from bastion.rotation.service import Rotation
from bastion.rotation.status import delta
from bastion.web import auditing
from bastion.web.api.principals import Requires, authorize_in
from bastion.web.api.runs import actor_of
from bastion.web.middleware.client_ip import client_ip

router = APIRouter(prefix="/rotation", tags=["rotation"])
security_log = logging.getLogger("bastion.security.rotation")
_signed_in = Requires("signed-in")
SignedIn = Annotated[Principal, Depends(_signed_in)]
TICK_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
RECHECK_SECONDS = 60.0  # a signed-out or revoked caller's stream ends within this
STREAM_SECONDS = 3600.0


class ActionRequest(BaseModel):
    action: Action
    force: bool = Field(default=False, description="rotate a paused pool anyway")


class ActionOut(BaseModel):
    pool: str
    action: Action
    state: str
    pending_action: str | None


class HistoryEntry(BaseModel):
    id: int
    trigger: str
    actor: str
    strategy: str
    from_replica: str | None
    to_replica: str | None
    outcome: str
    skipped: list[dict[str, str]]
    error: str
    started_at: datetime
    finished_at: datetime
    traffic_seconds: float | None = Field(description="decision -> new replica in service")
    switch_seconds: float | None = Field(
        description="make_before_break: new healthy -> old stopped; "
        "break_before_make: old out of service -> new in service (the gap)"
    )

    @classmethod
    def of(cls, row: RotationHistory) -> HistoryEntry:
        return cls(
            id=row.id,
            trigger=row.trigger,
            actor=row.actor,
            strategy=row.strategy,
            from_replica=row.from_replica,
            to_replica=row.to_replica,
            outcome=row.outcome,
            skipped=json.loads(row.skipped),
            error=row.error,
            started_at=row.started_at,
            finished_at=row.finished_at,
            traffic_seconds=row.traffic_seconds,
            switch_seconds=row.switch_seconds,
        )


class HistoryPage(BaseModel):
    entries: list[HistoryEntry]
    next_before: int | None = Field(description="pass as `before` for the next page")


def _rotation(request: Request) -> Rotation | None:
    rotation: Rotation | None = request.state.services.rotation
    return rotation


async def _may(
    rotation: Rotation, principal: Principal, pool: PoolConfig, perm: Permission
) -> bool:
    workspace_id = await rotation.workspace_id(pool)
    if workspace_id is None:
        return principal.is_admin
    return principal.can(perm, workspace_id)


async def _authorized(
    request: Request, principal: Principal, name: str, permission: Permission
) -> tuple[Rotation, PoolConfig]:
    rotation = _rotation(request)
    pool = rotation.pools.get(name) if rotation is not None else None
    if rotation is None or pool is None:
        raise NotFound(f"no pool {name[:64]!r}")
    workspace_id = await rotation.workspace_id(pool)
    if workspace_id is None:
        if not principal.is_admin:
            raise NotFound(f"no pool {name[:64]!r}")
    else:
        authorize_in(principal, workspace_id, permission, f"pool {name[:64]!r}")
    return rotation, pool


async def _visible(rotation: Rotation | None, principal: Principal) -> list[str]:
    if rotation is None:
        return []
    return [
        name
        for name, pool in rotation.pools.items()
        if await _may(rotation, principal, pool, Permission.READ)
    ]


@router.get("/pools")
async def list_pools(principal: SignedIn, request: Request) -> list[dict[str, Any]]:
    """The pools the caller may see, with their replicas' latest figures (series: the
    pool's own endpoint; history: /history)."""
    rotation = _rotation(request)
    names = await _visible(rotation, principal)
    if rotation is None or not names:
        return []
    snapshot = await rotation.status.snapshot()
    return [snapshot.pools[name] for name in names]


@router.get("/pools/{pool}")
async def show(pool: str, principal: SignedIn, request: Request) -> dict[str, Any]:
    """One pool: per replica its state, health, uptime, activations and CPU/memory/network
    (with a short series for sparklines); the pool's active replica, counters, schedule,
    pause flag and last errors."""
    rotation, config = await _authorized(request, principal, pool, Permission.READ)
    status = dict((await rotation.status.snapshot()).pools[config.name])
    now = time.time()
    replicas = {}
    for name, replica in status["replicas"].items():
        started = replica["started_at"]
        replicas[name] = {
            **replica,
            "uptime_seconds": round(now - datetime.fromisoformat(started).timestamp(), 1)
            if started
            else None,
            "stats_series": [s.public() for s in rotation.telemetry.series(name)],
        }
    haproxy = config.haproxy
    return {
        **status,
        "replicas": replicas,
        "health_timeout_seconds": config.health_timeout_seconds,
        "stop_timeout_seconds": config.stop_timeout_seconds,
        "haproxy": {"backend": haproxy.backend} if haproxy else None,
    }


@router.get("/pools/{pool}/history")
async def history(
    pool: str,
    principal: SignedIn,
    request: Request,
    before: int | None = Query(default=None, ge=1),
    limit: int = Query(default=50, ge=1, le=500),
) -> HistoryPage:
    """Rotations, newest first: who switched to whom, skipped candidates, switch times."""
    rotation, config = await _authorized(request, principal, pool, Permission.READ)
    rows = await rotation.store.history(config.name, before=before, limit=limit)
    return HistoryPage(
        entries=[HistoryEntry.of(row) for row in rows],
        next_before=rows[-1].id if len(rows) == limit else None,
    )


@router.post("/pools/{pool}/actions", status_code=202)
async def act(pool: str, body: ActionRequest, principal: SignedIn, request: Request) -> ActionOut:
    """pause | resume | rotate | kill. `kill` only while paused; `rotate` while paused only
    with `force`. Refused transitions are 409 with the reason. Every attempt, accepted or
    refused, is in the audit trail with the caller and their address."""
    actor = actor_of(principal)
    action = f"rotation.{body.action.value}"

    def accepted(after: Control) -> Event:
        return auditing.event(
            request,
            action,
            actor,
            target=f"pool:{pool}",
            details={
                "force": body.force,
                "state": after.state.value,
                "pending": after.pending.value if after.pending else None,
            },
        )

    try:
        rotation, config = await _authorized(request, principal, pool, Permission.CONTROL_ROTATION)
        row = await rotation.store.control(
            config.name, body.action, force=body.force, event=accepted
        )
    except (NotFound, PermissionDenied, TransitionRefused) as exc:
        # A refusal is recorded like an acceptance: probing and misuse leave a trace.
        security_log.warning(
            "%s on pool %r refused for %s from %s: %s",
            action,
            pool[:64],
            actor,
            client_ip(request),
            exc,
        )
        await auditing.record(
            request,
            action,
            actor,
            target=f"pool:{pool[:64]}",
            outcome="denied",
            reason=str(exc),
            details={"force": body.force},
        )
        raise
    rotation.controller.wake(config.name)
    return ActionOut(
        pool=config.name, action=body.action, state=row.state, pending_action=row.pending_action
    )


@router.get("/stream", response_class=StreamingResponse)
async def stream(principal: SignedIn, request: Request) -> StreamingResponse:
    """Server-sent events: `snapshot` (every visible pool) first, then once a second a
    `delta` with only what changed. History is not sent here: see /pools/{pool}/history."""
    return StreamingResponse(
        _events(request, principal),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _event(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _events(request: Request, principal: Principal) -> AsyncIterator[str]:
    rotation = _rotation(request)
    names = await _visible(rotation, principal)
    started = checked = quiet_since = time.monotonic()
    sent: dict[str, Any] | None = None
    # Open even with nothing to show, so a console does not reconnect in a loop.
    while time.monotonic() - started < STREAM_SECONDS:
        current: dict[str, Any] = {}
        if rotation is not None and names:
            snapshot = await rotation.status.snapshot()
            current = {name: snapshot.pools[name] for name in names}
        if sent is None:
            yield _event("snapshot", {"pools": current})
            quiet_since = time.monotonic()
        elif changes := delta(sent, current):
            yield _event("delta", {"pools": changes})
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        sent = current
        if time.monotonic() - checked > RECHECK_SECONDS:
            checked = time.monotonic()
            try:  # signed out, session expired, token revoked: the stream ends too
                await _signed_in(request)
            except HTTPException:
                return
        if await request.is_disconnected():
            return
        await asyncio.sleep(TICK_SECONDS)
