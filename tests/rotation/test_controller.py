"""The controller's decisions, step by step, against fake Docker/HAProxy/time and a real
database (SQLite): choice of replicas, switch order per strategy, health timeouts,
failures and alerts, reconcile, kill, pending actions, leases and restarts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.db.tables import AuditEvent, RotationPool
from bastion.rotation.controller import RETRY_SECONDS, Controller
from bastion.rotation.controls import Action, Control
from bastion.rotation.pools import PoolConfig
from bastion.rotation.state import RotationStore
from tests.rotation.fakes import FakeClock, FakeDocker, FakeHAProxy, Ordered

NAMES = ("web-a", "web-b", "web-c")


@dataclass
class Rig:
    pool: PoolConfig
    docker: FakeDocker
    haproxy: FakeHAProxy | None
    clock: FakeClock
    store: RotationStore
    audit: AuditLog
    controller: Controller
    log: list[tuple[str, ...]] = field(default_factory=list)

    async def settle(self, limit: int = 50) -> int:
        """Steps until one finds nothing to do; how many did something."""
        for done in range(limit):
            if not await self.controller.step(self.pool):
                return done
        raise AssertionError("the controller never settled")

    async def row(self) -> RotationPool:
        return await self.store.pool(self.pool.name)

    async def events(self, prefix: str = "rotation.") -> list[AuditEvent]:
        return [e for e in await self.audit.events() if e.action.startswith(prefix)]

    async def act(self, action: Action, force: bool = False) -> None:
        from bastion.audit.chain import Event

        def event(after: Control) -> Event:
            return Event(f"rotation.{action.value}", "user:olive", target="pool:web")

        await self.store.control(self.pool.name, action, force=force, event=event)

    def due(self) -> None:
        self.clock.advance(self.pool.interval_seconds + self.pool.jitter_seconds + 1)


@pytest.fixture
async def make_rig(tmp_path: Path, keyring: Keyring) -> AsyncIterator[Callable[..., Any]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}"
    migrations.upgrade(url)
    db = Database(url)
    audit = AuditLog(db, keyring)

    async def make(
        *, haproxy: bool = True, rng: Any = None, owner: str = "test", **options: Any
    ) -> Rig:
        pool = PoolConfig(
            name="web",
            replicas=NAMES,
            interval_seconds=60,
            health_timeout_seconds=5,
            stop_timeout_seconds=1,
            drain_seconds=2,
            **options,
        )
        log: list[tuple[str, ...]] = []
        docker = FakeDocker(NAMES, log=log)
        proxy = FakeHAProxy(docker, log) if haproxy else None
        clock = FakeClock()
        store = RotationStore(db, audit)
        await store.ensure([pool])
        controller = Controller(
            [pool],
            docker,  # type: ignore[arg-type]
            store,
            haproxy=lambda _: proxy,  # type: ignore[arg-type,return-value]
            clock=clock,
            sleep=clock.sleep,
            rng=rng,
            owner=owner,
        )
        return Rig(pool, docker, proxy, clock, store, audit, controller, log)

    yield make
    await db.dispose()


async def started(make_rig: Callable[..., Any], **options: Any) -> Rig:
    """A rig whose first replica is active (after the first passes)."""
    rig: Rig = await make_rig(**options)
    await rig.settle()
    assert (await rig.row()).active_replica is not None
    rig.log.clear()
    return rig


async def test_the_first_pass_activates_one_replica_and_schedules_the_next_rotation(
    make_rig: Callable[..., Any],
) -> None:
    rig: Rig = await make_rig(rng=Ordered("web-b"))
    assert await rig.settle() == 1  # one recovery rotation, which also schedules the next
    row = await rig.row()
    assert row.active_replica == "web-b"
    assert rig.docker.running() == {"web-b"}
    assert rig.haproxy is not None
    assert rig.haproxy.admin == {"web-a": "maint", "web-b": "ready", "web-c": "maint"}
    assert row.next_rotation_at is not None
    assert 60 <= (row.next_rotation_at - rig.clock()).total_seconds() <= 61
    (entry,) = await rig.store.history("web")
    assert (entry.trigger, entry.from_replica, entry.to_replica) == ("recovery", None, "web-b")


async def test_make_before_break_serves_the_new_replica_before_the_old_one_leaves(
    make_rig: Callable[..., Any],
) -> None:
    rig = await started(make_rig, rng=Ordered("web-a", "web-c"))
    rig.due()
    assert await rig.settle() == 1
    assert rig.log == [
        ("start", "web-c"),
        ("ready", "web-c"),
        ("drain", "web-a"),
        ("maint", "web-a"),
        ("stop", "web-a"),
    ]
    row = await rig.row()
    assert (row.active_replica, row.rotation_count) == ("web-c", 2)
    entry = (await rig.store.history("web"))[0]
    assert (entry.trigger, entry.from_replica, entry.to_replica) == ("schedule", "web-a", "web-c")
    assert entry.outcome == "ok"
    assert entry.switch_seconds is not None
    assert entry.traffic_seconds is not None
    switch = (await rig.events())[-1]
    assert (switch.action, switch.outcome) == ("rotation.switch", "success")
    assert switch.target == "pool:web"


async def test_the_old_replica_is_stopped_only_when_its_sessions_have_ended(
    make_rig: Callable[..., Any],
) -> None:
    rig = await started(make_rig, rng=Ordered("web-a", "web-b"))
    assert rig.haproxy is not None
    rig.haproxy.busy = {"web-a": 3}
    before = rig.clock()
    rig.due()
    await rig.settle()
    assert rig.haproxy.busy == {"web-a": 0}
    assert rig.log.index(("maint", "web-a")) > rig.log.index(("drain", "web-a"))
    # Waited for the sessions, not for the whole drain time.
    assert (rig.clock() - before).total_seconds() < rig.pool.interval_seconds + 2


async def test_the_next_replica_is_random_and_never_the_current_one(
    make_rig: Callable[..., Any],
) -> None:
    rig = await started(make_rig)
    chosen = []
    for _ in range(30):
        current = (await rig.row()).active_replica
        rig.due()
        await rig.settle()
        new = (await rig.row()).active_replica
        assert new != current
        assert rig.docker.running() == {new}
        chosen.append(new)
    assert set(chosen) == set(NAMES)  # 2^-29 odds of a false failure per name


async def test_a_candidate_that_never_becomes_healthy_is_stopped_and_the_next_one_taken(
    make_rig: Callable[..., Any],
) -> None:
    rig = await started(make_rig, rng=Ordered("web-a", "web-b", "web-c"))
    rig.docker.containers["web-b"].healthy_after = None
    before = rig.clock()
    rig.due()
    await rig.settle()
    assert rig.log[:2] == [("start", "web-b"), ("maint", "web-b")]
    assert rig.log[2] == ("stop", "web-b")
    row = await rig.row()
    assert row.active_replica == "web-c"
    assert rig.docker.running() == {"web-c"}
    waited = (rig.clock() - before).total_seconds() - rig.pool.interval_seconds - 1
    assert rig.pool.health_timeout_seconds <= waited < rig.pool.health_timeout_seconds + 3
    entry = (await rig.store.history("web"))[0]
    assert entry.outcome == "ok"
    assert json.loads(entry.skipped) == [
        {"replica": "web-b", "reason": "not healthy within 5 s (health: starting)"}
    ]
    replicas = await rig.store.replicas("web")
    assert replicas["web-b"].last_error == "not healthy within 5 s (health: starting)"


async def test_when_no_candidate_works_the_current_replica_stays_and_an_alert_is_raised(
    make_rig: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    rig = await started(make_rig, rng=Ordered("web-a"))
    rig.docker.containers["web-b"].healthy_after = None
    rig.docker.containers["web-c"].start_error = "driver failed: port is already allocated"
    rig.due()
    await rig.settle()
    row = await rig.row()
    assert row.active_replica == "web-a"
    assert rig.docker.running() == {"web-a"}
    assert rig.haproxy is not None
    assert rig.haproxy.admin["web-a"] == "ready"
    assert row.rotation_count == 1
    assert row.next_rotation_at is not None
    assert (row.next_rotation_at - rig.clock()).total_seconds() <= RETRY_SECONDS
    (error,) = json.loads(row.last_errors)
    assert error["message"].startswith("no replica became healthy (")
    assert "did not start: driver failed: port is already allocated" in error["message"]
    failed = (await rig.events())[-1]
    assert (failed.action, failed.outcome) == ("rotation.failed", "failure")
    assert "ALERT pool web: rotation failed" in caplog.text
    entry = (await rig.store.history("web"))[0]
    assert (entry.outcome, entry.to_replica) == ("failed", None)


async def test_break_before_make_stops_the_old_replica_first_and_records_the_gap(
    make_rig: Callable[..., Any],
) -> None:
    rig = await started(make_rig, rng=Ordered("web-a", "web-b"), strategy="break_before_make")
    rig.due()
    await rig.settle()
    assert rig.log == [
        ("maint", "web-a"),
        ("stop", "web-a"),
        ("start", "web-b"),
        ("ready", "web-b"),
    ]
    entry = (await rig.store.history("web"))[0]
    assert entry.strategy == "break_before_make"
    assert entry.switch_seconds is not None and entry.switch_seconds > 0


async def test_break_before_make_brings_the_old_replica_back_when_no_candidate_works(
    make_rig: Callable[..., Any],
) -> None:
    rig = await started(make_rig, rng=Ordered("web-a"), strategy="break_before_make")
    for name in ("web-b", "web-c"):
        rig.docker.containers[name].healthy_after = None
    rig.due()
    await rig.settle()
    assert rig.docker.running() == {"web-a"}
    assert rig.haproxy is not None
    assert rig.haproxy.admin["web-a"] == "ready"
    assert (await rig.row()).active_replica == "web-a"


async def test_reconcile_stops_a_replica_started_outside_bastion_and_records_it(
    make_rig: Callable[..., Any],
) -> None:
    rig = await started(make_rig, rng=Ordered("web-a"))
    rig.docker.containers["web-c"].status = "running"  # `docker start web-c` by hand
    assert rig.haproxy is not None
    rig.haproxy.admin["web-c"] = "ready"
    assert await rig.settle() == 1
    assert rig.log == [("maint", "web-c"), ("stop", "web-c")]
    assert rig.docker.running() == {"web-a"}
    drift = (await rig.events())[-1]
    assert drift.action == "rotation.drift"
    assert json.loads(drift.details) == {"replica": "web-c"}
    assert "web-c was running beside the active replica (web-a)" in drift.reason


async def test_a_dead_active_replica_is_replaced_at_once(make_rig: Callable[..., Any]) -> None:
    rig = await started(make_rig, rng=Ordered("web-a", "web-b"))
    rig.docker.containers["web-a"].status = "exited"
    await rig.settle()
    assert (await rig.row()).active_replica == "web-b"
    entry = (await rig.store.history("web"))[0]
    assert (entry.trigger, entry.from_replica) == ("recovery", "web-a")
    assert any("the active replica web-a is exited" in e.reason for e in await rig.events())


async def test_paused_pools_do_not_rotate_but_a_forced_rotation_happens(
    make_rig: Callable[..., Any],
) -> None:
    rig = await started(make_rig)
    await rig.act(Action.PAUSE)
    rig.due()
    assert await rig.settle() == 0
    assert (await rig.row()).rotation_count == 1
    await rig.act(Action.ROTATE, force=True)
    assert await rig.settle() == 1
    row = await rig.row()
    assert (row.rotation_count, row.state, row.pending_action) == (2, "paused", None)
    entry = (await rig.store.history("web"))[0]
    assert (entry.trigger, entry.actor) == ("manual", "user:olive")


async def test_kill_stops_every_replica_and_keeps_them_down(make_rig: Callable[..., Any]) -> None:
    rig = await started(make_rig, rng=Ordered("web-a"))
    await rig.act(Action.PAUSE)
    await rig.act(Action.KILL)
    assert await rig.settle() == 1
    assert ("kill", "web-a") in rig.log
    assert rig.docker.running() == set()
    assert rig.haproxy is not None
    assert set(rig.haproxy.admin.values()) == {"maint"}
    row = await rig.row()
    assert (row.state, row.active_replica, row.pending_action) == ("killed", None, None)
    assert (await rig.events())[-1].action == "rotation.killed"
    rig.docker.containers["web-b"].status = "running"  # started by hand after the kill
    await rig.settle()
    assert rig.docker.running() == set()
    await rig.act(Action.RESUME)  # resuming brings a replica back
    await rig.settle()
    assert len(rig.docker.running()) == 1


async def test_docker_unreachable_fails_the_pass_cleanly_and_is_noted_once(
    make_rig: Callable[..., Any],
) -> None:
    rig = await started(make_rig)
    rig.docker.unreachable = True
    rig.due()
    for _ in range(5):
        assert await rig.controller.step(rig.pool) is False
        rig.clock.advance(1)
    row = await rig.row()
    (error,) = json.loads(row.last_errors)
    assert error["message"] == "cannot reach the docker proxy at fake (ConnectError)"
    assert error["count"] == 1  # noted once, not on every pass
    assert len(await rig.store.history("web")) == 1
    rig.docker.unreachable = False
    await rig.settle()
    assert (await rig.row()).rotation_count == 2


async def test_only_the_lease_holder_acts_on_a_pool(make_rig: Callable[..., Any]) -> None:
    first: Rig = await make_rig(owner="server-1")
    second: Rig = await make_rig(owner="server-2")
    assert await first.controller.step(first.pool) is True
    assert await second.controller.step(second.pool) is False
    second.clock.advance(31)  # the first server stopped renewing: its lease lapses
    assert await second.controller.step(second.pool) is True


async def test_a_new_controller_picks_up_the_persisted_state(make_rig: Callable[..., Any]) -> None:
    rig = await started(make_rig, rng=Ordered("web-a"))
    before = await rig.row()
    restarted: Rig = await make_rig()
    restarted.docker.containers = rig.docker.containers  # same engine, same HAProxy
    assert restarted.haproxy is not None and rig.haproxy is not None
    restarted.haproxy.admin = rig.haproxy.admin
    assert await restarted.settle() == 0  # nothing to redo: same active, same schedule
    after = await restarted.row()
    assert after.active_replica == before.active_replica == "web-a"
    assert after.next_rotation_at == before.next_rotation_at
    assert after.rotation_count == before.rotation_count


async def test_haproxy_settings_lost_in_a_reload_are_put_back(
    make_rig: Callable[..., Any],
) -> None:
    rig = await started(make_rig, rng=Ordered("web-a"))
    assert rig.haproxy is not None
    rig.haproxy.admin = {"web-a": "maint", "web-b": "ready", "web-c": "ready"}
    await rig.settle()
    assert rig.haproxy.admin == {"web-a": "ready", "web-b": "maint", "web-c": "maint"}


async def test_without_haproxy_the_switch_is_docker_only(make_rig: Callable[..., Any]) -> None:
    rig = await started(make_rig, haproxy=False, rng=Ordered("web-a", "web-b"))
    rig.due()
    await rig.settle()
    assert rig.log == [("start", "web-b"), ("stop", "web-a")]
