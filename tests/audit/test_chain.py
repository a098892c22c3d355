from __future__ import annotations

import asyncio
import os

import pytest
from sqlalchemy import delete, update

from bastion.audit.chain import Event, checkpoint_from, hash_value, sign_checkpoint
from bastion.audit.log import AuditLog
from bastion.audit.verify import verify
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.tables import AuditCursor, AuditEvent
from bastion.db.types import utcnow


async def fill(audit: AuditLog, count: int = 6) -> None:
    for n in range(count):
        await audit.record(Event("test.event", f"user:u{n}", target=f"t{n}", details={"n": n}))


async def test_an_untouched_chain_verifies(audit: AuditLog, db: Database, keyring: Keyring) -> None:
    await fill(audit)
    verdict = await verify(db, keyring)
    assert verdict.ok and verdict.checked == 6 and verdict.head == 6


async def test_a_modified_record_is_named(audit: AuditLog, db: Database, keyring: Keyring) -> None:
    await fill(audit)
    async with db.transaction() as session:
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor="user:x"))
    verdict = await verify(db, keyring)
    assert not verdict.ok and verdict.first_bad_seq == 3 and "modified" in verdict.problem


async def test_modified_details_are_detected(
    audit: AuditLog, db: Database, keyring: Keyring
) -> None:
    await fill(audit)
    async with db.transaction() as session:
        await session.execute(
            update(AuditEvent).where(AuditEvent.seq == 4).values(details='{"n":40}')
        )
    assert (await verify(db, keyring)).first_bad_seq == 4


async def test_a_deleted_record_is_named(audit: AuditLog, db: Database, keyring: Keyring) -> None:
    await fill(audit)
    async with db.transaction() as session:
        await session.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
    verdict = await verify(db, keyring)
    assert not verdict.ok and verdict.first_bad_seq == 2


async def test_an_inserted_record_is_named(audit: AuditLog, db: Database, keyring: Keyring) -> None:
    await fill(audit)
    async with db.transaction() as session:
        rows = (await session.scalars(AuditEvent.__table__.select())).all()
        # Shift 4.. up by one and forge a record at 4 that points at 3's hash.
        for seq in range(6, 3, -1):
            await session.execute(
                update(AuditEvent).where(AuditEvent.seq == seq).values(seq=seq + 1)
            )
        third = await session.get(AuditEvent, 3)
        assert third is not None and rows
        session.add(
            AuditEvent(
                seq=4,
                time=utcnow(),
                actor="user:mallory",
                action="test.event",
                target="",
                outcome="success",
                reason="",
                client_ip="",
                request_id="",
                details="{}",
                key_id=third.key_id,
                prev_hash=third.hash,
                hash="0" * 64,
            )
        )
    verdict = await verify(db, keyring)
    assert not verdict.ok and verdict.first_bad_seq == 4


async def test_reordered_records_are_named(audit: AuditLog, db: Database, keyring: Keyring) -> None:
    await fill(audit)
    async with db.transaction() as session:
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(seq=-2))
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(seq=2))
        await session.execute(update(AuditEvent).where(AuditEvent.seq == -2).values(seq=3))
    verdict = await verify(db, keyring)
    assert not verdict.ok and verdict.first_bad_seq == 2


async def test_a_truncated_tail_is_caught_by_a_signed_checkpoint(
    audit: AuditLog, db: Database, keyring: Keyring
) -> None:
    await fill(audit)
    head = (await audit.events(after=5))[0]
    point = checkpoint_from(keyring, sign_checkpoint(keyring, 6, head.hash, utcnow()).as_dict())
    async with db.transaction() as session:
        await session.execute(delete(AuditEvent).where(AuditEvent.seq >= 5))
    assert (await verify(db, keyring)).ok  # the chain alone cannot tell
    verdict = await verify(db, keyring, [point])
    assert not verdict.ok and verdict.first_bad_seq == 5 and "tail" in verdict.problem


async def test_a_truncated_tail_is_caught_by_an_exporter_cursor(
    audit: AuditLog, db: Database, keyring: Keyring
) -> None:
    await fill(audit)
    async with db.transaction() as session:
        session.add(AuditCursor(exporter="jsonl", seq=6))
        await session.execute(delete(AuditEvent).where(AuditEvent.seq == 6))
    verdict = await verify(db, keyring)
    assert not verdict.ok and verdict.first_bad_seq == 6


def test_a_forged_checkpoint_is_refused(keyring: Keyring) -> None:
    genuine = sign_checkpoint(keyring, 6, "ab" * 32, utcnow()).as_dict()
    with pytest.raises(ValueError, match="signature"):
        checkpoint_from(keyring, {**genuine, "seq": 3})


async def test_records_from_a_key_that_is_not_configured_are_reported(
    audit: AuditLog, db: Database, keyring: Keyring
) -> None:
    await fill(audit, 2)
    verdict = await verify(db, Keyring(os.urandom(32)))
    assert not verdict.ok and verdict.first_bad_seq == 1 and "not configured" in verdict.problem


async def test_concurrent_writers_keep_one_unbroken_chain(
    db: Database, keyring: Keyring, database_url: str
) -> None:
    second = Database(database_url)  # another pool, as another server process would have
    try:
        logs = [AuditLog(db, keyring), AuditLog(second, keyring)]
        await asyncio.gather(
            *(logs[n % 2].record(Event("test.concurrent", f"w{n}")) for n in range(60))
        )
    finally:
        await second.dispose()
    verdict = await verify(db, keyring)
    assert verdict.ok and verdict.head == 60


def test_sensitive_values_hash_to_a_stable_searchable_form(keyring: Keyring) -> None:
    first, again = hash_value(keyring, "s3cr3t value"), hash_value(keyring, "s3cr3t value")
    assert first == again and first.startswith("hmac-sha256:") and "s3cr3t" not in first
    assert hash_value(Keyring(os.urandom(32)), "s3cr3t value") != first
