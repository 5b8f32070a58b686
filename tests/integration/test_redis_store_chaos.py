"""Fail-open: a private Redis paused (SIGSTOP), killed, restarted and flushed under the store."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from gateway.cache.memory import MemoryStore
from gateway.cache.redis_store import RedisStore
from gateway.cache.tiered import TieredStore
from tests.support.redis import RedisProcess, frozen_gc, open_store

TIMEOUT_MS = 50
COOLDOWN_S = 0.3
SLOW_READ_S = 0.150  # a failed read: the 50 ms budget plus scheduling margin
INSTANT_S = 0.005  # a read refused by the open breaker
CHAOS = {"timeout_ms": TIMEOUT_MS, "breaker_failures": 3, "breaker_cooldown_s": COOLDOWN_S}


@pytest.fixture(autouse=True)
def _no_full_gc() -> Iterator[None]:
    with frozen_gc():
        yield


def breaker_state(store: RedisStore) -> str:
    return store.stats.breaker  # as a plain str: mypy would narrow it between asserts


def _items(count: int) -> list[tuple[str, bytes]]:
    return [(f"key-{i}", f"value-of-key-{i}".encode() * 20) for i in range(count)]


async def _timed(awaitable: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = await awaitable
    return result, time.perf_counter() - start


@pytest.mark.asyncio
async def test_paused_redis_costs_one_budget_then_nothing_then_recovers(private_redis: RedisProcess) -> None:
    items = _items(8)
    keys = [key for key, _ in items]
    values = [value for _, value in items]
    async with open_store(private_redis.url, **CHAOS) as store:
        store.put_many(items, ttl_s=60)
        await store.drain()
        assert await store.get_many(keys) == values

        private_redis.pause()
        try:
            for attempt in range(3):
                found, elapsed = await _timed(store.get_many(keys))
                assert found == [None] * 8
                assert elapsed < SLOW_READ_S, f"read {attempt} took {elapsed * 1000:.1f} ms"
            assert store.stats.errors == 3
            assert breaker_state(store) == "open"
            for _ in range(5):
                found, elapsed = await _timed(store.get_many(keys))
                assert found == [None] * 8
                assert elapsed < INSTANT_S, f"open breaker read took {elapsed * 1000:.2f} ms"
            assert store.stats.errors == 3  # Redis was not touched
            store.put_many(items, ttl_s=60)
            assert store.stats.dropped_writes == 8
        finally:
            private_redis.resume()

        await asyncio.sleep(COOLDOWN_S)
        assert await store.get_many(keys) == values  # the probe succeeds: hits resume
        assert breaker_state(store) == "closed"
        assert await store.get_many(keys) == values


@pytest.mark.asyncio
async def test_many_concurrent_reads_during_a_pause_all_return_within_the_budget(
    private_redis: RedisProcess,
) -> None:
    async with open_store(private_redis.url, timeout_ms=TIMEOUT_MS, breaker_failures=1000) as store:
        store.put_many(_items(1), ttl_s=60)
        await store.drain()
        private_redis.pause()
        try:
            start = time.perf_counter()
            results = await asyncio.gather(*(store.get_many([f"key-{i % 3}"]) for i in range(150)))
            elapsed = time.perf_counter() - start
        finally:
            private_redis.resume()
        print(f"\n150 concurrent reads while paused: {elapsed * 1000:.1f} ms")
        assert results == [[None]] * 150
        assert elapsed < SLOW_READ_S, f"150 concurrent reads took {elapsed * 1000:.1f} ms"
        assert store.stats.errors == 150


@pytest.mark.asyncio
async def test_killed_redis_fails_fast_and_recovers_after_a_restart(private_redis: RedisProcess) -> None:
    items = _items(4)
    keys = [key for key, _ in items]
    async with open_store(private_redis.url, **CHAOS) as store:
        store.put_many(items, ttl_s=60)
        await store.drain()
        private_redis.kill()
        for _ in range(3):
            found, elapsed = await _timed(store.get_many(keys))
            assert found == [None] * 4
            assert elapsed < SLOW_READ_S
        assert breaker_state(store) == "open"
        found, elapsed = await _timed(store.get_many(keys))
        assert elapsed < INSTANT_S and store.stats.errors == 3

        private_redis.restart()  # same port, empty
        await asyncio.sleep(COOLDOWN_S)
        assert await store.get_many(keys) == [None] * 4  # a successful probe: misses, no error
        assert breaker_state(store) == "closed" and store.stats.errors == 3
        store.put_many(items, ttl_s=60)
        await store.drain()
        assert await store.get_many(keys) == [value for _, value in items]


@pytest.mark.asyncio
async def test_killed_redis_failed_probe_waits_another_cooldown(private_redis: RedisProcess) -> None:
    async with open_store(private_redis.url, **CHAOS) as store:
        private_redis.kill()
        for _ in range(3):
            await store.get_many(["k"])
        await asyncio.sleep(COOLDOWN_S)
        await store.get_many(["k"])  # the probe fails
        assert store.stats.errors == 4 and breaker_state(store) == "open"
        found, elapsed = await _timed(store.get_many(["k"]))
        assert found == [None] and elapsed < INSTANT_S and store.stats.errors == 4


@pytest.mark.asyncio
async def test_flushed_redis_means_misses_then_writes_refill(private_redis: RedisProcess) -> None:
    items = _items(6)
    keys = [key for key, _ in items]
    async with open_store(private_redis.url, **CHAOS) as store:
        store.put_many(items, ttl_s=60)
        await store.drain()
        private_redis.flush()
        assert await store.get_many(keys) == [None] * 6
        assert store.stats.errors == 0
        store.put_many(items, ttl_s=60)
        await store.drain()
        assert await store.get_many(keys) == [value for _, value in items]


@pytest.mark.asyncio
async def test_background_write_during_a_pause_never_blocks_or_raises(private_redis: RedisProcess) -> None:
    items = _items(16)
    async with open_store(private_redis.url, **CHAOS) as store:
        assert await store.get_many(["warm-up"]) == [None]
        private_redis.pause()
        try:
            start = time.perf_counter()
            store.put_many(items, ttl_s=60)
            assert time.perf_counter() - start < INSTANT_S
            drain_start = time.perf_counter()
            await store.drain()
            assert time.perf_counter() - drain_start < SLOW_READ_S  # the write gave up within its budget
            assert store.stats.errors == 1
        finally:
            private_redis.resume()
        # The timed-out pipeline may still run once Redis wakes (it was sent): dropped or stored whole.
        found = await store.get_many([key for key, _ in items])
        assert all(value in (None, expected) for value, (_, expected) in zip(found, items, strict=True))
        store.put_many(items, ttl_s=60)
        await store.drain()
        assert await store.get_many([key for key, _ in items]) == [value for _, value in items]


@pytest.mark.asyncio
async def test_a_late_reply_is_never_read_as_another_keys_value(private_redis: RedisProcess) -> None:
    """Replies to timed-out MGETs arrive after the pause; their connections must be gone by then."""
    items = _items(40)
    value_of = dict(items)
    async with open_store(private_redis.url, timeout_ms=TIMEOUT_MS, breaker_failures=1000) as store:
        store.put_many(items, ttl_s=60)
        await store.drain()
        # Several pooled connections, each with an MGET in flight when the server stops.
        private_redis.pause()
        try:
            batches = [[f"key-{j}" for j in range(i, 40, 8)] for i in range(8)]
            results = await asyncio.gather(*(store.get_many(batch) for batch in batches))
            assert all(result == [None] * len(batch) for result, batch in zip(results, batches, strict=True))
        finally:
            private_redis.resume()
        await asyncio.sleep(0.05)  # the late replies are now in flight

        # A read that misses its time budget on a loaded machine is a miss (None), which is
        # allowed; a value of another key never is.
        rng = random.Random(5)
        hits = 0
        for _ in range(60):
            keys = rng.sample(sorted(value_of), rng.randint(1, 12))
            found = await store.get_many(keys)
            assert found == [value_of[key] for key in keys] or found == [None] * len(keys), (keys, found)
            hits += found[0] is not None
        concurrent = [rng.sample(sorted(value_of), 5) for _ in range(20)]
        for keys, found in zip(concurrent, await asyncio.gather(*map(store.get_many, concurrent)), strict=True):
            assert found == [value_of[key] for key in keys] or found == [None] * len(keys), (keys, found)
        assert hits >= 30, f"only {hits} of 60 reads answered after the pause"


@pytest.mark.asyncio
async def test_redis_py_retries_are_off(private_redis: RedisProcess) -> None:
    """The store's client gives up after one socket timeout; redis-py's default client retries."""
    default_client = redis.asyncio.Redis(port=private_redis.port, socket_timeout=TIMEOUT_MS / 1000)
    async with open_store(private_redis.url, timeout_ms=TIMEOUT_MS) as store:
        assert await store.client.ping()
        assert await default_client.ping()
        private_redis.pause()
        try:
            start = time.perf_counter()
            with pytest.raises(redis.exceptions.TimeoutError):
                await store.client.get("k")  # the raw client: no asyncio.timeout around it
            ours = time.perf_counter() - start
            # The default client is still retrying after ten budgets (it gives up after ~4 s).
            with pytest.raises(TimeoutError):  # the builtin: our deadline, not redis-py's error
                async with asyncio.timeout(10 * TIMEOUT_MS / 1000):
                    await default_client.get("k")
        finally:
            private_redis.resume()
            await default_client.aclose()
    assert ours < 2 * TIMEOUT_MS / 1000, f"the store's client took {ours * 1000:.0f} ms: it retried"


@pytest.mark.asyncio
async def test_a_cancelled_probe_hands_the_probe_to_the_next_caller(private_redis: RedisProcess) -> None:
    async with open_store(private_redis.url, **CHAOS) as store:
        store.put_many(_items(1), ttl_s=60)
        await store.drain()
        private_redis.pause()
        try:
            for _ in range(3):
                await store.get_many(["key-0"])
        finally:
            private_redis.resume()
        await asyncio.sleep(COOLDOWN_S)
        probe = asyncio.create_task(store.get_many(["key-0"]))
        await asyncio.sleep(0)  # the probe is out
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert await store.get_many(["key-0"]) == [_items(1)[0][1]]
        assert breaker_state(store) == "closed"


@pytest.mark.asyncio
async def test_tiered_store_serves_l1_while_redis_is_paused(private_redis: RedisProcess) -> None:
    async with open_store(private_redis.url, **CHAOS) as l2:
        tiered = TieredStore(MemoryStore(1 << 20), l2)
        tiered.put_many([("hot", b"in-both")], ttl_s=60)
        await l2.drain()
        private_redis.pause()
        try:
            found, elapsed = await _timed(tiered.get_many(["hot"]))
            assert found == [b"in-both"] and elapsed < INSTANT_S  # L1 alone: Redis not asked
            found, elapsed = await _timed(tiered.get_many(["hot", "cold"]))
            assert found == [b"in-both", None] and elapsed < SLOW_READ_S
            assert tiered.stats.errors == 1 and tiered.stats.hits == 2
        finally:
            private_redis.resume()
