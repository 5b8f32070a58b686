"""The in-process LRU store."""

from __future__ import annotations

import pytest

from gateway.cache.memory import MemoryStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- MemoryStore --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_memory_round_trip_misses_and_stats() -> None:
    store = MemoryStore(1024)
    assert store.name == "memory"
    store.put_many([("a", b"12345"), ("b", b"xy")], ttl_s=60)
    assert await store.get_many(["a", "missing", "b", "a"]) == [b"12345", None, b"xy", b"12345"]
    assert await store.get_many([]) == []
    stats = store.stats
    assert (stats.hits, stats.misses, stats.errors) == (3, 1, 0)
    assert stats.bytes_read == 5 + 2 + 5
    assert stats.bytes_written == 7
    assert (stats.entries, stats.size_bytes) == (2, 1 + 5 + 1 + 2)


@pytest.mark.asyncio
async def test_memory_replacing_a_value_keeps_the_size_right() -> None:
    store = MemoryStore(1024)
    store.put_many([("k", b"a" * 100)], ttl_s=60)
    store.put_many([("k", b"b" * 10)], ttl_s=60)
    assert await store.get_many(["k"]) == [b"b" * 10]
    assert (store.stats.entries, store.stats.size_bytes) == (1, 11)


@pytest.mark.asyncio
async def test_memory_ttl_expiry_is_a_miss_and_frees_the_entry() -> None:
    clock = FakeClock()
    store = MemoryStore(1024, clock)
    store.put_many([("short", b"1"), ("long", b"2")], ttl_s=1)
    store.put_many([("long", b"2")], ttl_s=10)
    clock.now += 0.99
    assert await store.get_many(["short"]) == [b"1"]
    clock.now += 0.01
    assert await store.get_many(["short", "long"]) == [None, b"2"]
    assert (store.stats.entries, store.stats.size_bytes) == (1, 5)


@pytest.mark.asyncio
async def test_memory_evicts_least_recently_used_by_bytes() -> None:
    store = MemoryStore(3 * (2 + 8))  # three 10-byte entries
    store.put_many([("k1", b"1" * 8), ("k2", b"2" * 8), ("k3", b"3" * 8)], ttl_s=60)
    await store.get_many(["k1"])  # k1 is now the most recently used; k2 the least
    store.put_many([("k4", b"4" * 8)], ttl_s=60)
    assert await store.get_many(["k1", "k2", "k3", "k4"]) == [b"1" * 8, None, b"3" * 8, b"4" * 8]
    assert store.stats.size_bytes == 30 and store.stats.entries == 3
    store.put_many([("big", b"x" * 17)], ttl_s=60)  # 20 bytes: two entries make room
    assert await store.get_many(["k3", "k1", "k4", "big"]) == [None, None, b"4" * 8, b"x" * 17]
    assert store.stats.size_bytes == 30 and store.stats.entries == 2


@pytest.mark.asyncio
async def test_memory_does_not_store_a_value_larger_than_the_whole_store() -> None:
    store = MemoryStore(100)
    store.put_many([("small", b"s")], ttl_s=60)
    store.put_many([("small", b"x" * 200), ("huge", b"y" * 100)], ttl_s=60)
    # Not stored, evicts nothing else, and the old value of a replaced key is gone.
    assert await store.get_many(["small", "huge"]) == [None, None]
    assert (store.stats.entries, store.stats.size_bytes) == (0, 0)
    store.put_many([("fits", b"z" * 95)], ttl_s=60)
    assert await store.get_many(["fits"]) == [b"z" * 95]


@pytest.mark.asyncio
async def test_memory_with_zero_bytes_stores_nothing() -> None:
    store = MemoryStore(0)
    store.put_many([("k", b"v")], ttl_s=60)
    assert await store.get_many(["k"]) == [None]
    await store.aclose()


@pytest.mark.asyncio
async def test_memory_is_one_tier_with_nothing_to_warm_up() -> None:
    store = MemoryStore(1024)
    store.put_many([("a", b"1")], ttl_s=60)
    assert store.tiers() == [("memory", store.stats)]
    assert store.tiers()[0][1].entries == 1
    assert await store.warm_up() is True
