"""What every cache store offers, and the counters it keeps.

Stores never raise on the request path: a failed or slow read is a miss, a failed write is
dropped. The counters are plain integers the metrics collector reads at scrape time, so
the stores know nothing about Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.resilience.breaker import BreakerState

__all__ = ["BreakerState", "StoreStats", "VectorStore"]


@dataclass(slots=True)
class StoreStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0  # failed or timed-out operations (reads and writes)
    dropped_writes: int = 0  # writes skipped because too many were pending or the breaker was open
    bytes_read: int = 0
    bytes_written: int = 0
    entries: int = 0  # memory stores only
    size_bytes: int = 0  # memory stores only
    breaker: BreakerState = "closed"  # Redis stores only


class VectorStore(Protocol):
    name: str  # "memory" or "redis", for metrics
    stats: StoreStats

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """One value per key, None for a miss. Never raises; bounded in time."""
        ...

    def put_many(self, items: list[tuple[str, bytes]], ttl_s: int) -> None:
        """Store values in the background (off the response path). Never raises."""
        ...

    def tiers(self) -> list[tuple[str, StoreStats]]:
        """(tier name, its counters) per tier, fastest first: one for a plain store, two for a tiered one."""
        ...

    async def warm_up(self) -> bool:
        """Connect ahead of the first request, off the request path; whether the store answered. Never raises."""
        ...

    async def aclose(self) -> None:
        """Wait briefly for pending writes, then release connections."""
        ...
