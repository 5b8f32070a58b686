"""Prometheus metrics, read from the live objects' own counters at scrape time.

Each app instance has its own ``CollectorRegistry`` (no process globals), so tests and
several apps in one process never see each other's numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.cache.embedding_cache import EmbeddingCache
from gateway.cache.store import StoreStats, VectorStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BREAKER_STATES = ("closed", "open", "half-open")


class EmbeddingCacheCollector(Collector):
    def __init__(self, cache: EmbeddingCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self._cache.stats
        lookups = CounterMetricFamily(
            "dify_gateway_embedding_cache_lookups",
            "Embedding inputs by cache outcome: hit (from the store), miss (embedded upstream), "
            "shared (answered by a concurrent request's upstream call), corrupt (a stored value failed its checks)",
            labels=["result"],
        )
        for result, value in (("hit", stats.hits), ("miss", stats.misses), ("shared", stats.shared)):
            lookups.add_metric([result], value)
        lookups.add_metric(["corrupt"], stats.corrupt)
        yield lookups
        yield from _store_metrics(self._cache.store)


def _stores(store: VectorStore) -> list[tuple[str, StoreStats]]:
    """(tier name, stats) for a store and, for a tiered one, its two tiers."""
    l1, l2 = getattr(store, "l1", None), getattr(store, "l2", None)
    if l1 is not None and l2 is not None:
        return [("memory", l1.stats), ("redis", l2.stats)]
    return [(store.name, store.stats)]


def _store_metrics(store: VectorStore) -> Iterator[Metric]:
    tiers = _stores(store)
    families = {
        "errors": CounterMetricFamily(
            "dify_gateway_embedding_cache_errors", "Failed or timed-out cache store operations", labels=["store"]
        ),
        "dropped_writes": CounterMetricFamily(
            "dify_gateway_embedding_cache_dropped_writes",
            "Cache writes skipped (breaker open or too many pending)",
            labels=["store"],
        ),
        "bytes_read": CounterMetricFamily(
            "dify_gateway_embedding_cache_read_bytes", "Bytes of vectors read from the store", labels=["store"]
        ),
        "bytes_written": CounterMetricFamily(
            "dify_gateway_embedding_cache_written_bytes", "Bytes of vectors written to the store", labels=["store"]
        ),
    }
    entries = GaugeMetricFamily("dify_gateway_embedding_cache_entries", "Entries held in memory", labels=["store"])
    size = GaugeMetricFamily("dify_gateway_embedding_cache_size_bytes", "Bytes held in memory", labels=["store"])
    breaker = GaugeMetricFamily(
        "dify_gateway_embedding_cache_breaker_state",
        "The Redis circuit breaker: 1 for the current state",
        labels=["store", "state"],
    )
    for name, stats in tiers:
        for attr, family in families.items():
            family.add_metric([name], getattr(stats, attr))
        if name == "memory":
            entries.add_metric([name], stats.entries)
            size.add_metric([name], stats.size_bytes)
        else:
            for state in _BREAKER_STATES:
                breaker.add_metric([name, state], 1.0 if stats.breaker == state else 0.0)
    yield from families.values()
    yield entries
    yield size
    if breaker.samples:
        yield breaker


def build_registry(cache: EmbeddingCache | None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if cache is not None:
        registry.register(EmbeddingCacheCollector(cache))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
