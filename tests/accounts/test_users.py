from __future__ import annotations

import pytest
from sqlalchemy import select

from bastion.accounts.users import bootstrap_admin, count_users, create_user, normalize_username
from bastion.crypto.passwords import verify_password
from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.db.tables import User
from bastion.errors import Conflict, InvalidInput


@pytest.fixture
async def db(database_url: str):  # type: ignore[no-untyped-def]
    migrations.upgrade(database_url)
    database = Database(database_url)
    yield database
    await database.dispose()


async def test_bootstrap_creates_one_admin_with_a_generated_password(db: Database) -> None:
    generated = await bootstrap_admin(db, "admin", None)
    assert generated is not None and len(generated) >= 20
    async with db.session() as session:
        admin = await session.scalar(select(User))
    assert admin is not None and admin.is_admin and admin.username == "admin"
    assert verify_password(admin.password_hash, generated)
    assert generated not in admin.password_hash


async def test_bootstrap_uses_the_given_password_and_returns_nothing(db: Database) -> None:
    assert await bootstrap_admin(db, "Root", "a given passphrase") is None
    async with db.session() as session:
        admin = await session.scalar(select(User))
    assert admin is not None and admin.username == "root"
    assert verify_password(admin.password_hash, "a given passphrase")


async def test_bootstrap_does_nothing_once_a_user_exists(db: Database) -> None:
    await bootstrap_admin(db, "admin", "first passphrase!")
    assert await bootstrap_admin(db, "other", None) is None
    async with db.session() as session:
        assert await count_users(session) == 1


async def test_duplicate_username_is_a_conflict_and_nothing_is_written(db: Database) -> None:
    async with db.transaction() as session:
        await create_user(session, "ada", "a long passphrase")
    with pytest.raises(Conflict, match="user 'ada' already exists"):
        async with db.transaction() as session:
            await create_user(session, "ADA", "another passphrase")
    async with db.session() as session:
        assert await count_users(session) == 1


@pytest.mark.parametrize("name", ["", " ", "-lead", "a b", "ünï", "x" * 65, "a\nb", "a/b"])
def test_unusable_usernames_are_rejected(name: str) -> None:
    with pytest.raises(InvalidInput, match="username must be"):
        normalize_username(name)
