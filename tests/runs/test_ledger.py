from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.db import Database
from bastion.db.tables import Workspace
from bastion.runs.ledger import Ledger


def add(slug: str) -> Callable[[Session], str]:
    def work(session: Session) -> str:
        session.add(Workspace(slug=slug, name=slug))
        session.flush()
        return slug

    return work


async def slugs(db: Database) -> list[str]:
    async with db.session() as session:
        return sorted(await session.scalars(select(Workspace.slug)))


async def test_concurrent_writes_commit_together_and_each_gets_its_result(
    migrated_db: Database,
) -> None:
    ledger = Ledger(migrated_db)
    results = await asyncio.gather(*(ledger.write(add(f"w{i}")) for i in range(20)))
    assert results == [f"w{i}" for i in range(20)]
    assert len(await slugs(migrated_db)) == 20


async def test_a_bad_write_fails_alone_and_its_batch_still_commits(migrated_db: Database) -> None:
    ledger = Ledger(migrated_db)
    await ledger.write(add("taken"))
    outcomes = await asyncio.gather(
        ledger.write(add("a")),
        ledger.write(add("taken")),
        ledger.write(add("b")),
        return_exceptions=True,
    )
    assert outcomes[0] == "a" and outcomes[2] == "b"
    assert isinstance(outcomes[1], IntegrityError)
    assert await slugs(migrated_db) == ["a", "b", "taken"]


async def test_posted_writes_commit_on_their_own_and_before_later_writes(
    migrated_db: Database,
) -> None:
    ledger = Ledger(migrated_db)
    ledger.post(add("posted"))
    async with asyncio.timeout(5):
        while True:  # nobody waits for a posted write: it must commit by itself
            if "posted" in await slugs(migrated_db):
                break
            await asyncio.sleep(0.01)
    ledger.post(add("first"))
    await ledger.write(add("second"))
    assert await slugs(migrated_db) == ["first", "posted", "second"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_lost_posted_write_is_logged_not_raised(
    migrated_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(migrated_db)
    await ledger.write(add("dup"))
    ledger.post(add("dup"))
    await ledger.write(add("after"))
    assert "run record lost: IntegrityError" in caplog.text
    assert await slugs(migrated_db) == ["after", "dup"]
