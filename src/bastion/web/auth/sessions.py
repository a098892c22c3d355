"""Server-side console sessions (ASVS 3.2.1, 3.3.1, 3.3.2).

The cookie carries only a random id; everything else stays in the store, keyed by a hash
of the id. Signing in always makes a new id, signing out deletes the record (so a copied
cookie dies with it), and a session ends after an idle period and after an absolute one.

Each user's sessions are also listed in an index record, so they can be shown and ended
one by one (ASVS 3.3.4). A session is named there by its *handle*, a hash that can
end it through the API but is no cookie. The index is read, changed and written back:
two sign-ins of one user at the same instant on two servers can drop one entry from the
list (that session still works and still ends with "end all sessions").
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
MAX_LISTED = 100  # per user; the oldest entries leave the list first


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


@dataclass(frozen=True)
class SessionInfo:
    handle: str
    user_id: int
    username: str
    created_at: float
    last_seen: float
    client_ip: str
    user_agent: str


def _key(session_id: str) -> str:
    return "session:" + hashlib.sha256(session_id.encode()).hexdigest()


def handle_of(session_id: str) -> str:
    return hashlib.sha256(b"session-handle\x00" + session_id.encode()).hexdigest()[:32]


def _index_key(user_id: int) -> str:
    return f"session-index:{user_id}"


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

    async def create(
        self,
        *,
        user_id: int,
        username: str,
        is_admin: bool,
        client_ip: str = "",
        user_agent: str = "",
    ) -> Session:
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
        index = await self._index(user_id)
        index[handle_of(session.id)] = {
            "key": _key(session.id),
            "ip": client_ip[:64],
            "ua": user_agent[:200],
        }
        await self._write_index(user_id, dict(list(index.items())[-MAX_LISTED:]))
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
        if await self._expired(session, now):
            await self._kv.delete(_key(session_id))
            return None
        if now - session.last_seen >= TOUCH_EVERY_SECONDS:
            session = Session(**{**asdict(session), "last_seen": now})
            await self._save(session, now)
        return session

    async def _expired(self, session: Session, now: float) -> bool:
        return (
            now - session.last_seen >= self._idle
            or now - session.created_at >= self._absolute
            or session.generation != await self._generation(session.user_id)
        )

    async def delete(self, session_id: str) -> None:
        raw = await self._kv.get(_key(session_id))
        await self._kv.delete(_key(session_id))
        try:
            user_id = int(json.loads(raw)["user_id"]) if raw else None
        except (ValueError, TypeError, KeyError):
            user_id = None
        if user_id is not None:
            index = await self._index(user_id)
            if index.pop(handle_of(session_id), None) is not None:
                await self._write_index(user_id, index)

    async def _index(self, user_id: int) -> dict[str, dict[str, str]]:
        raw = await self._kv.get(_index_key(user_id))
        try:
            found = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    async def _write_index(self, user_id: int, index: dict[str, dict[str, str]]) -> None:
        if index:
            await self._kv.set(_index_key(user_id), json.dumps(index).encode(), self._absolute)
        else:
            await self._kv.delete(_index_key(user_id))

    async def list_for(self, user_id: int) -> list[SessionInfo]:
        """The user's live sessions, oldest first (ended ones leave the list here)."""
        index = await self._index(user_id)
        now = self._clock()
        found, dead = [], []
        for handle, entry in index.items():
            raw = await self._kv.get(entry.get("key", ""))
            try:
                session = Session(id="", **json.loads(raw)) if raw else None
            except (ValueError, TypeError):
                session = None
            if session is None or await self._expired(session, now):
                dead.append(handle)
                continue
            found.append(
                SessionInfo(
                    handle,
                    session.user_id,
                    session.username,
                    session.created_at,
                    session.last_seen,
                    entry.get("ip", ""),
                    entry.get("ua", ""),
                )
            )
        if dead:
            await self._write_index(user_id, {k: v for k, v in index.items() if k not in dead})
        return found

    async def end(self, user_id: int, handle: str) -> bool:
        """End one session of `user_id` by its handle; False when there is no such one."""
        index = await self._index(user_id)
        entry = index.pop(handle, None)
        if entry is None:
            return False
        await self._kv.delete(entry.get("key", ""))
        await self._write_index(user_id, index)
        return True

    async def end_all_for(self, user_id: int) -> None:
        """End every session of a user at once, on every server sharing the store."""
        await self._kv.incr(_generation_key(user_id), ttl=10 * 365 * 24 * 3600)
