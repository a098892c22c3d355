from __future__ import annotations

import time
from collections.abc import Callable

from bastion.stores.base import check_ttl

DEFAULT_MAX_ENTRIES = 100_000


class MemoryStore:
    """In-process store for a single server; bounded so a flood cannot exhaust memory."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._data: dict[str, tuple[float, bytes]] = {}
        self._max_entries = max_entries
        self._clock = clock

    def _live(self, key: str) -> tuple[float, bytes] | None:
        entry = self._data.get(key)
        if entry is not None and entry[0] <= self._clock():
            del self._data[key]
            return None
        return entry

    def _make_room(self) -> None:
        if len(self._data) < self._max_entries:
            return
        now = self._clock()
        for key in [k for k, (expires, _) in self._data.items() if expires <= now]:
            del self._data[key]
        while len(self._data) >= self._max_entries:
            del self._data[next(iter(self._data))]  # oldest inserted first

    def _put(self, key: str, value: bytes, ttl: float) -> None:
        check_ttl(ttl)
        self._data.pop(key, None)
        self._make_room()
        self._data[key] = (self._clock() + ttl, value)

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        return entry[1] if entry else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._put(key, value, ttl)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        check_ttl(ttl)
        if self._live(key) is not None:
            return False
        self._put(key, value, ttl)
        return True

    async def pop(self, key: str) -> bytes | None:
        entry = self._live(key)
        if entry is None:
            return None
        del self._data[key]
        return entry[1]

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def incr(self, key: str, ttl: float) -> int:
        check_ttl(ttl)
        entry = self._live(key)
        if entry is None:
            self._put(key, b"1", ttl)
            return 1
        count = int(entry[1]) + 1
        self._data[key] = (entry[0], str(count).encode())
        return count

    async def ttl(self, key: str) -> float | None:
        entry = self._live(key)
        return None if entry is None else entry[0] - self._clock()

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._data.clear()
