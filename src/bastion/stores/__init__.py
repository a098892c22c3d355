from __future__ import annotations

from dataclasses import dataclass

from bastion.stores.base import KeyValueStore, StoreUnavailable
from bastion.stores.memory import MemoryStore
from bastion.stores.ratelimit import RateLimiter
from bastion.stores.redis import RedisStore

__all__ = [
    "KeyValueStore",
    "MemoryStore",
    "RateLimiter",
    "RedisStore",
    "StoreUnavailable",
    "Stores",
    "open_stores",
]


@dataclass
class Stores:
    kv: KeyValueStore
    limiter: RateLimiter
    backend: str

    async def aclose(self) -> None:
        await self.kv.aclose()
        await self.limiter.aclose()


def open_stores(redis_url: str | None) -> Stores:
    if redis_url is None:
        return Stores(MemoryStore(), RateLimiter.for_url(None), "memory")
    return Stores(RedisStore(redis_url), RateLimiter.for_url(redis_url), "redis")
