"""The scheduler: fires cron occurrences on time and queues retries when theirs comes.

It runs in every `bastion serve`. Each occurrence fires exactly once however many
servers run it: due schedules are claimed in one write transaction (PostgreSQL: rows
locked with SKIP LOCKED, so a second server passes them by; SQLite: the transaction
holds the database's single write lock), which also advances `next_due_at`, records
the occurrence (unique per schedule and due time) and stores its run. A crash before
the commit leaves the schedule as it was; after it, the run is durable.

An occurrence is on time when the scheduler reaches it within GRACE of its fire time.
Older ones were missed (no server was running, or all were stalled) and the
schedule's catch-up policy decides: skip_missed records them as skipped, run_once
fires the newest of them, run_all fires those within the catch-up window. The overlap
policy then looks at the schedule's runs from before this pass: skip (any still
active), queue_one (one may wait while another runs), allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.audit.chain import Event
from bastion.db.database import insert_new
from bastion.db.tables import CronOccurrence, Run, Trigger, Workflow
from bastion.db.types import utcnow
from bastion.errors import InvalidInput
from bastion.runs.records import ACTIVE, Status
from bastion.runs.records import Trigger as TriggerKind
from bastion.triggers import cron
from bastion.triggers.gate import Gate, Origin, RunRequest
from bastion.triggers.store import CronSettings, settings_of

log = logging.getLogger("bastion.scheduler")
GRACE = timedelta(seconds=5)
POLL_SECONDS = 1.0  # how soon a schedule another server changed is noticed
BATCH = 1000  # schedules claimed per transaction
MAX_CATCH_UP = 100  # runs one catch-up may start, and skipped occurrences listed one by one
_EPSILON = timedelta(microseconds=1)


@dataclass
class _Plan:
    """What one pass decided for one schedule."""

    fire: list[datetime]
    skip: list[tuple[datetime, str]]
    next_due: datetime | None


class Scheduler:
    def __init__(self, gate: Gate, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.gate = gate
        self.ledger = gate.dispatcher.ledger
        self.clock = clock
        self._changed = asyncio.Event()

    def wake(self) -> None:
        """A schedule changed in this process: look again now, not at the next poll."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self.tick(self.clock())
            upcoming = await self._next_time()
            delay = POLL_SECONDS
            if upcoming is not None:
                delay = min(delay, max(0.0, (upcoming - self.clock()).total_seconds()))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), delay)

    async def tick(self, now: datetime) -> int:
        """Fire what is due at `now` and queue due retries; how many runs started."""
        queued = await self.gate.dispatcher.queue_due(now)
        runs = await self.ledger.write(lambda s: self._fire_due(s, now))
        await self.gate.dispatcher.submit(runs)
        return queued + len(runs)

    async def _next_time(self) -> datetime | None:
        async with self.ledger.db.session() as session:
            cron_next = await session.scalar(
                select(func.min(Trigger.next_fire_at)).where(
                    Trigger.kind == "cron", Trigger.enabled.is_(True)
                )
            )
            retry_next = await session.scalar(
                select(func.min(Run.not_before)).where(Run.status == Status.SCHEDULED)
            )
        times = [t for t in (cron_next, retry_next) if t is not None]
        return min(times) if times else None

    # -- one pass, inside one write transaction -----------------------------------------

    def _fire_due(self, session: Session, now: datetime) -> list[Run]:
        claim = (
            select(Trigger)
            .where(Trigger.kind == "cron", Trigger.enabled.is_(True), Trigger.next_fire_at <= now)
            .order_by(Trigger.next_fire_at)
            .limit(BATCH)
        )
        if session.get_bind().dialect.name == "postgresql":
            claim = claim.with_for_update(skip_locked=True)
        due = session.scalars(claim).all()
        if not due:
            return []
        ids = [t.id for t in due]
        active: dict[str, dict[str, int]] = defaultdict(dict)
        for trigger_id, status, count in session.execute(
            select(Run.trigger_id, Run.status, func.count())
            .where(Run.trigger_id.in_(ids), Run.status.in_(list(ACTIVE)))
            .group_by(Run.trigger_id, Run.status)
        ):
            active[str(trigger_id)][status] = count
        workflows = {
            w.id: w
            for w in session.scalars(
                select(Workflow).where(Workflow.id.in_({t.workflow_id for t in due}))
            )
        }
        planned: list[tuple[Run, Origin]] = []
        occurrences: list[dict[str, Any]] = []
        for trigger in due:
            settings = settings_of(trigger)
            assert isinstance(settings, CronSettings)
            plan = _plan(trigger, settings, now)
            fire, skip = plan.fire, list(plan.skip)
            if fire:
                reason = _overlap(settings.overlap, active.get(trigger.id, {}))
                if reason is None:
                    workflow = workflows[trigger.workflow_id]
                    version = trigger.version or workflow.current_version
                    unhealthy = self.gate.unhealthy_blocking(
                        session, trigger.workspace_id, trigger.workflow_id, version
                    )
                    if unhealthy:
                        reason = "unhealthy credentials: " + ", ".join(unhealthy)
                        self._alert(session, trigger, reason, fire)
                if reason is not None:
                    skip += [(d, reason) for d in fire]
                    fire = []
            for due_at in fire:
                built = self._build(trigger, workflows[trigger.workflow_id], settings, due_at)
                if isinstance(built, str):
                    skip.append((due_at, built))
                    continue
                planned.append(built)
                occurrences.append(_occurrence(trigger.id, due_at, now, "fired", "", built[0].id))
            occurrences += [_occurrence(trigger.id, d, now, "skipped", r, None) for d, r in skip]
            trigger.next_due_at = plan.next_due
            trigger.next_fire_at = (
                None
                if plan.next_due is None
                else plan.next_due + cron.jitter(trigger.id, plan.next_due, settings.jitter_seconds)
            )
        recorded = _record(session, occurrences)
        # An occurrence recorded before (by another server) is never started twice.
        planned = [(run, origin) for run, origin in planned if run.id in recorded]
        self.gate.store(session, planned, checked=True)
        started = [run for run, _ in planned]
        if skipped := sum(1 for o in occurrences if o["status"] == "skipped"):
            log.info(
                "scheduler: %d run(s) started, %d occurrence(s) skipped", len(started), skipped
            )
        return started

    def _build(
        self, trigger: Trigger, workflow: Workflow, settings: CronSettings, due_at: datetime
    ) -> tuple[Run, Origin] | str:
        """The run of one occurrence, or why it cannot start."""
        origin = Origin(TriggerKind.CRON, f"cron:{trigger.id}", trigger.id)
        data = {"schedule": trigger.name, "due_at": due_at.isoformat(), "data": settings.input}
        try:
            return self.gate.build(workflow, RunRequest(data, trigger.version), origin), origin
        except InvalidInput as exc:
            return f"not started: {exc}"

    def _alert(self, session: Session, trigger: Trigger, reason: str, due: list[datetime]) -> None:
        log.warning("schedule %s (%s) skipped: %s", trigger.id, trigger.name, reason)
        self.gate.audit.append_blocking(
            session,
            Event(
                action="cron.blocked",
                actor=f"cron:{trigger.id}",
                target=trigger.workflow_id,
                outcome="denied",
                reason=reason,
                details={"workspace_id": trigger.workspace_id, "due_at": due[0].isoformat()},
            ),
        )


