"""The cron scheduler on a real database (SQLite and PostgreSQL), driven by a test clock:
daylight-saving changes, the day-of-month/day-of-week rule, overlap and catch-up policies,
jitter, a restart mid-schedule, the credential health guard, and exactly-once across
three scheduler processes on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.db.tables import AuditEvent, CronOccurrence, Run, Trigger, Workflow, Workspace
from bastion.db.types import utcnow
from bastion.execution.checkpoints import open_checkpointer
from bastion.execution.dispatcher import Dispatcher
from bastion.execution.engine import Engine
from bastion.execution.sandbox import Sandbox
from bastion.runs.ledger import Ledger
from bastion.runs.records import Status
from bastion.triggers import cron
from bastion.triggers import gate as gates
from bastion.triggers.gate import Gate
from bastion.triggers.scheduler import Scheduler
from bastion.triggers.store import CronSettings, Triggers
from bastion.vault.credentials import Vault
from bastion.vault.secret import Secret
from bastion.workflows import graph as graphs
from bastion.workflows.egress import DEFAULT_DENY, EgressPolicy
from bastion.workflows.nodes.http_request import new_client
from bastion.workflows.store import Workflows
from tests.triggers.conftest import Recorder
from tests.vault.conftest import owner

QUICK = {"nodes": [{"id": "only", "type": "set", "params": {"values": {"ok": True}}}]}
LAG = timedelta(seconds=2)  # how late after an occurrence the test clock ticks: on time
MINUTE = timedelta(minutes=1)
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)  # a Friday, far from any DST change
HELPER = Path(__file__).with_name("scheduler_process.py")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def scheduler_on(db: Database, ledger: Ledger, audit: AuditLog, executor: Recorder) -> Scheduler:
    return Scheduler(Gate(Dispatcher(db, ledger, executor, max_input_bytes=64 * 1024), audit))


@dataclass
class Rig:
    db: Database
    audit: AuditLog
    vault: Vault
    workflows: Workflows
    triggers: Triggers
    engine: Engine
    executor: Recorder
    scheduler: Scheduler

    async def workflow(self, graph: dict[str, Any] = QUICK, name: str = "wf") -> Workflow:
        return await self.workflows.create(1, name, "", graphs.parse(graph), "user:olive")

    async def cron(
        self, workflow: Workflow, expression: str, *, now: datetime, name: str = "every", **kw: Any
    ) -> Trigger:
        return await self.triggers.create(
            workflow,
            kind="cron",
            name=name,
            settings=CronSettings(expression=expression, **kw),
            enabled=True,
            version=None,
            actor="user:olive",
            now=now,
        )

    async def tick(self, now: datetime) -> int:
        return await self.scheduler.tick(now)

    async def drive(self, first: datetime, last: datetime, step: timedelta) -> None:
        """Tick at first, first + step, ... up to last, each LAG after the instant."""
        at = first
        while at <= last:
            await self.tick(at + LAG)
            at += step

    async def occurrences(self, trigger: Trigger) -> list[CronOccurrence]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(CronOccurrence)
                .where(CronOccurrence.trigger_id == trigger.id)
                .order_by(CronOccurrence.due_at)
            )
            return list(rows)

    async def runs(self, trigger: Trigger) -> list[Run]:
        async with self.db.session() as session:
            rows = await session.scalars(select(Run).where(Run.trigger_id == trigger.id))
            return sorted(rows, key=lambda run: json.loads(run.input)["due_at"])

    async def fresh(self, trigger: Trigger) -> Trigger:
        return await self.triggers.get(trigger.id)

    async def status(self, run_id: str) -> str:
        async with self.db.session() as session:
            run = await session.get(Run, run_id)
        assert run is not None
        return run.status

    async def until(self, run_id: str, status: Status) -> None:
        async with asyncio.timeout(10):
            while True:
                if await self.status(run_id) == status:
                    return
                await asyncio.sleep(0.01)


@pytest.fixture
async def rig(migrated_db: Database, keyring: Keyring) -> AsyncIterator[Rig]:
    db = migrated_db
    async with db.transaction() as session:
        session.add(Workspace(id=1, slug="ops", name="Ops"))
    audit = AuditLog(db, keyring)
    vault = Vault(db, keyring, audit)
    workflows = Workflows(db)
    ledger = Ledger(db)
    executor = Recorder()
    async with open_checkpointer(db.url) as checkpointer, new_client() as http:
        engine = Engine(
            ledger=ledger,
            workflows=workflows,
            vault=vault,
            checkpointer=checkpointer,
            egress=EgressPolicy.parse(DEFAULT_DENY),
            http=http,
            code=Sandbox(),
            owner="test-engine",
        )
        scheduler = scheduler_on(db, ledger, audit, executor)
        yield Rig(db, audit, vault, workflows, Triggers(db), engine, executor, scheduler)


async def fired(rig: Rig, trigger: Trigger) -> list[datetime]:
    """Due times of the trigger's occurrences, each checked to have fired exactly one run,
    of trigger "cron", whose input names its due time; and no other run of the trigger."""
    occurrences = await rig.occurrences(trigger)
    runs = {run.id: run for run in await rig.runs(trigger)}
    assert [o.reason for o in occurrences if o.status != "fired"] == []
    assert sorted(str(o.run_id) for o in occurrences) == sorted(runs)
    for occurrence in occurrences:
        run = runs[str(occurrence.run_id)]
        assert (run.trigger, run.actor, run.status) == ("cron", f"cron:{trigger.id}", "queued")
        assert json.loads(run.input) == {
            "schedule": trigger.name,
            "due_at": occurrence.due_at.isoformat(),
            "data": None,
        }
    return [o.due_at for o in occurrences]


def every(step: timedelta, after: datetime, until: datetime) -> list[datetime]:
    """after + step, after + 2 step, ... up to until."""
    found, at = [], after + step
    while at <= until:
        found.append(at)
        at += step
    return found


# -- daylight-saving time -------------------------------------------------------------------

QUARTER = timedelta(minutes=15)
DST = [
    # zone, change (UTC), local hour skipped or repeated, fixed-time job, its runs,
    # six-field job at that hour (a wildcard expression), its runs
    pytest.param(
        "Europe/Berlin",
        utc(2026, 3, 29, 1),
        2,
        "30 2 * * *",
        [utc(2026, 3, 29, 1)],
        "0 30 2 * * *",
        [],
        id="berlin-spring",
    ),
    pytest.param(
        "Europe/Berlin",
        utc(2026, 10, 25, 1),
        2,
        "30 2 * * *",
        [utc(2026, 10, 25, 0, 30)],
        "0 30 2 * * *",
        [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)],
        id="berlin-autumn",
    ),
    pytest.param(
        "America/New_York",
        utc(2026, 3, 8, 7),
        2,
        "30 2 * * *",
        [utc(2026, 3, 8, 7)],
        "0 30 2 * * *",
        [],
        id="new-york-spring",
    ),
    pytest.param(
        "America/New_York",
        utc(2026, 11, 1, 6),
        1,
        "30 1 * * *",
        [utc(2026, 11, 1, 5, 30)],
        "0 30 1 * * *",
        [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)],
        id="new-york-autumn",
    ),
]


@pytest.mark.parametrize(("zone", "change", "hour", "fixed", "once", "six", "twice"), DST)
async def test_a_test_clock_drives_schedules_across_a_dst_change(
    rig: Rig,
    zone: str,
    change: datetime,
    hour: int,
    fixed: str,
    once: list[datetime],
    six: str,
    twice: list[datetime],
) -> None:
    start, end = change - timedelta(hours=3), change + timedelta(hours=3)
    workflow = await rig.workflow()
    jobs = {
        expression: await rig.cron(
            workflow, expression, now=start, name=f"job-{n}", timezone=zone, overlap="allow"
        )
        for n, expression in enumerate([fixed, "*/15 * * * *", six])
    }
    await rig.drive(start + timedelta(minutes=5), end, timedelta(minutes=5))

    # Fixed time: once, whether its hour was skipped (then at the end of the gap, i.e.
    # fired by the first tick after the change) or repeated (then in its first pass).
    assert await fired(rig, jobs[fixed]) == once
    [occurrence] = await rig.occurrences(jobs[fixed])
    assert occurrence.fired_at == once[0] + LAG
    # Wildcard: every 15 minutes of real time, so both passes of a repeated hour and
    # nothing in a skipped one (these zones are a whole number of hours off UTC).
    quarters = await fired(rig, jobs["*/15 * * * *"])
    assert quarters == every(QUARTER, start, end)
    local = [due.astimezone(ZoneInfo(zone)) for due in quarters]
    in_hour = [(t.minute, t.fold) for t in local if t.hour == hour]
    if once[0] == change:  # spring: the hour does not exist
        assert in_hour == []
    else:  # autumn: four quarters in each pass
        assert in_hour == [(m, 0) for m in (0, 15, 30, 45)] + [(m, 1) for m in (0, 15, 30, 45)]
    # A six-field expression is a wildcard one: in both passes, and not moved out of a gap.
    assert await fired(rig, jobs[six]) == twice


# -- day of month / day of week -------------------------------------------------------------


async def test_day_of_month_or_day_of_week_when_both_are_restricted(rig: Rig) -> None:
    workflow = await rig.workflow()
    start = utc(2026, 3, 31, 12)
    jobs = {
        expression: await rig.cron(workflow, expression, now=start, name=f"j{n}", overlap="allow")
        for n, expression in enumerate(["0 0 13 * 5", "0 0 * * 5", "0 0 */2 * 5"])
    }
    await rig.drive(utc(2026, 4, 1), utc(2026, 5, 1), timedelta(days=1))

    def days(dues: list[datetime]) -> list[tuple[int, int]]:
        return [(d.month, d.day) for d in dues]

    # The 13th (a Monday in April 2026) or any Friday: Debian cron's OR.
    assert days(await fired(rig, jobs["0 0 13 * 5"])) == [
        (4, 3),
        (4, 10),
        (4, 13),
        (4, 17),
        (4, 24),
        (5, 1),
    ]
    # A day-of-month starting with "*" is unrestricted: Fridays only, and with */2 the
    # Fridays on odd days.
    assert days(await fired(rig, jobs["0 0 * * 5"])) == [(4, 3), (4, 10), (4, 17), (4, 24), (5, 1)]
    assert days(await fired(rig, jobs["0 0 */2 * 5"])) == [(4, 3), (4, 17), (5, 1)]


# -- overlap --------------------------------------------------------------------------------


def slow(seconds: float) -> dict[str, Any]:
    return {"nodes": [{"id": "wait", "type": "delay", "params": {"seconds": seconds}}]}


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_overlap_skip_skips_while_the_previous_run_is_queued_or_running(rig: Rig) -> None:
    trigger = await rig.cron(await rig.workflow(slow(1.0)), "* * * * *", now=T0, overlap="skip")
    assert await rig.tick(T0 + MINUTE + LAG) == 1
    [first] = await rig.runs(trigger)
    assert await rig.tick(T0 + 2 * MINUTE + LAG) == 0  # the first is still queued
    running = asyncio.create_task(rig.engine.execute(first.id))
    await rig.until(first.id, Status.RUNNING)
    assert await rig.tick(T0 + 3 * MINUTE + LAG) == 0  # ... and now running
    assert await running == Status.SUCCEEDED
    assert await rig.tick(T0 + 4 * MINUTE + LAG) == 1  # finished: the next one fires

    rows = await rig.occurrences(trigger)
    assert [(o.due_at - T0, o.status) for o in rows] == [
        (MINUTE, "fired"),
        (2 * MINUTE, "skipped"),
        (3 * MINUTE, "skipped"),
        (4 * MINUTE, "fired"),
    ]
    assert {o.reason for o in rows if o.status == "skipped"} == {
        "the previous run is still active (overlap: skip)"
    }
    assert len(await rig.runs(trigger)) == 2


async def test_overlap_queue_one_lets_one_run_wait_while_one_runs(rig: Rig) -> None:
    trigger = await rig.cron(await rig.workflow(slow(60)), "* * * * *", now=T0, overlap="queue_one")
    assert await rig.tick(T0 + MINUTE + LAG) == 1
    [first] = await rig.runs(trigger)
    assert await rig.tick(T0 + 2 * MINUTE + LAG) == 0  # one queued already: it is the one
    running = asyncio.create_task(rig.engine.execute(first.id))
    try:
        await rig.until(first.id, Status.RUNNING)
        assert await rig.tick(T0 + 3 * MINUTE + LAG) == 1  # one runs, this one waits
        assert await rig.tick(T0 + 4 * MINUTE + LAG) == 0  # a second would wait: skipped
        assert await rig.status(first.id) == Status.RUNNING
    finally:
        await stop(running)

    rows = await rig.occurrences(trigger)
    assert [(o.due_at - T0, o.status, o.reason) for o in rows] == [
        (MINUTE, "fired", ""),
        (2 * MINUTE, "skipped", "a run is already waiting (overlap: queue_one)"),
        (3 * MINUTE, "fired", ""),
        (4 * MINUTE, "skipped", "a run is already waiting (overlap: queue_one)"),
    ]
    runs = await rig.runs(trigger)
    assert [run.status for run in runs] == [Status.RUNNING, Status.QUEUED]


async def test_overlap_allow_fires_whatever_is_active(rig: Rig) -> None:
    trigger = await rig.cron(await rig.workflow(slow(60)), "* * * * *", now=T0, overlap="allow")
    assert await rig.tick(T0 + MINUTE + LAG) == 1
    [first] = await rig.runs(trigger)
    running = asyncio.create_task(rig.engine.execute(first.id))
    try:
        await rig.until(first.id, Status.RUNNING)
        await rig.drive(T0 + 2 * MINUTE, T0 + 4 * MINUTE, MINUTE)
    finally:
        await stop(running)
    rows = await rig.occurrences(trigger)
    assert [(o.due_at - T0, o.status) for o in rows] == [
        (k * MINUTE, "fired") for k in (1, 2, 3, 4)
    ]
    runs = await rig.runs(trigger)
    assert [run.status for run in runs] == [Status.RUNNING] + [Status.QUEUED] * 3


# -- catch-up after downtime ----------------------------------------------------------------

TEN = timedelta(minutes=10)
DOWN_UNTIL = T0 + timedelta(days=1, minutes=3)  # 12:03 the next day
MISSED = every(TEN, T0, DOWN_UNTIL)  # 12:10 on the first day ... 12:00 on the next: 144
_COUNT = re.compile(r"missed: (\d+) occurrence\(s\) from this one on")


def accounted(rows: list[CronOccurrence]) -> int:
    """Occurrences the rows account for: one each, or the count an aggregate row names."""
    return sum(int(m.group(1)) if (m := _COUNT.match(o.reason)) else 1 for o in rows)


async def test_skip_missed_records_the_missed_occurrences_and_fires_none(rig: Rig) -> None:
    trigger = await rig.cron(await rig.workflow(), "*/10 * * * *", now=T0, catch_up="skip_missed")
    assert len(MISSED) == 144
    assert await rig.tick(DOWN_UNTIL) == 0
    rows = await rig.occurrences(trigger)
    assert {o.status for o in rows} == {"skipped"}
    assert accounted(rows) == len(MISSED)
    assert rows[0].due_at == MISSED[0]
    assert await rig.runs(trigger) == []
    resumed = await rig.fresh(trigger)
    assert resumed.next_due_at == T0 + timedelta(days=1, minutes=10)  # the next after now
    # Back on time: the schedule carries on.
    assert await rig.tick(T0 + timedelta(days=1, minutes=10) + LAG) == 1
    assert (await rig.occurrences(trigger))[-1].status == "fired"


async def test_run_once_fires_one_run_for_the_missed_set(rig: Rig) -> None:
    trigger = await rig.cron(await rig.workflow(), "*/10 * * * *", now=T0, catch_up="run_once")
    down_until = T0 + timedelta(hours=8, minutes=3)
    missed = every(TEN, T0, down_until)
    assert await rig.tick(down_until) == 1
    rows = await rig.occurrences(trigger)
    assert [o.due_at for o in rows] == missed
    [run] = await rig.runs(trigger)
    assert json.loads(run.input)["due_at"] == missed[-1].isoformat()  # the newest
    assert [(o.status, o.run_id) for o in rows][-1] == ("fired", run.id)
    assert {(o.status, o.reason) for o in rows[:-1]} == {
        ("skipped", "missed; coalesced into one catch-up run (run_once)")
    }
    assert (await rig.fresh(trigger)).next_due_at == down_until + timedelta(minutes=7)


async def test_run_once_after_a_long_downtime_still_accounts_for_all(rig: Rig) -> None:
    trigger = await rig.cron(await rig.workflow(), "*/10 * * * *", now=T0, catch_up="run_once")
    assert await rig.tick(DOWN_UNTIL) == 1
    [run] = await rig.runs(trigger)
    assert json.loads(run.input)["due_at"] == MISSED[-1].isoformat()
    rows = await rig.occurrences(trigger)
    assert accounted([o for o in rows if o.status == "skipped"]) == len(MISSED) - 1


async def test_run_all_fires_each_missed_occurrence_within_the_window(rig: Rig) -> None:
    trigger = await rig.cron(
        await rig.workflow(),
        "*/10 * * * *",
        now=T0,
        catch_up="run_all",
        catch_up_window_seconds=3600,
        overlap="allow",
    )
    assert await rig.tick(DOWN_UNTIL) == 6
    within = [due for due in MISSED if due >= DOWN_UNTIL - timedelta(hours=1)]
    assert len(within) == 6
    runs = await rig.runs(trigger)
    assert [json.loads(run.input)["due_at"] for run in runs] == [d.isoformat() for d in within]
    rows = await rig.occurrences(trigger)
    fired_rows = [o for o in rows if o.status == "fired"]
    assert [o.due_at for o in fired_rows] == within
    [older] = [o for o in rows if o.status == "skipped"]  # one aggregate row
    assert older.due_at == MISSED[0]
    assert older.reason == (
        f"missed: {len(MISSED) - 6} occurrence(s) from this one on, "
        "older than what run_all looks back to"
    )
    assert (await rig.fresh(trigger)).next_due_at == DOWN_UNTIL + timedelta(minutes=7)


@pytest.mark.parametrize("policy", ["run_once", "run_all"])
async def test_a_catch_up_in_the_second_pass_of_a_repeated_hour_fires_its_first_pass_run(
    rig: Rig, policy: str
) -> None:
    """Down from the day before until 02:10 CET on 2026-10-25 (the second pass of 02:xx in
    Berlin): "30 2 * * *" ran at 02:30 CEST (00:30 UTC), 40 minutes ago, and is caught up."""
    trigger = await rig.cron(
        await rig.workflow(),
        "30 2 * * *",
        now=utc(2026, 10, 24, 12),
        timezone="Europe/Berlin",
        catch_up=policy,
        catch_up_window_seconds=3600,
    )
    assert await rig.tick(utc(2026, 10, 25, 1, 10)) == 1
    assert await fired(rig, trigger) == [utc(2026, 10, 25, 0, 30)]
    assert (await rig.fresh(trigger)).next_due_at == utc(2026, 10, 26, 1, 30)  # 02:30 CET


# -- jitter ---------------------------------------------------------------------------------


async def test_jitter_fires_within_due_and_due_plus_jitter_deterministically(rig: Rig) -> None:
    trigger = await rig.cron(
        await rig.workflow(), "*/10 * * * *", now=T0, jitter_seconds=300, overlap="allow"
    )
    delays = []
    for k in range(1, 7):
        state = await rig.fresh(trigger)
        due, fire = state.next_due_at, state.next_fire_at
        assert due == T0 + k * TEN and fire is not None
        delay = fire - due
        assert timedelta(0) <= delay <= timedelta(seconds=300)
        assert delay == cron.jitter(trigger.id, due, 300) == cron.jitter(trigger.id, due, 300)
        delays.append(delay)
        assert await rig.tick(fire - timedelta(milliseconds=1)) == 0  # not before its time
        assert await rig.tick(fire) == 1
        assert (await rig.occurrences(trigger))[-1].fired_at == fire
    assert len(set(delays)) > 1  # each occurrence its own delay
    assert await fired(rig, trigger) == every(TEN, T0, T0 + 6 * TEN)


@pytest.mark.parametrize("policy", ["skip_missed", "run_all"])
async def test_after_downtime_an_occurrence_waiting_for_its_jitter_is_not_missed(
    rig: Rig, policy: str
) -> None:
    trigger = await rig.cron(
        await rig.workflow(),
        "0 * * * *",
        now=T0,
        jitter_seconds=1800,
        catch_up=policy,
        catch_up_window_seconds=60,  # run_all: shorter than the jitter
    )
    due = T0 + timedelta(hours=5)
    while cron.jitter(trigger.id, due, 1800) < timedelta(seconds=60):
        due += timedelta(hours=1)
    fire = due + cron.jitter(trigger.id, due, 1800)
    # Down until after `due`, before its fire time: the earlier ones were missed, it was not.
    assert await rig.tick(fire - timedelta(seconds=30)) == 0
    rows = await rig.occurrences(trigger)
    assert rows != [] and all(o.status == "skipped" and o.due_at < due for o in rows)
    state = await rig.fresh(trigger)
    assert (state.next_due_at, state.next_fire_at) == (due, fire)
    assert await rig.tick(fire) == 1
    assert (await rig.occurrences(trigger))[-1].due_at == due


async def test_run_all_with_jitter_fires_what_is_due_to_fire_within_the_window(rig: Rig) -> None:
    five = timedelta(minutes=5)
    trigger = await rig.cron(
        await rig.workflow(),
        "*/5 * * * *",
        now=T0,
        jitter_seconds=300,
        catch_up="run_all",
        catch_up_window_seconds=400,
        overlap="allow",
    )

    def delay(due: datetime) -> timedelta:
        return cron.jitter(trigger.id, due, 300)

    # An occurrence still waiting for its delay, and ten minutes before it one whose
    # (jittered) fire time lies more than the window back, though its due time is
    # within the window plus the jitter.
    due = T0 + timedelta(hours=3)
    while delay(due) < timedelta(seconds=60) or delay(due - 2 * five) > timedelta(seconds=200):
        due += five
    now = due + timedelta(seconds=30)
    assert await rig.tick(now) == 1
    rows = await rig.occurrences(trigger)
    [run] = await rig.runs(trigger)
    assert [(o.due_at, o.run_id) for o in rows if o.status == "fired"] == [(due - five, run.id)]
    assert [(o.due_at, o.status, o.reason) for o in rows if o.due_at == due - 2 * five] == [
        (due - 2 * five, "skipped", "missed: outside the catch-up window (run_all)")
    ]
    assert accounted([o for o in rows if o.status == "skipped"]) == len(
        every(five, T0, due - 2 * five)
    )
    state = await rig.fresh(trigger)
    assert (state.next_due_at, state.next_fire_at) == (due, due + delay(due))


async def test_jitter_above_the_period_a_waiting_occurrence_older_than_a_missed_one_fires(
    rig: Rig,
) -> None:
    """Every 5 minutes with up to 10 minutes of jitter: fire times are out of order. After
    downtime, an occurrence still waiting for its delay fires at its time, though a newer
    one was already missed; each is recorded once, and other schedules carry on."""
    workflow = await rig.workflow()
    trigger = await rig.cron(workflow, "*/5 * * * *", now=T0, jitter_seconds=600, overlap="allow")
    other = await rig.cron(workflow, "*/5 * * * *", now=T0, name="other", overlap="allow")
    five = timedelta(minutes=5)

    def fires(due: datetime) -> datetime:
        return due + cron.jitter(trigger.id, due, 600)

    older = T0 + timedelta(hours=2)
    while fires(older) - fires(older + five) < timedelta(seconds=20):
        older += five
    now = fires(older + five) + timedelta(seconds=7)  # the newer one missed, the older not due
    assert fires(older) > now
    later = [now + timedelta(seconds=s) for s in range(0, 400, 4)]  # within the grace
    for at in later:
        await rig.tick(at)
    rows = {o.due_at: o for o in await rig.occurrences(trigger)}
    assert rows[older + five].status == "skipped"
    assert rows[older].status == "fired"
    assert rows[older].fired_at <= fires(older) + timedelta(seconds=10)  # the next tick
    runs = await rig.runs(trigger)
    assert sorted(str(o.run_id) for o in rows.values() if o.run_id) == sorted(r.id for r in runs)
    assert max(o.due_at for o in await rig.occurrences(other)) >= later[-1] - five


# -- restart --------------------------------------------------------------------------------


async def test_a_new_scheduler_on_a_new_database_object_continues_without_gap_or_duplicate(
    rig: Rig,
) -> None:
    five = timedelta(minutes=5)
    trigger = await rig.cron(await rig.workflow(), "*/5 * * * *", now=T0, overlap="allow")
    await rig.drive(T0 + MINUTE, T0 + 30 * MINUTE, MINUTE)
    assert await fired(rig, trigger) == every(five, T0, T0 + 30 * MINUTE)
    assert (await rig.fresh(trigger)).next_due_at == T0 + 35 * MINUTE

    # "Restart": another Database object, ledger, dispatcher, gate and scheduler. It first
    # ticks at the instant the old one last did (nothing new), then carries on.
    db = Database(rig.db.url)
    try:
        executor = Recorder()
        rig.scheduler = scheduler_on(db, Ledger(db), rig.audit, executor)
        assert await rig.tick(T0 + 30 * MINUTE + LAG) == 0
        await rig.drive(T0 + 31 * MINUTE, T0 + 60 * MINUTE, MINUTE)
    finally:
        await db.dispose()
    assert await fired(rig, trigger) == every(five, T0, T0 + 60 * MINUTE)
    assert len(executor.submitted) == 6


# -- the health guard -----------------------------------------------------------------------


async def test_an_unhealthy_credential_skips_the_occurrence_and_is_audited(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gates, "HEALTH_TTL_SECONDS", 0.0)  # no cached health between ticks
    credential = await rig.vault.create(
        owner(), name="api-key", kind="secret", fields={"token": Secret("tok-123")}
    )
    graph = {
        "nodes": [
            {
                "id": "use",
                "type": "set",
                "params": {"values": {"t": "{{ credentials.api-key.token }}"}},
            }
        ]
    }
    workflow = await rig.workflow(graph)
    trigger = await rig.cron(workflow, "* * * * *", now=T0, overlap="allow")
    await rig.vault.set_health(credential.id, "unhealthy", "401 from the provider")

    assert await rig.tick(T0 + MINUTE + LAG) == 0
    [row] = await rig.occurrences(trigger)
    assert (row.status, row.run_id) == ("skipped", None)
    assert row.reason == "unhealthy credentials: api-key"
    assert await rig.runs(trigger) == []
    async with rig.db.session() as session:
        events = list(
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "cron.blocked"))
        )
    assert len(events) == 1
    assert (events[0].actor, events[0].target, events[0].outcome) == (
        f"cron:{trigger.id}",
        workflow.id,
        "denied",
    )
    assert "api-key" in events[0].reason
    assert json.loads(events[0].details)["due_at"] == (T0 + MINUTE).isoformat()

    await rig.vault.set_health(credential.id, "healthy", "")
    assert await rig.tick(T0 + 2 * MINUTE + LAG) == 1
    assert [o.status for o in await rig.occurrences(trigger)] == ["skipped", "fired"]


# -- several processes on one PostgreSQL database -------------------------------------------

PROCESSES, SCHEDULES, WINDOW = 3, 20, timedelta(seconds=4)


def spawn(url: str, key: bytes) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HELPER), url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "BASTION_TEST_MASTER_KEY": key.hex()},
        text=True,
    )


def report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The JSON line a helper prints when its window is over (it exits then)."""
    assert proc.stdout is not None
    out = proc.stdout.read()
    assert proc.wait(timeout=10) == 0
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


