"""Rotation state on SQLite and PostgreSQL: rows per configured pool, leases, control
actions with their audit record in one commit, history, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bastion.audit.chain import Event
from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.errors import NotFound
from bastion.rotation.controls import Action, Control
from bastion.rotation.errors import TransitionRefused
from bastion.rotation.pools import PoolConfig
from bastion.rotation.state import ERRORS_KEPT, Outcome, RotationStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WEB = PoolConfig(name="web", replicas=("web-a", "web-b"))


@pytest.fixture
async def store(migrated_db: Database, keyring: Keyring) -> RotationStore:
    store = RotationStore(migrated_db, AuditLog(migrated_db, keyring))
    await store.ensure([WEB])
    return store


def by(actor: str) -> object:
    def event(after: Control) -> Event:
        return Event("rotation.test", actor, details={"state": after.state.value})

    return event


async def test_ensure_adds_pools_and_replicas_once_and_keeps_their_state(
    store: RotationStore,
) -> None:
    await store.activate("web", "web-a", T0)
    await store.ensure([WEB, PoolConfig(name="api", replicas=("api-1", "api-2"))])
    assert [p.name for p in await store.pools()] == ["api", "web"]
    assert (await store.pool("web")).active_replica == "web-a"
    replicas = await store.replicas("web")
    assert replicas["web-a"].activations == 1
    assert replicas["web-a"].last_activated_at == T0
    with pytest.raises(NotFound):
        await store.pool("nope")


async def test_a_lease_is_held_by_one_owner_until_it_lapses(store: RotationStore) -> None:
    assert await store.claim("web", "one", T0, T0 + timedelta(seconds=30))
    assert await store.claim("web", "one", T0, T0 + timedelta(seconds=60))  # renewal
    assert not await store.claim("web", "two", T0 + timedelta(seconds=59), T0)
    assert await store.claim("web", "two", T0 + timedelta(seconds=61), T0 + timedelta(minutes=2))
    await store.release("web", "one")  # not the holder: nothing happens
    assert not await store.claim("web", "one", T0 + timedelta(seconds=62), T0)
    await store.release("web", "two")
    assert await store.claim("web", "one", T0 + timedelta(seconds=62), T0)


async def test_an_action_commits_with_its_audit_record_and_a_refusal_changes_nothing(
    store: RotationStore,
) -> None:
    row = await store.control("web", Action.PAUSE, force=False, event=by("user:olive"))  # type: ignore[arg-type]
    assert row.state == "paused"
    (event,) = await store.audit.events()
    assert (event.action, event.actor, json.loads(event.details)) == (
        "rotation.test",
        "user:olive",
        {"state": "paused"},
    )
    with pytest.raises(TransitionRefused, match="already paused"):
        await store.control("web", Action.PAUSE, force=False, event=by("user:olive"))  # type: ignore[arg-type]
    assert len(await store.audit.events()) == 1
    row = await store.control("web", Action.ROTATE, force=True, event=by("user:vic"))  # type: ignore[arg-type]
    assert (row.pending_action, row.pending_by) == ("rotate", "user:vic")


async def test_finish_keeps_history_counters_and_the_last_errors(store: RotationStore) -> None:
    ok = Outcome("web", "schedule", "system:rotation", "make_before_break", "web-a", T0)
    ok.to_replica, ok.switch_seconds, ok.traffic_seconds = "web-b", 1.5, 0.7
    await store.finish(ok, finished_at=T0 + timedelta(seconds=2), next_at=T0 + timedelta(hours=1))
    for n in range(ERRORS_KEPT + 2):
        failed = Outcome("web", "schedule", "system:rotation", "make_before_break", "web-b", T0)
        failed.error = f"no replica became healthy #{n}"
        failed.skipped = [{"replica": "web-a", "reason": "not healthy within 5 s"}]
        await store.finish(failed, finished_at=T0 + timedelta(seconds=3 + n), next_at=None)
    row = await store.pool("web")
    assert row.rotation_count == 1
    assert row.last_rotation_at == T0 + timedelta(seconds=2)
    errors = json.loads(row.last_errors)
    assert len(errors) == ERRORS_KEPT
    assert errors[-1]["message"] == f"no replica became healthy #{ERRORS_KEPT + 1}"
    assert (await store.replicas("web"))["web-a"].last_error == "not healthy within 5 s"
    page = await store.history("web", limit=5)
    assert [r.outcome for r in page] == ["failed"] * 5
    rest = await store.history("web", before=page[-1].id, limit=100)
    assert len(page) + len(rest) == ERRORS_KEPT + 3
    assert (rest[-1].to_replica, rest[-1].switch_seconds) == ("web-b", 1.5)
    actions = [e.action for e in await store.audit.events()]
    assert actions == ["rotation.switch"] + ["rotation.failed"] * (ERRORS_KEPT + 2)


async def test_a_persisting_error_is_counted_not_repeated(store: RotationStore) -> None:
    for n in range(3):
        await store.error("web", "cannot reach the docker proxy", T0 + timedelta(seconds=n))
    (error,) = json.loads((await store.pool("web")).last_errors)
    assert error["count"] == 3
    assert error["at"] == (T0 + timedelta(seconds=2)).isoformat()