def _plan(trigger: Trigger, settings: CronSettings, now: datetime) -> _Plan:
    schedule = settings.schedule()
    first = trigger.next_due_at
    assert first is not None  # claimed schedules have one

    def fires_at(due: datetime) -> datetime:
        return due + cron.jitter(trigger.id, due, schedule.jitter_seconds)

    if now - fires_at(first) <= GRACE:
        # On time (the usual case): forward from the stored occurrence, the one walk
        # that is exact across DST changes.
        fire: list[datetime] = []
        due: datetime | None = first
        while due is not None and fires_at(due) <= now and len(fire) < MAX_CATCH_UP:
            fire.append(due)
            due = cron.next_due(schedule, due)
        return _Plan(fire, [], due)
    # Missed: look back from now, never walking the whole downtime.
    window = GRACE
    if settings.catch_up == "run_all":
        window = max(GRACE, timedelta(seconds=settings.catch_up_window_seconds))
    # Back by the jitter too: an occurrence whose delayed fire time has not come is
    # waiting, not missed, and must be seen to be left for its time.
    horizon = max(first - _EPSILON, now - window - timedelta(seconds=schedule.jitter_seconds))
    if settings.catch_up == "run_once":
        horizon = first - _EPSILON
    recent = cron.newest(schedule, after=horizon, until=now, limit=MAX_CATCH_UP)  # newest first
    waiting = [d for d in recent if fires_at(d) > now]  # jitter: not yet
    reached = [d for d in recent if fires_at(d) <= now]
    on_time = [d for d in reached if now - fires_at(d) <= GRACE]
    missed = [d for d in reached if now - fires_at(d) > GRACE]
    fire, skip = list(on_time), []
    if settings.catch_up == "run_all":
        fire += [d for d in missed if now - fires_at(d) <= window]
        skip += [
            (d, "missed: outside the catch-up window (run_all)")
            for d in missed
            if now - fires_at(d) > window
        ]
    elif settings.catch_up == "run_once" and missed:
        fire.append(missed[0])
        skip += [(d, "missed; coalesced into one catch-up run (run_once)") for d in missed[1:]]
    else:
        skip += [(d, "missed: no scheduler reached it in time (skip_missed)") for d in missed]
    oldest_seen = min(recent) if recent else now + _EPSILON
    older, more = cron.due_between(schedule, first - _EPSILON, oldest_seen - _EPSILON, 1)
    if older:
        count = len(older) + more
        skip.append(
            (
                older[0],
                f"missed: {count} occurrence(s) from this one on, older than what "
                f"{settings.catch_up} looks back to",
            )
        )
    next_due = min(waiting) if waiting else cron.next_due(schedule, now)
    return _Plan(sorted(fire), skip, next_due)


def _record(session: Session, occurrences: list[dict[str, Any]]) -> set[str | None]:
    """Store the occurrences not stored before; the run ids of the fired ones stored now.

    The unique (schedule, due time) is the last guard of exactly-once: an occurrence
    some server already recorded is neither recorded again nor started again.
    """
    if not occurrences:
        return set()
    inserted = session.execute(
        insert_new(session, CronOccurrence, "trigger_id", "due_at").returning(
            CronOccurrence.run_id
        ),
        occurrences,
    )
    return {run_id for (run_id,) in inserted}


def _overlap(policy: str, active: dict[str, int]) -> str | None:
    waiting = active.get(Status.QUEUED, 0) + active.get(Status.SCHEDULED, 0)
    running = active.get(Status.RUNNING, 0)
    if policy == "skip" and waiting + running:
        return "the previous run is still active (overlap: skip)"
    if policy == "queue_one" and waiting:
        return "a run is already waiting (overlap: queue_one)"
    return None


def _occurrence(
    trigger_id: str, due_at: datetime, now: datetime, status: str, reason: str, run_id: str | None
) -> dict[str, Any]:
    return {
        "trigger_id": trigger_id,
        "due_at": due_at,
        "fired_at": now,
        "status": status,
        "reason": reason[:500],
        "run_id": run_id,
    }
