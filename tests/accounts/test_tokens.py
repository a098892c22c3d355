from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from bastion.accounts.rbac import Permission, Principal, Role
from bastion.accounts.tokens import authenticate, create_token, revoke_token, token_hash
from bastion.accounts.users import create_user
from bastion.accounts.workspaces import create_workspace, grant
from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.db.tables import ApiToken, User
from bastion.db.types import utcnow
from bastion.errors import InvalidInput, NotFound, PermissionDenied


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    migrations.upgrade(database_url)
    database = Database(database_url)
    async with database.transaction() as session:
        alice = await create_user(session, "alice", "alice passphrase!")
        await create_user(session, "bob", "bob passphrase!!")
        ops = await create_workspace(session, "ops")
        await create_workspace(session, "other")
        await grant(session, alice.id, ops.id, Role.OPERATOR)
    yield database
    await database.dispose()


async def user(db: Database, name: str) -> User:
    from sqlalchemy import select

    async with db.session() as session:
        found = await session.scalar(select(User).where(User.username == name))
    assert found is not None
    return found


async def test_a_token_is_shown_once_stored_as_a_hash_and_authenticates(db: Database) -> None:
    alice = await user(db, "alice")
    async with db.transaction() as session:
        token, record = await create_token(
            session,
            alice,
            name="ci",
            workspace_id=1,
            role=Role.OPERATOR,
            lifetime=timedelta(days=30),
        )
    assert token.startswith("bst_") and len(token) == 47
    assert record.token_hash == token_hash(token)
    assert token not in record.token_hash
    async with db.transaction() as session:
        principal = await authenticate(session, token)
    assert principal is not None
    assert principal.username == "alice"
    assert principal.can(Permission.DISPATCH_RUNS, 1)
    assert not principal.can(Permission.EDIT_WORKFLOWS, 1)
    assert not principal.can(Permission.READ, 2)  # another workspace


async def test_a_token_cannot_carry_more_than_its_user_holds(db: Database) -> None:
    alice, bob = await user(db, "alice"), await user(db, "bob")
    async with db.transaction() as session:
        with pytest.raises(PermissionDenied):
            await create_token(
                session,
                alice,
                name="x",
                workspace_id=1,
                role=Role.OWNER,
                lifetime=timedelta(days=1),
            )
        with pytest.raises(PermissionDenied):
            await create_token(
                session,
                alice,
                name="x",
                workspace_id=1,
                role=Role.EDITOR,
                lifetime=timedelta(days=1),
            )
        with pytest.raises(PermissionDenied):
            await create_token(
                session, bob, name="x", workspace_id=1, role=Role.VIEWER, lifetime=timedelta(days=1)
            )
        await create_token(
            session, alice, name="x", workspace_id=1, role=Role.VIEWER, lifetime=timedelta(days=1)
        )


@pytest.mark.parametrize(
    ("name", "lifetime"),
    [
        ("", timedelta(days=1)),
        ("x" * 101, timedelta(days=1)),
        ("ok", timedelta(0)),
        ("ok", timedelta(days=400)),
    ],
)
async def test_bad_token_requests_are_refused(db: Database, name: str, lifetime: timedelta) -> None:
    alice = await user(db, "alice")
    async with db.transaction() as session:
        with pytest.raises(InvalidInput):
            await create_token(
                session, alice, name=name, workspace_id=1, role=Role.VIEWER, lifetime=lifetime
            )


async def test_expired_revoked_and_disabled_user_tokens_stop_working(db: Database) -> None:
    alice = await user(db, "alice")
    async with db.transaction() as session:
        token, record = await create_token(
            session, alice, name="t", workspace_id=1, role=Role.VIEWER, lifetime=timedelta(days=1)
        )
    async with db.transaction() as session:
        assert await authenticate(session, token, now=utcnow() + timedelta(days=2)) is None
        assert await authenticate(session, token) is not None
    acting = Principal(user_id=alice.id, username="alice", is_admin=False)
    async with db.transaction() as session:
        await revoke_token(session, record.id, by=acting)
    async with db.transaction() as session:
        assert await authenticate(session, token) is None
    async with db.transaction() as session:
        token2, _ = await create_token(
            session, alice, name="t2", workspace_id=1, role=Role.VIEWER, lifetime=timedelta(days=1)
        )
        (await session.get(User, alice.id)).disabled = True  # type: ignore[union-attr]
    async with db.transaction() as session:
        assert await authenticate(session, token2) is None


async def test_someone_elses_token_cannot_be_revoked_and_looks_absent(db: Database) -> None:
    alice, bob = await user(db, "alice"), await user(db, "bob")
    async with db.transaction() as session:
        _, record = await create_token(
            session, alice, name="t", workspace_id=1, role=Role.VIEWER, lifetime=timedelta(days=1)
        )
    with pytest.raises(NotFound):
        async with db.transaction() as session:
            await revoke_token(session, record.id, by=Principal(bob.id, "bob", False))
    async with db.session() as session:
        assert (await session.get(ApiToken, record.id)).revoked_at is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "presented", ["", "bst_", "bst_" + "A" * 42, "xyz_" + "A" * 43, "bst_" + "é" * 43]
)
async def test_malformed_tokens_are_rejected_without_a_lookup(db: Database, presented: str) -> None:
    async with db.transaction() as session:
        assert await authenticate(session, presented) is None


async def test_an_admins_token_is_limited_to_its_workspace_and_role(db: Database) -> None:
    async with db.transaction() as session:
        root = await create_user(session, "root", "root passphrase!", is_admin=True)
        token, _ = await create_token(
            session, root, name="t", workspace_id=2, role=Role.VIEWER, lifetime=timedelta(days=1)
        )
    async with db.transaction() as session:
        principal = await authenticate(session, token)
    assert principal is not None
    assert principal.can(Permission.READ, 2)
    assert not principal.can(Permission.READ, 1)
    assert not principal.can(Permission.DISPATCH_RUNS, 2)
