"""The ephemeral key-value store: sessions, one-time tokens, captchas, locks.

Memory in one process, or Redis shared by every Bastion process. Values are bytes; every
key expires.
"""

from __future__ import annotations

from typing import Protocol

from bastion.errors import Unavailable


class StoreUnavailable(Unavailable):
    """The store's backend cannot be reached."""


class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Set only if absent; True when this call set it."""
        ...

    async def pop(self, key: str) -> bytes | None:
        """Get and delete in one step: a single-use value is handed out at most once."""
        ...

    async def delete(self, key: str) -> None: ...

    async def incr(self, key: str, ttl: float) -> int:
        """Count up; the TTL starts with the first increment and is not extended."""
        ...

    async def ttl(self, key: str) -> float | None: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError("ttl must be a positive number of seconds")
