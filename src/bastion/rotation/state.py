"""Rotation state in the database, so it survives a restart: each pool's active replica,
control state, pending action, schedule, counters and last errors; per replica its
activations; the history of rotations. Audit records are written in the transaction of
the change they describe.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.chain import Event
from bastion.audit.log import AuditLog
from bastion.db import Database
from bastion.db.database import insert_new
from bastion.db.tables import RotationHistory, RotationPool, RotationReplica
from bastion.db.types import utcnow
from bastion.errors import NotFound
from bastion.rotation.controls import Action, Control, PoolState, decide
from bastion.rotation.pools import PoolConfig

ERRORS_KEPT = 10
ACTOR = "system:rotation"


@dataclass
class Outcome:
    """One rotation attempt, as the history keeps it."""

    pool: str
    trigger: str  # schedule | manual | recovery
    actor: str
    strategy: str
    from_replica: str | None
    started_at: datetime
    to_replica: str | None = None
    error: str = ""
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{replica, reason}]
    traffic_seconds: float | None = None
    switch_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.to_replica is not None and not self.error


def control_of(row: RotationPool) -> Control:
    pending = Action(row.pending_action) if row.pending_action else None
    return Control(PoolState(row.state), pending)


def errors_of(row: RotationPool) -> list[dict[str, object]]:
    loaded = json.loads(row.last_errors or "[]")
    return loaded if isinstance(loaded, list) else []


def _with_error(row: RotationPool, message: str, at: datetime) -> str:
    errors = errors_of(row)
    if errors and errors[-1].get("message") == message:  # a condition that persists
        count = errors[-1].get("count", 1)
        errors[-1] = {"at": at.isoformat(), "message": message, "count": int(str(count)) + 1}
    else:
        errors.append({"at": at.isoformat(), "message": message[:500], "count": 1})
    return json.dumps(errors[-ERRORS_KEPT:])


class RotationStore:
    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit

    async def ensure(self, pools: Sequence[PoolConfig]) -> None:
        """A row for every configured pool and replica; existing rows keep their state."""
        if not pools:
            return
        now = utcnow()
        async with self.db.transaction() as session:
            await session.execute(
                insert_new(session.sync_session, RotationPool, "name"),
                [
                    {"name": p.name, "state": "running", "rotation_count": 0, "pending_by": "",
                     "last_errors": "[]", "updated_at": now}
                    for p in pools
                ],
            )  # fmt: skip
            await session.execute(
                insert_new(session.sync_session, RotationReplica, "pool", "name"),
                [
                    {"pool": p.name, "name": r, "activations": 0, "last_error": ""}
                    for p in pools
                    for r in p.replicas
                ],
            )

    async def pools(self) -> list[RotationPool]:
        async with self.db.session() as session:
            return list(await session.scalars(select(RotationPool).order_by(RotationPool.name)))

    async def pool(self, name: str) -> RotationPool:
        async with self.db.session() as session:
            row = await session.get(RotationPool, name)
        if row is None:
            raise NotFound(f"no pool {name[:64]!r}")
        return row

    async def replicas(self, pool: str) -> dict[str, RotationReplica]:
        async with self.db.session() as session:
            query = select(RotationReplica).where(RotationReplica.pool == pool)
            return {row.name: row for row in await session.scalars(query)}

    async def all_replicas(self) -> dict[str, dict[str, RotationReplica]]:
        """Every pool's replica rows: pool -> name -> row (one query)."""
        found: dict[str, dict[str, RotationReplica]] = {}
        async with self.db.session() as session:
            for row in await session.scalars(select(RotationReplica)):
                found.setdefault(row.pool, {})[row.name] = row
        return found

    async def history(
        self, pool: str, *, before: int | None = None, limit: int = 50
    ) -> list[RotationHistory]:
        query = select(RotationHistory).where(RotationHistory.pool == pool)
        if before is not None:
            query = query.where(RotationHistory.id < before)
        async with self.db.session() as session:
            rows = await session.scalars(query.order_by(RotationHistory.id.desc()).limit(limit))
            return list(rows)

    async def claim(self, pool: str, owner: str, now: datetime, until: datetime) -> bool:
        """Take or renew the pool's lease: only its holder acts on the pool, so two servers
        never rotate one pool at once. True when held."""
        async with self.db.transaction() as session:
            result = await session.execute(
                update(RotationPool)
                .where(
                    RotationPool.name == pool,
                    or_(
                        RotationPool.lease_owner.is_(None),
                        RotationPool.lease_owner == owner,
                        RotationPool.lease_expires < now,
                    ),
                )
                .values(lease_owner=owner, lease_expires=until)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    async def release(self, pool: str, owner: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(RotationPool)
                .where(RotationPool.name == pool, RotationPool.lease_owner == owner)
                .values(lease_owner=None, lease_expires=None)
            )

    async def control(
        self, pool: str, action: Action, *, force: bool, event: Callable[[Control], Event]
    ) -> RotationPool:
        """Apply an operator's action; its audit record (`event` of the new control state)
        commits with it. TransitionRefused leaves everything as it was."""
        async with self.db.transaction() as session:
            row = await session.get(RotationPool, pool, with_for_update=True)
            if row is None:
                raise NotFound(f"no pool {pool[:64]!r}")
            before = control_of(row)
            after = decide(before, action, force=force)
            record = event(after)
            row.state = after.state.value
            if after.pending is not before.pending:
                row.pending_by = record.actor[:200] if after.pending else ""
            row.pending_action = after.pending.value if after.pending else None
            row.updated_at = utcnow()
            await self.audit.append(session, record)
            return row

    async def _row(self, session: AsyncSession, pool: str) -> RotationPool:
        row = await session.get(RotationPool, pool, with_for_update=True)
        if row is None:
            raise NotFound(f"no pool {pool[:64]!r}")
        return row

    async def schedule(self, pool: str, next_at: datetime | None) -> None:
        async with self.db.transaction() as session:
            (await self._row(session, pool)).next_rotation_at = next_at

    async def activate(self, pool: str, replica: str, at: datetime) -> None:
        """`replica` now takes the traffic: recorded at once, so a restart mid-rotation
        keeps the new replica and reconcile stops the old one."""
        async with self.db.transaction() as session:
            row = await self._row(session, pool)
            row.active_replica, row.activated_at, row.updated_at = replica, at, at
            record = await session.get(RotationReplica, (pool, replica))
            if record is not None:
                record.activations += 1
                record.last_activated_at = at

    async def finish(
        self, outcome: Outcome, *, finished_at: datetime, next_at: datetime | None
    ) -> None:
        """The attempt's history row, counters, errors and audit record, in one commit."""
        async with self.db.transaction() as session:
            row = await self._row(session, outcome.pool)
            if outcome.ok:
                row.rotation_count += 1
                row.last_rotation_at = finished_at
            else:
                row.last_errors = _with_error(row, outcome.error, finished_at)
            if outcome.trigger == "manual" and row.pending_action == Action.ROTATE.value:
                row.pending_action, row.pending_by = None, ""
            row.next_rotation_at = next_at
            row.updated_at = finished_at
            for skipped in outcome.skipped:
                record = await session.get(RotationReplica, (outcome.pool, skipped["replica"]))
                if record is not None:
                    record.last_error, record.last_error_at = skipped["reason"][:500], finished_at
            session.add(
                RotationHistory(
                    pool=outcome.pool,
                    trigger=outcome.trigger,
                    actor=outcome.actor[:200],
                    strategy=outcome.strategy,
                    from_replica=outcome.from_replica,
                    to_replica=outcome.to_replica,
                    outcome="ok" if outcome.ok else "failed",
                    skipped=json.dumps(outcome.skipped),
                    error=outcome.error[:500],
                    started_at=outcome.started_at,
                    finished_at=finished_at,
                    traffic_seconds=outcome.traffic_seconds,
                    switch_seconds=outcome.switch_seconds,
                )
            )
            details = {
                k: v for k, v in asdict(outcome).items() if k not in ("pool", "error", "actor")
            }
            await self.audit.append(
                session,
                Event(
                    "rotation.switch" if outcome.ok else "rotation.failed",
                    ACTOR,
                    target=f"pool:{outcome.pool}",
                    outcome="success" if outcome.ok else "failure",
                    reason=outcome.error,
                    details={**details, "requested_by": outcome.actor},
                ),
            )

    async def killed(self, pool: str, stopped: list[str], errors: list[str], at: datetime) -> None:
        async with self.db.transaction() as session:
            row = await self._row(session, pool)
            row.active_replica, row.activated_at = None, None
            if row.pending_action == Action.KILL.value:
                row.pending_action, row.pending_by = None, ""
            for error in errors:
                row.last_errors = _with_error(row, error, at)
            row.updated_at = at
            await self.audit.append(
                session,
                Event(
                    "rotation.killed",
                    ACTOR,
                    target=f"pool:{pool}",
                    outcome="failure" if errors else "success",
                    reason="; ".join(errors)[:500],
                    details={"stopped": stopped},
                ),
            )

    async def drift(self, pool: str, replica: str, what: str, at: datetime) -> None:
        """Reconcile corrected something that was not as the pool says: record it."""
        async with self.db.transaction() as session:
            (await self._row(session, pool)).updated_at = at
            await self.audit.append(
                session,
                Event(
                    "rotation.drift",
                    ACTOR,
                    target=f"pool:{pool}",
                    reason=what[:500],
                    details={"replica": replica},
                ),
            )

    async def error(self, pool: str, message: str, at: datetime) -> None:
        async with self.db.transaction() as session:
            row = await self._row(session, pool)
            row.last_errors = _with_error(row, message, at)
