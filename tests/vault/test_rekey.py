from __future__ import annotations

import asyncio
import os

import pytest
from sqlalchemy import select, update

from bastion.audit.log import AuditLog
from bastion.audit.verify import verify
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.tables import CredentialField
from bastion.vault.credentials import Vault
from bastion.vault.rekey import rekey, remaining_by_key
from bastion.vault.secret import Secret
from tests.vault.conftest import owner


class Interrupted(Exception):
    pass


OLD, NEW, STRANGER = os.urandom(32), os.urandom(32), os.urandom(32)
VALUES = {
    "alpha": {"username": "svc-alpha", "password": "alpha password 1"},
    "beta": {"username": "svc-beta", "password": "beta password 1"},
    "gamma": {"token": "gamma token 1"},
}
ROTATED = {"token": "gamma token 2"}  # gamma's version 2; version 1 is kept for rollback


def secrets(values: dict[str, str]) -> dict[str, Secret]:
    return {name: Secret(value) for name, value in values.items()}


def vault_with(db: Database, keyring: Keyring) -> Vault:
    return Vault(db, keyring, AuditLog(db, keyring))


async def fill(db: Database, keyring: Keyring) -> dict[str, str]:
    """Three credentials, one rotated: 5 current fields and 1 retired one, 6 in all."""
    vault = vault_with(db, keyring)
    ids = {}
    for name, values in VALUES.items():
        credential = await vault.create(owner(), name=name, kind="secret", fields=secrets(values))
        ids[name] = credential.id
    await vault.rotate(owner(), ids["gamma"], secrets(ROTATED))
    return ids


async def readable(db: Database, keyring: Keyring, ids: dict[str, str]) -> None:
    """Every current version and gamma's retired one opens under `keyring`."""
    vault = vault_with(db, keyring)
    for name, credential_id in ids.items():
        fields = await vault.reveal(owner(), credential_id, reason="rekey test")
        expected = ROTATED if name == "gamma" else VALUES[name]
        assert {k: v.reveal() for k, v in fields.items()} == expected
    async with db.session() as session:
        gamma = await vault.load(session, ids["gamma"])
        retired = await vault.open_fields(session, gamma, version=1)
    assert retired["token"].reveal() == VALUES["gamma"]["token"]


async def kek_ids(db: Database) -> list[str]:
    async with db.session() as session:
        return sorted(await session.scalars(select(CredentialField.kek_id)))


async def rekey_events(db: Database, keyring: Keyring) -> list[tuple[str, str, str]]:
    events = await AuditLog(db, keyring).events()
    return [(e.outcome, e.actor, e.details) for e in events if e.action == "vault.rekey"]


async def test_rekey_moves_every_field_and_the_old_key_can_then_be_removed(db: Database) -> None:
    old = Keyring(OLD)
    ids = await fill(db, old)
    ring = Keyring(NEW, [OLD])
    assert await remaining_by_key(db, ring.active_id) == {old.active_id: 6}

    report = await rekey(db, ring, batch=3)

    assert (report.moved, report.moved_from, report.active_id) == (
        6,
        (old.active_id,),
        ring.active_id,
    )
    assert report.done and report.remaining == {} and report.unreadable == 0
    assert await kek_ids(db) == [ring.active_id] * 6
    await readable(db, ring, ids)
    await readable(db, Keyring(NEW), ids)  # without the old key at all
    assert await rekey_events(db, ring) == [
        (
            "success",
            "cli",
            f'{{"from":["{old.active_id}"],"moved":6,"to":"{ring.active_id}"}}',
        )
    ]
    assert (await verify(db, ring)).ok


async def test_a_second_run_moves_nothing(db: Database) -> None:
    await fill(db, Keyring(OLD))
    ring = Keyring(NEW, [OLD])
    await rekey(db, ring)
    again = await rekey(db, ring)
    assert (again.moved, again.moved_from, again.done) == (0, (), True)
    outcomes = [(outcome, details) for outcome, _, details in await rekey_events(db, ring)]
    assert outcomes[-1] == ("success", f'{{"from":[],"moved":0,"to":"{ring.active_id}"}}')
    assert len(outcomes) == 2  # one record per run


