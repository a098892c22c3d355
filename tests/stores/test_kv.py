from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bastion.stores import KeyValueStore, MemoryStore, RedisStore, StoreUnavailable
from tests.services import free_port


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    kv: KeyValueStore
    if request.param == "memory":
        kv = MemoryStore()
    else:
        kv = RedisStore(request.getfixturevalue("redis_url"))
    yield kv
    await kv.aclose()


async def test_set_then_get_returns_the_value(store: KeyValueStore) -> None:
    await store.set("k", b"\x00value\xff", ttl=30)
    assert await store.get("k") == b"\x00value\xff"
    assert await store.get("other") is None


async def test_pop_returns_the_value_only_once(store: KeyValueStore) -> None:
    await store.set("token", b"t", ttl=30)
    assert await store.pop("token") == b"t"
    assert await store.pop("token") is None
    assert await store.get("token") is None


async def test_concurrent_pops_hand_out_a_single_use_token_once(store: KeyValueStore) -> None:
    await store.set("once", b"x", ttl=30)
    results = await asyncio.gather(*(store.pop("once") for _ in range(50)))
    assert results.count(b"x") == 1


async def test_add_sets_only_when_absent(store: KeyValueStore) -> None:
    assert await store.add("lock", b"a", ttl=30) is True
    assert await store.add("lock", b"b", ttl=30) is False
    assert await store.get("lock") == b"a"


async def test_concurrent_adds_have_exactly_one_winner(store: KeyValueStore) -> None:
    wins = await asyncio.gather(*(store.add("event-id", b"1", ttl=30) for _ in range(50)))
    assert wins.count(True) == 1


async def test_delete_removes_the_key(store: KeyValueStore) -> None:
    await store.set("k", b"v", ttl=30)
    await store.delete("k")
    await store.delete("never-there")
    assert await store.get("k") is None


async def test_incr_counts_and_keeps_the_first_ttl(store: KeyValueStore) -> None:
    assert await store.incr("n", ttl=30) == 1
    first = await store.ttl("n")
    assert await store.incr("n", ttl=3000) == 2
    assert await store.incr("n", ttl=3000) == 3
    later = await store.ttl("n")
    assert first is not None and later is not None
    assert later <= first


@pytest.mark.parametrize("ttl", [0, -1, float("nan")])
async def test_non_positive_ttl_is_refused(store: KeyValueStore, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be a positive number"):
        await store.set("k", b"v", ttl=ttl)


async def test_expired_keys_are_never_returned_by_redis(redis_url: str) -> None:
    store = RedisStore(redis_url)
    try:
        await store.set("short", b"v", ttl=0.2)
        await store.incr("count", ttl=0.2)
        assert await store.get("short") == b"v"
        await asyncio.sleep(0.35)
        assert await store.get("short") is None
        assert await store.pop("short") is None
        assert await store.ttl("short") is None
        assert await store.incr("count", ttl=30) == 1
    finally:
        await store.aclose()


async def test_expired_keys_are_never_returned_from_memory() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.set("short", b"v", ttl=5)
    await store.incr("count", ttl=5)
    now[0] += 4.9
    assert await store.get("short") == b"v"
    now[0] += 0.2
    assert await store.get("short") is None
    assert await store.pop("short") is None
    assert await store.add("short", b"again", ttl=5) is True
    assert await store.incr("count", ttl=5) == 1


async def test_memory_store_evicts_expired_then_oldest_when_full() -> None:
    now = [0.0]
    store = MemoryStore(max_entries=3, clock=lambda: now[0])
    await store.set("expiring", b"1", ttl=1)
    await store.set("old", b"2", ttl=100)
    await store.set("mid", b"3", ttl=100)
    now[0] = 2
    await store.set("new", b"4", ttl=100)  # room made by dropping the expired entry
    assert [await store.get(k) for k in ("old", "mid", "new")] == [b"2", b"3", b"4"]
    await store.set("newest", b"5", ttl=100)  # full of live entries: the oldest goes
    assert await store.get("old") is None
    assert await store.get("newest") == b"5"


async def test_keys_are_namespaced_in_redis(redis_url: str) -> None:
    a, b = RedisStore(redis_url, prefix="a:"), RedisStore(redis_url, prefix="b:")
    try:
        await a.set("k", b"from-a", ttl=30)
        assert await b.get("k") is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_unreachable_redis_raises_store_unavailable_without_the_password() -> None:
    store = RedisStore(f"redis://:hunter2pass@127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        for call in (store.ping(), store.get("k"), store.set("k", b"v", ttl=1), store.pop("k")):
            with pytest.raises(StoreUnavailable) as caught:
                await call
            assert "hunter2pass" not in str(caught.value)
    finally:
        await store.aclose()
