"""Rate limits with the `limits` library, in memory or in Redis (shared by all servers).

Moving window: a burst straddling a window boundary cannot get twice the limit through,
as it can with fixed windows; both the memory and the Redis storage support it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable
from typing import TypeVar

from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from bastion.stores.base import StoreUnavailable

T = TypeVar("T")


class RateLimiter:
    def __init__(self, storage: Storage, pool: ConnectionPool | None = None) -> None:
        self._storage = storage
        self._pool = pool
        self._limiter = MovingWindowRateLimiter(storage)

    @classmethod
    def for_url(cls, redis_url: str | None) -> RateLimiter:
        if redis_url is None:
            return cls(MemoryStorage())
        # Our own pool, so the connections can be closed on shutdown (limits cannot).
        pool = ConnectionPool.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        storage = RedisStorage(
            "async+" + redis_url,
            implementation="redispy",
            connection_pool=pool,  # type: ignore[arg-type]  # limits types options narrowly
            key_prefix="bastion-limits",
        )
        return cls(storage, pool)

    async def _call(self, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except RedisError as exc:
            raise StoreUnavailable(f"redis unavailable ({type(exc).__name__})") from None

    async def hit(self, limit: str, *identifiers: str) -> bool:
        return await self._call(self._limiter.hit(parse(limit), *identifiers))

    async def test(self, limit: str, *identifiers: str) -> bool:
        return await self._call(self._limiter.test(parse(limit), *identifiers))

    async def retry_after(self, limit: str, *identifiers: str) -> int:
        """Whole seconds (at least 1) until a hit would be allowed again."""
        stats = await self._call(self._limiter.get_window_stats(parse(limit), *identifiers))
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def clear(self, limit: str, *identifiers: str) -> None:
        await self._call(self._limiter.clear(parse(limit), *identifiers))

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()
