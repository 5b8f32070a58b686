"""The store on a real three-master Redis Cluster and behind a real Redis Sentinel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from tests.support.redis import PrivateCluster, PrivateSentinel, open_store


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    nodes = PrivateCluster()
    try:
        yield nodes.start()
    finally:
        nodes.stop()


@pytest.fixture
def sentinel() -> Iterator[PrivateSentinel]:
    servers = PrivateSentinel("gateway-master")
    try:
        yield servers.start()
    finally:
        servers.stop()


@pytest.mark.asyncio
async def test_cluster_batch_spanning_many_slots(cluster: PrivateCluster) -> None:
    async with open_store(cluster.url, redis_mode="cluster", timeout_ms=1000) as store:
        assert isinstance(store.client, RedisCluster)
        assert store.client.retry.get_retries() == 0
        items = [(f"text-{i}", f"vector-of-text-{i}".encode() * 50) for i in range(100)]
        slots = {key_slot((store.key_prefix + key).encode()) for key, _ in items}
        assert len(slots) > 90  # the batch really spans slots (and so all three nodes)

        store.put_many(items, ttl_s=60)
        await store.drain()
        keys = [key for key, _ in items]
        assert await store.get_many(keys) == [value for _, value in items]
        mixed = ["absent-1", *keys[::7], "absent-2"]
        assert await store.get_many(mixed) == [None, *[value for _, value in items[::7]], None]
        assert store.stats.errors == 0 and store.stats.dropped_writes == 0
        nodes = await store.client.cluster_nodes()
        assert sum("master" in str(info["flags"]) for info in nodes.values()) == 3


@pytest.mark.asyncio
async def test_sentinel_reads_and_writes_through_the_master(sentinel: PrivateSentinel) -> None:
    assert sentinel.sentinel is not None
    settings = {
        "redis_mode": "sentinel",
        "sentinels": [sentinel.sentinel.address],
        "sentinel_master": "gateway-master",
        "timeout_ms": 1000,
    }
    async with open_store(None, **settings) as store:
        items = [(f"s{i}", f"value-{i}".encode()) for i in range(20)]
        store.put_many(items, ttl_s=60)
        await store.drain()
        assert await store.get_many([key for key, _ in items] + ["nope"]) == [v for _, v in items] + [None]
        assert store.stats.errors == 0
    # The values are really on the monitored master.
    async with open_store(sentinel.master.url, timeout_ms=1000) as direct:
        assert await direct.client.exists(f"{store.key_prefix}s0") == 1
