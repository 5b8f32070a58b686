"""RedisStore and TieredStore semantics against a real Redis (the shared test server)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import pytest
import redis

from gateway.cache.memory import MemoryStore
from gateway.cache.tiered import TieredStore
from tests.support.redis import frozen_gc, open_store

# These tests are about semantics, not the fail-open budget: a loaded CI machine must not
# turn their reads and writes into timeouts (misses).
ROOMY = {"timeout_ms": 1000}


def _items(count: int, size: int, tag: str = "") -> list[tuple[str, bytes]]:
    # Each value names its key, so any mix-up between keys would show.
    return [(f"k{i}", (f"{tag}k{i}:".encode() + os.urandom(size))[:size]) for i in range(count)]


@pytest.mark.asyncio
async def test_round_trip_misses_and_stats(redis_url: str) -> None:
    async with open_store(redis_url, **ROOMY) as store:
        assert store.name == "redis"
        binary = bytes(range(256)) * 6  # every byte value survives
        store.put_many([("a", binary), ("b", b"")], ttl_s=60)
        store.put_many([], ttl_s=60)
        await store.drain()
        assert await store.get_many(["a", "missing", "b", "a"]) == [binary, None, b"", binary]
        assert await store.get_many([]) == []
        stats = store.stats
        assert (stats.hits, stats.misses, stats.errors, stats.dropped_writes) == (3, 1, 0, 0)
        assert stats.bytes_read == 2 * len(binary)
        assert stats.bytes_written == len(binary)
        assert stats.breaker == "closed"


@pytest.mark.asyncio
async def test_keys_carry_the_prefix_and_the_ttl(redis_url: str) -> None:
    async with open_store(redis_url, **ROOMY) as store:
        store.put_many([("k", b"v")], ttl_s=300)
        await store.drain()
        raw = redis.Redis.from_url(redis_url)
        try:
            names = list(raw.scan_iter(match=f"{store.key_prefix}*"))
            assert names == [f"{store.key_prefix}k".encode()]
            assert 290 <= int(raw.ttl(names[0])) <= 300
        finally:
            raw.close()


@pytest.mark.asyncio
async def test_ttl_expiry_in_redis_and_in_the_tiered_store(redis_url: str) -> None:
    async with open_store(redis_url, **ROOMY) as store:
        tiered = TieredStore(MemoryStore(1 << 20), store)
        store.put_many([("r", b"redis-only")], ttl_s=1)
        tiered.put_many([("t", b"both-tiers")], ttl_s=1)
        await store.drain()
        assert await store.get_many(["r"]) == [b"redis-only"]
        assert await tiered.l1.get_many(["t"]) == [b"both-tiers"]
        await asyncio.sleep(1.1)
        assert await store.get_many(["r", "t"]) == [None, None]
        assert await tiered.get_many(["t"]) == [None]


@pytest.mark.asyncio
async def test_large_batches_and_overwrites(redis_url: str) -> None:
    async with open_store(redis_url, **ROOMY) as store:
        first = _items(600, 1536, "first:")  # more than one write pipeline (WRITE_CHUNK)
        store.put_many(first, ttl_s=60)
        await store.drain()
        second = _items(300, 1536, "second:")
        store.put_many(second, ttl_s=60)
        await store.drain()
        expected = [value for _, value in second] + [value for _, value in first[300:]]
        assert await store.get_many([key for key, _ in first]) == expected
        assert store.stats.errors == 0


@pytest.mark.asyncio
async def test_pending_writes_are_bounded(redis_url: str) -> None:
    async with open_store(redis_url, max_pending_writes=4, **ROOMY) as store:
        store.put_many(_items(10, 8), ttl_s=60)
        assert store.stats.dropped_writes == 6
        await store.drain()
        found = await store.get_many([f"k{i}" for i in range(10)])
        assert [value is not None for value in found] == [True] * 4 + [False] * 6
        store.put_many(_items(3, 8), ttl_s=60)  # room again once the writes are done
        assert store.stats.dropped_writes == 6


@pytest.mark.asyncio
async def test_tiered_reads_l1_first_and_fills_it_from_l2(redis_url: str) -> None:
    async with open_store(redis_url, **ROOMY) as l2:
        tiered = TieredStore(MemoryStore(1 << 20), l2)
        assert tiered.name == "tiered"
        assert tiered.tiers() == [("memory", tiered.l1.stats), ("redis", l2.stats)]
        assert await tiered.warm_up() is True  # Redis answered
        tiered.put_many([("both", b"1")], ttl_s=60)
        l2.put_many([("remote", b"2")], ttl_s=60)
        await l2.drain()

        assert await tiered.get_many(["both"]) == [b"1"]
        assert l2.stats.hits + l2.stats.misses == 0  # served by L1 alone

        assert await tiered.get_many(["both", "remote", "none"]) == [b"1", b"2", None]
        assert (l2.stats.hits, l2.stats.misses) == (1, 1)  # L2 asked only for L1's misses
        assert await tiered.l1.get_many(["remote"]) == [b"2"]  # filled into L1

        stats = tiered.stats
        assert stats.hits == tiered.l1.stats.hits + l2.stats.hits
        assert stats.misses == 1
        assert stats.breaker == "closed" and stats.errors == 0
        with pytest.raises(AttributeError):
            tiered.stats = stats
        await tiered.aclose()


@pytest.mark.asyncio
async def test_healthy_mget_latency(redis_url: str) -> None:
    """64 keys of ~1.5 KB (a 384-dim float32 vector and header): the fully cached batch."""
    async with open_store(redis_url, **ROOMY) as store:
        items = _items(64, 1546)
        keys = [key for key, _ in items]
        store.put_many(items, ttl_s=60)
        await store.drain()
        for _ in range(20):
            await store.get_many(keys)
        times = []
        with frozen_gc():
            for _ in range(300):
                start = time.perf_counter()
                values = await store.get_many(keys)
                times.append(time.perf_counter() - start)
        assert values == [value for _, value in items]
        times.sort()
        p50, p99 = statistics.median(times) * 1000, times[int(len(times) * 0.99)] * 1000
        print(f"\nhealthy MGET of 64 x 1.5 KB: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        assert p99 < 20  # loose: shared CI machines; the measured figure is printed
