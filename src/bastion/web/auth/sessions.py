"""Server-side console sessions (ASVS 3.2.1, 3.3.1, 3.3.2).

The cookie carries only a random id; everything else stays in the store, keyed by a hash
of the id. Signing in always makes a new id, signing out deletes the record (so a copied
cookie dies with it), and a session ends after an idle period and after an absolute one.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from bastion.stores import KeyValueStore

SECURE_COOKIE = "__Host-bastion_session"
PLAIN_COOKIE = "bastion_session"
_ID_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
# Refresh the idle deadline at most this often, not on every request.
TOUCH_EVERY_SECONDS = 60


@dataclass(frozen=True)
class Session:
    id: str
    user_id: int
    username: str
    is_admin: bool
    csrf_token: str
    created_at: float
    last_seen: float
    generation: int


def _key(session_id: str) -> str:
    return "session:" + hashlib.sha256(session_id.encode()).hexdigest()


def _generation_key(user_id: int) -> str:
    return f"session-generation:{user_id}"


class SessionManager:
    def __init__(
        self,
        kv: KeyValueStore,
        *,
        idle_seconds: float,
        absolute_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kv = kv
        self._idle = idle_seconds
        self._absolute = absolute_seconds
        self._clock = clock

    async def _generation(self, user_id: int) -> int:
        raw = await self._kv.get(_generation_key(user_id))
        return int(raw) if raw else 0

    def _ttl(self, session: Session, now: float) -> float:
        return max(0.001, min(self._idle, session.created_at + self._absolute - now))

    async def _save(self, session: Session, now: float) -> None:
        record = {k: v for k, v in asdict(session).items() if k != "id"}
        await self._kv.set(_key(session.id), json.dumps(record).encode(), self._ttl(session, now))

    async def create(self, *, user_id: int, username: str, is_admin: bool) -> Session:
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(32),
            user_id=user_id,
            username=username,
            is_admin=is_admin,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen=now,
            generation=await self._generation(user_id),
        )
        await self._save(session, now)
        return session

    async def load(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value, or None (unknown, expired, ended, malformed)."""
        if session_id is None or not _ID_SHAPE.fullmatch(session_id):
            return None
        raw = await self._kv.get(_key(session_id))
        if raw is None:
            return None
        try:
            session = Session(id=session_id, **json.loads(raw))
        except (ValueError, TypeError):
            await self._kv.delete(_key(session_id))
            return None
        now = self._clock()
        expired = (
            now - session.last_seen >= self._idle
            or now - session.created_at >= self._absolute
            or session.generation != await self._generation(session.user_id)
        )
        if expired:
            await self._kv.delete(_key(session_id))
            return None
        if now - session.last_seen >= TOUCH_EVERY_SECONDS:
            session = Session(**{**asdict(session), "last_seen": now})
            await self._save(session, now)
        return session

    async def delete(self, session_id: str) -> None:
        await self._kv.delete(_key(session_id))

    async def end_all_for(self, user_id: int) -> None:
        """End every session of a user at once, on every server sharing the store."""
        await self._kv.incr(_generation_key(user_id), ttl=10 * 365 * 24 * 3600)
