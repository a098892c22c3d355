"""Console users: creation and the first administrator."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.crypto.passwords import hash_password
from bastion.db import Database
from bastion.db.tables import User
from bastion.db.types import utcnow
from bastion.errors import Conflict, InvalidInput, NotFound

# Usernames show up in logs, audit records and URLs: keep them to a boring alphabet.
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def normalize_username(username: str) -> str:
    name = username.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise InvalidInput(
            "username must be 1-64 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def create_user(
    session: AsyncSession, username: str, password: str, *, is_admin: bool = False
) -> User:
    user = User(
        username=normalize_username(username),
        password_hash=hash_password(password),
        is_admin=is_admin,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"user {user.username!r} already exists") from None
    return user


def generate_password() -> str:
    return secrets.token_urlsafe(18)


async def bootstrap_admin(db: Database, username: str, password: str | None) -> str | None:
    """Create the first administrator when there is no user at all.

    Returns the generated password when none was given (shown once, never stored), or
    None when nothing was generated (a password was given, or users already exist).
    """
    async with db.transaction() as session:
        if await count_users(session) > 0:
            return None
        generated = None
        if password is None:
            password = generated = generate_password()
        await create_user(session, username, password, is_admin=True)
    return generated


async def get_user(session: AsyncSession, username: str) -> User:
    user = await session.scalar(select(User).where(User.username == normalize_username(username)))
    if user is None:
        raise NotFound(f"no user {username.strip().lower()!r}")
    return user


async def list_users(session: AsyncSession) -> list[User]:
    return list(await session.scalars(select(User).order_by(User.username)))


async def set_password(session: AsyncSession, username: str, password: str) -> User:
    user = await get_user(session, username)
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    return user


async def set_disabled(session: AsyncSession, username: str, disabled: bool) -> User:
    user = await get_user(session, username)
    user.disabled = disabled
    return user
