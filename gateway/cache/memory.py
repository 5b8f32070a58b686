"""The in-process store: an LRU bounded by the bytes of its keys and values, with TTLs.

The whole cache when no Redis is configured, or a small L1 in front of Redis. Everything
happens synchronously on the event loop: each operation is a few dict moves, O(1) per key.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.cache.store import StoreStats


def _entry_size(key: str, value: bytes) -> int:
    return len(key.encode()) + len(value)


class MemoryStore:
    name = "memory"

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.stats = StoreStats()
        self._clock = clock
        # key -> (value, expires at); least recently used first.
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def tiers(self) -> list[tuple[str, StoreStats]]:
        return [(self.name, self.stats)]

    async def warm_up(self) -> bool:
        return True  # nothing to connect

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        now = self._clock()
        found: list[bytes | None] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry[1] <= now:
                self._remove(key)  # expired: removed lazily, on the read that finds it
                entry = None
            if entry is None:
                self.stats.misses += 1
                found.append(None)
                continue
            self._entries.move_to_end(key)
            self.stats.hits += 1
            self.stats.bytes_read += len(entry[0])
            found.append(entry[0])
        return found

    def put_many(self, items: list[tuple[str, bytes]], ttl_s: int) -> None:
        expires = self._clock() + ttl_s
        for key, value in items:
            self._remove(key)  # a replaced value must not survive, even if the new one is not kept
            size = _entry_size(key, value)
            if size > self.max_bytes:
                continue
            self._entries[key] = (value, expires)
            self.stats.size_bytes += size
            self.stats.bytes_written += len(value)
            while self.stats.size_bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._remove(oldest)
        self.stats.entries = len(self._entries)

    async def aclose(self) -> None:
        self._entries.clear()
        self.stats.entries = self.stats.size_bytes = 0

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.stats.size_bytes -= _entry_size(key, entry[0])
            self.stats.entries = len(self._entries)