async def test_an_interrupted_run_resumes_where_it_stopped(db: Database) -> None:
    old = Keyring(OLD)
    ids = await fill(db, old)
    ring = Keyring(NEW, [OLD])
    calls: list[tuple[int, int]] = []

    def stop_after_first_batch(done: int, total: int) -> None:
        calls.append((done, total))
        if done:
            raise Interrupted

    with pytest.raises(Interrupted):
        await rekey(db, ring, batch=1, progress=stop_after_first_batch)
    assert calls == [(0, 6), (1, 6)]
    # The first batch committed; everything is readable in the mixed state.
    assert await remaining_by_key(db, ring.active_id) == {old.active_id: 5}
    await readable(db, ring, ids)
    interrupted = (await rekey_events(db, ring))[-1]
    assert interrupted[0] == "failure" and '"moved":1' in interrupted[2]

    calls.clear()
    resumed = await rekey(
        db, ring, batch=2, progress=lambda done, total: calls.append((done, total))
    )
    assert resumed.moved == 5 and resumed.done
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]
    await readable(db, Keyring(NEW), ids)


async def test_reading_and_writing_go_on_while_a_rekey_runs(db: Database) -> None:
    old = Keyring(OLD)
    ids = await fill(db, old)
    ring = Keyring(NEW, [OLD])
    vault = vault_with(db, ring)

    async def reader() -> None:
        for _ in range(5):
            await readable(db, ring, ids)
            await asyncio.sleep(0)

    async def writer() -> None:
        await vault.create(
            owner(), name="delta", kind="secret", fields=secrets({"token": "delta token"})
        )

    report, _, _ = await asyncio.gather(rekey(db, ring, batch=1), reader(), writer())
    assert report.done
    assert set(await kek_ids(db)) == {ring.active_id}  # delta was sealed under NEW already
    await readable(db, Keyring(NEW), ids)


async def test_fields_under_an_unknown_key_are_reported_not_crashed_on(db: Database) -> None:
    stranger = Keyring(STRANGER)
    await fill(db, stranger)  # 6 fields under a key the ring below does not hold
    old = Keyring(OLD)
    vault = vault_with(db, old)
    kept = await vault.create(owner(), name="kept", kind="secret", fields=secrets({"pin": "1234"}))
    ring = Keyring(NEW, [OLD])

    report = await rekey(db, ring, batch=2)

    assert report.moved == 1 and report.moved_from == (old.active_id,)
    assert report.unreadable == 6 and report.unknown_keys == (stranger.active_id,)
    assert report.remaining == {stranger.active_id: 6} and not report.done
    revealed = await vault_with(db, Keyring(NEW)).reveal(owner(), kept.id, reason="rekey test")
    assert revealed["pin"].reveal() == "1234"
    assert (await rekey(db, ring)).unreadable == 6  # still reported, still no crash


async def test_a_damaged_field_is_counted_unreadable_and_the_rest_still_moves(
    db: Database,
) -> None:
    old = Keyring(OLD)
    ids = await fill(db, old)
    async with db.transaction() as session:
        await session.execute(
            update(CredentialField)
            .where(CredentialField.credential_id == ids["alpha"])
            .where(CredentialField.name == "password")
            .values(wrapped_key=b"\x00" * 60)
        )
    ring = Keyring(NEW, [OLD])
    report = await rekey(db, ring, batch=1)
    assert (report.moved, report.unreadable, report.unknown_keys) == (5, 1, ())
    assert report.remaining == {old.active_id: 1}


async def test_batch_must_be_positive(db: Database) -> None:
    with pytest.raises(ValueError, match="batch"):
        await rekey(db, Keyring(NEW), batch=0)