@pytest.mark.services
async def test_three_scheduler_processes_fire_each_occurrence_exactly_once(
    postgres_url: str,
) -> None:
    """Three OS processes, each with its own Database and Scheduler, tick one PostgreSQL
    database for a few seconds: 20 schedules firing every second (overlap allow). Every
    (schedule, second) gets exactly one occurrence and one run, and no second is left out.
    (catch_up run_all: a process stalled past the grace period still fires, not skips.)"""
    migrations.upgrade(postgres_url)
    db = Database(postgres_url)
    procs = [spawn(postgres_url, os.urandom(32)) for _ in range(PROCESSES)]
    try:
        for proc in procs:  # each has built its stack and reached the database
            assert proc.stdout is not None
            assert await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30) == "ready\n"
        async with db.transaction() as session:
            session.add(Workspace(id=1, slug="ops", name="Ops"))
        workflow = await Workflows(db).create(1, "wf", "", graphs.parse(QUICK), "user:olive")
        settings = CronSettings(expression="* * * * * *", overlap="allow", catch_up="run_all")
        start = utcnow()
        triggers = [
            await Triggers(db).create(
                workflow,
                kind="cron",
                name=f"s{n}",
                settings=settings,
                enabled=True,
                version=None,
                actor="user:olive",
                now=start,
            )
            for n in range(SCHEDULES)
        ]
        end = start + WINDOW
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start.isoformat()} {end.isoformat()}\n")
            proc.stdin.close()
        reports = [await asyncio.wait_for(asyncio.to_thread(report, p), 30) for p in procs]
        async with db.session() as session:
            rows = list(await session.scalars(select(CronOccurrence)))
            runs = {run.id: run for run in await session.scalars(select(Run))}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        await db.dispose()

    assert [r["errors"] for r in reports] == [[]] * PROCESSES
    second = timedelta(seconds=1)
    first = start.replace(microsecond=0) + second
    # Every second from the first due one to the end of the window (the last tick of
    # each process came at or after the end: what was due by then fired).
    window = every(second, first - second, end.replace(microsecond=0))
    by_trigger: dict[str, list[CronOccurrence]] = {t.id: [] for t in triggers}
    for row in rows:
        by_trigger[row.trigger_id].append(row)
    for trigger in triggers:
        mine = sorted(by_trigger[trigger.id], key=lambda o: o.due_at)
        dues = [o.due_at for o in mine]
        assert dues[: len(window)] == window, trigger.name  # no gap
        assert dues == every(second, first - second, dues[-1])  # one per second, no more
        assert {o.status for o in mine} == {"fired"}
        for occurrence in mine:  # each with its own run, of this schedule, for that second
            run = runs[str(occurrence.run_id)]
            assert run.trigger_id == trigger.id
            assert json.loads(run.input)["due_at"] == occurrence.due_at.isoformat()
    assert Counter(str(o.run_id) for o in rows).most_common(1)[0][1] == 1
    assert len(runs) == len(rows)  # no run without its occurrence
    assert sum(int(r["runs"]) for r in reports) == len(runs)  # each started by one process
