"""Checking a username and password without telling which one was wrong, or how fast."""

from __future__ import annotations

import asyncio
import functools
import time

from sqlalchemy import select

from bastion.accounts.users import normalize_username
from bastion.crypto.passwords import hash_password, verify_password
from bastion.db import Database
from bastion.db.tables import User
from bastion.errors import InvalidInput

# argon2id with 64 MiB per hash: without a bound, a flood of sign-ins exhausts CPU and
# memory. Waiting callers queue instead.
HASHING_SLOTS = 2


@functools.cache
def _dummy_hash() -> str:
    return hash_password("a password that is never anybody's")


class CredentialChecker:
    def __init__(self, db: Database, *, slots: int = HASHING_SLOTS) -> None:
        self._db = db
        self._slots = asyncio.Semaphore(slots)
        self._typical_seconds = 0.1

    async def _verify(self, password_hash: str, password: str) -> bool:
        async with self._slots:
            started = time.perf_counter()
            ok = await asyncio.to_thread(verify_password, password_hash, password)
            elapsed = time.perf_counter() - started
        self._typical_seconds = 0.9 * self._typical_seconds + 0.1 * elapsed
        return ok

    async def pretend(self) -> None:
        """Take as long as a typical check without spending CPU on one.

        Used when the captcha already failed: the answer must not arrive sooner (that
        would tell a bot its captcha guess was wrong), but hashing a password for every
        bot request would hand the CPU to the flood.
        """
        await asyncio.sleep(self._typical_seconds)

    async def check(self, username: str, password: str) -> User | None:
        """The active user with this name and password, else None.

        Unknown and disabled users cost one full hash too, so timing does not reveal
        which accounts exist.
        """
        try:
            name = normalize_username(username)
        except InvalidInput:
            name = None
        user = None
        if name is not None:
            async with self._db.session() as session:
                user = await session.scalar(select(User).where(User.username == name))
        if user is None or user.disabled:
            await self._verify(_dummy_hash(), password)
            return None
        return user if await self._verify(user.password_hash, password) else None
