"""A small in-process L1 in front of Redis: hot keys skip the network round trip."""

from __future__ import annotations

from gateway.cache.memory import MemoryStore
from gateway.cache.redis_store import RedisStore
from gateway.cache.store import StoreStats

# L1 keeps an entry at most this long. An L2 hit is copied into L1 for exactly this long,
# since MGET does not tell the entry's remaining TTL in Redis: an L1 copy may outlive the
# Redis entry by up to this much (harmless for content-addressed keys, and kept short).
L1_FILL_TTL_S = 60


class TieredStore:
    name = "tiered"

    def __init__(self, l1: MemoryStore, l2: RedisStore, fill_ttl_s: int = L1_FILL_TTL_S) -> None:
        self.l1 = l1
        self.l2 = l2
        self._fill_ttl_s = fill_ttl_s

    @property
    def stats(self) -> StoreStats:
        """The two tiers seen as one store, computed on read (L2 counts in the background)."""
        l1, l2 = self.l1.stats, self.l2.stats
        return StoreStats(
            hits=l1.hits + l2.hits,
            misses=l2.misses,  # every L1 miss is asked of L2, so L2's misses are the final ones
            errors=l2.errors,
            dropped_writes=l2.dropped_writes,
            bytes_read=l1.bytes_read + l2.bytes_read,
            bytes_written=l1.bytes_written + l2.bytes_written,
            entries=l1.entries,
            size_bytes=l1.size_bytes,
            breaker=l2.breaker,
        )

    @stats.setter
    def stats(self, value: StoreStats) -> None:
        raise AttributeError("TieredStore.stats is computed from l1.stats and l2.stats")

    def tiers(self) -> list[tuple[str, StoreStats]]:
        return [*self.l1.tiers(), *self.l2.tiers()]

    async def warm_up(self) -> bool:
        return await self.l2.warm_up()

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        values = await self.l1.get_many(keys)
        missing = [i for i, value in enumerate(values) if value is None]
        if not missing:
            return values
        found = await self.l2.get_many([keys[i] for i in missing])
        fill: list[tuple[str, bytes]] = []
        for i, value in zip(missing, found, strict=True):
            if value is not None:
                values[i] = value
                fill.append((keys[i], value))
        self.l1.put_many(fill, self._fill_ttl_s)
        return values

    def put_many(self, items: list[tuple[str, bytes]], ttl_s: int) -> None:
        self.l1.put_many(items, min(ttl_s, self._fill_ttl_s))
        self.l2.put_many(items, ttl_s)

    async def aclose(self) -> None:
        await self.l2.aclose()
        await self.l1.aclose()
