from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bastion.stores import RateLimiter, StoreUnavailable, open_stores
from tests.services import free_port


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    url = None if request.param == "memory" else request.getfixturevalue("redis_url")
    rl = RateLimiter.for_url(url)
    yield rl
    await rl.aclose()


async def test_allows_the_limit_then_refuses(limiter: RateLimiter) -> None:
    results = [await limiter.hit("3/minute", "login", "10.0.0.1") for _ in range(5)]
    assert results == [True, True, True, False, False]
    assert await limiter.test("3/minute", "login", "10.0.0.1") is False


async def test_retry_after_points_inside_the_window(limiter: RateLimiter) -> None:
    for _ in range(2):
        await limiter.hit("2/minute", "ip", "a")
    assert 1 <= await limiter.retry_after("2/minute", "ip", "a") <= 60


async def test_identifiers_are_counted_separately(limiter: RateLimiter) -> None:
    assert await limiter.hit("1/minute", "ip", "a")
    assert not await limiter.hit("1/minute", "ip", "a")
    assert await limiter.hit("1/minute", "ip", "b")
    assert await limiter.hit("1/minute", "account", "a")


async def test_clear_resets_the_count(limiter: RateLimiter) -> None:
    await limiter.hit("1/minute", "acct", "ada")
    await limiter.clear("1/minute", "acct", "ada")
    assert await limiter.hit("1/minute", "acct", "ada")


async def test_test_does_not_consume(limiter: RateLimiter) -> None:
    for _ in range(5):
        assert await limiter.test("1/minute", "x")
    assert await limiter.hit("1/minute", "x")


async def test_two_limiters_on_one_redis_share_the_count(redis_url: str) -> None:
    # Two server processes hold two limiters: the limit must hold in total.
    first, second = RateLimiter.for_url(redis_url), RateLimiter.for_url(redis_url)
    try:
        allowed = [await (first if i % 2 else second).hit("4/minute", "hook") for i in range(8)]
        assert allowed.count(True) == 4
    finally:
        await first.aclose()
        await second.aclose()


async def test_unreachable_redis_raises_store_unavailable() -> None:
    limiter = RateLimiter.for_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreUnavailable):
            await limiter.hit("1/minute", "x")
    finally:
        await limiter.aclose()


async def test_open_stores_picks_the_backend(redis_url: str) -> None:
    memory, shared, other = open_stores(None), open_stores(redis_url), open_stores(redis_url)
    try:
        assert (memory.backend, shared.backend) == ("memory", "redis")
        await shared.kv.set("k", b"v", ttl=5)
        assert await other.kv.get("k") == b"v"
    finally:
        for stores in (memory, shared, other):
            await stores.aclose()
