from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bastion.stores.base import StoreUnavailable, check_ttl

# Sets the TTL only when the counter is created, atomically with the increment.
_INCR_WITH_TTL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


def _ms(ttl: float) -> int:
    check_ttl(ttl)
    return max(1, round(ttl * 1000))


def _as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


class RedisStore:
    """Store shared by every Bastion process through one Redis."""

    def __init__(self, url: str, *, prefix: str = "bastion:", timeout: float = 2.0) -> None:
        self._redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=False
        )
        self._prefix = prefix
        self._incr = self._redis.register_script(_INCR_WITH_TTL)

    def _key(self, key: str) -> str:
        return self._prefix + key

    @staticmethod
    def _unavailable(exc: RedisError) -> StoreUnavailable:
        # The exception class only: redis-py messages can carry the host and, for some
        # errors, parts of the URL.
        return StoreUnavailable(f"redis unavailable ({type(exc).__name__})")

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self._key(key))
        except RedisError as exc:
            raise self._unavailable(exc) from None
        return _as_bytes(value)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self._redis.set(self._key(key), value, px=_ms(ttl))
        except RedisError as exc:
            raise self._unavailable(exc) from None

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        try:
            return bool(await self._redis.set(self._key(key), value, px=_ms(ttl), nx=True))
        except RedisError as exc:
            raise self._unavailable(exc) from None

    async def pop(self, key: str) -> bytes | None:
        try:
            value = await self._redis.getdel(self._key(key))
        except RedisError as exc:
            raise self._unavailable(exc) from None
        return _as_bytes(value)

    async def delete(self, key: str) -> None:
        try:
            await self._redis.delete(self._key(key))
        except RedisError as exc:
            raise self._unavailable(exc) from None

    async def incr(self, key: str, ttl: float) -> int:
        try:
            return int(await self._incr(keys=[self._key(key)], args=[_ms(ttl)]))
        except RedisError as exc:
            raise self._unavailable(exc) from None

    async def ttl(self, key: str) -> float | None:
        try:
            remaining = int(await self._redis.pttl(self._key(key)))
        except RedisError as exc:
            raise self._unavailable(exc) from None
        return None if remaining < 0 else remaining / 1000

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise self._unavailable(exc) from None

    async def aclose(self) -> None:
        await self._redis.aclose()
