"""Prometheus metrics, read from the live objects' own counters at scrape time.

Each app instance has its own ``CollectorRegistry`` (no process globals), so tests and
several apps in one process never see each other's numbers.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator
from typing import TypeAlias

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.cache.embedding_cache import EmbeddingCache
from gateway.cache.response_cache import ResponseCache
from gateway.cache.store import VectorStore
from gateway.limits.governor import Governor
from gateway.loop_monitor import LoopMonitor
from gateway.resilience.health import TargetHealth
from gateway.status import GatewayStatus
from gateway.usage.writer import Ledger

# The registry type, for modules that must not import prometheus_client themselves.
Registry: TypeAlias = CollectorRegistry

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


class ResponseCacheCollector(Collector):
    def __init__(self, cache: ResponseCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self._cache.stats
        lookups = CounterMetricFamily(
            "dify_gateway_llm_response_cache_lookups",
            "LLM requests of cached routes by cache outcome: hit (answered from the store, no upstream call), "
            "miss, corrupt (a stored value did not decode; also counted as a miss)",
            labels=["result"],
        )
        for result, value in (("hit", stats.hits), ("miss", stats.misses), ("corrupt", stats.corrupt)):
            lookups.add_metric([result], value)
        yield lookups
        stored = CounterMetricFamily(
            "dify_gateway_llm_response_cache_stored", "Whole LLM answers written to the response cache"
        )
        stored.add_metric([], stats.stored)
        yield stored


def _store_metrics(store: VectorStore) -> Iterator[Metric]:
    tiers = store.tiers()
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


class BuildInfoCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "dify_gateway_build_info", "The running version (value 1)", labels=["version", "python"]
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info


class ResilienceCollector(Collector):
    """Backends' breakers and calls in flight, and the process's own load and drain state.

    Labelled by the target as configured (``openai/{model}`` is one label however many
    models callers name), so the series count is bounded by the configuration.
    """

    def __init__(self, health: TargetHealth, in_flight: Callable[[], int], draining: Callable[[], bool]) -> None:
        self._health = health
        self._in_flight = in_flight
        self._draining = draining

    def collect(self) -> Iterator[Metric]:
        not_closed: dict[tuple[str, str], int] = {}
        in_flight: dict[str, int] = {}
        failures: dict[str, int] = {}
        calls: dict[str, int] = {}
        for state in self._health.states():
            in_flight[state.label] = in_flight.get(state.label, 0) + state.in_flight
            calls[state.label] = calls.get(state.label, 0) + state.calls
            failures[state.label] = failures.get(state.label, 0) + state.failures
            for name in _BREAKER_STATES:
                key = (state.label, name)
                not_closed[key] = not_closed.get(key, 0) + (state.state == name)
        breakers = GaugeMetricFamily(
            "dify_gateway_target_breaker_state",
            "Backends of a configured target in each breaker state",
            labels=["target", "state"],
        )
        for (label, name), count in sorted(not_closed.items()):
            breakers.add_metric([label, name], count)
        yield breakers
        flight = GaugeMetricFamily("dify_gateway_target_in_flight", "Upstream calls in flight", labels=["target"])
        attempts = CounterMetricFamily("dify_gateway_target_attempts", "Upstream attempts started", labels=["target"])
        failed = CounterMetricFamily("dify_gateway_target_failures", "Upstream attempts that failed", labels=["target"])
        for label in sorted(in_flight):
            flight.add_metric([label], in_flight[label])
            attempts.add_metric([label], calls[label])
            failed.add_metric([label], failures[label])
        yield flight
        yield attempts
        yield failed
        yield GaugeMetricFamily("dify_gateway_in_flight", "Inner-API requests in flight", value=self._in_flight())
        yield GaugeMetricFamily(
            "dify_gateway_draining", "1 while the process drains after SIGTERM", value=float(self._draining())
        )


class LoopCollector(Collector):
    """This process's event loop: its recent worst lag and its task count."""

    def __init__(self, monitor: LoopMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        lag, tasks = self._monitor.lag_s, self._monitor.tasks
        if lag is not None:
            yield GaugeMetricFamily(
                "dify_gateway_event_loop_lag_seconds",
                "The worst delay of the event loop over the last 10 s (how long a ready request waited its turn)",
                value=lag,
            )
        if tasks is not None:
            yield GaugeMetricFamily("dify_gateway_asyncio_tasks", "Tasks alive on the event loop", value=tasks)


LEDGER_ROW_STATES = ("written", "spilled", "replayed", "dropped")
LEDGER_STATUSES = ("starting", "ok", "degraded", "off")


class LedgerCollector(Collector):
    """The usage ledger's rows by what became of them, and its state (never a tenant or user id)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        state = self._ledger.state()
        rows = CounterMetricFamily(
            "dify_gateway_ledger_rows",
            "Usage rows by what became of them: written to the database, spilled to the local file while it was "
            "away, replayed from that file, dropped (lost: spill file full, or refused by the database)",
            labels=["state"],
        )
        for name in LEDGER_ROW_STATES:
            rows.add_metric([name], getattr(state, name))
        yield rows
        yield GaugeMetricFamily(
            "dify_gateway_ledger_queued_rows", "Usage rows in memory, not yet written", value=state.queued
        )
        yield GaugeMetricFamily(
            "dify_gateway_ledger_spill_bytes", "Size of this process's spill file", value=state.spill_bytes
        )
        status = GaugeMetricFamily(
            "dify_gateway_ledger_status", "The ledger's state: 1 for the current one", labels=["status"]
        )
        for name in LEDGER_STATUSES:
            status.add_metric([name], 1.0 if state.status == name else 0.0)
        yield status


class LimitsCollector(Collector):
    """Budgets and rate limits: where they are counted and what degraded (refusals are counted by
    route and type in ``dify_gateway_requests_total{outcome=budget_exceeded|rate_limited}``)."""

    def __init__(self, governor: Governor) -> None:
        self._governor = governor

    def collect(self) -> Iterator[Metric]:
        state = self._governor.state()
        if state.redis != "none":
            yield GaugeMetricFamily(
                "dify_gateway_limits_redis_up",
                "1 while the budgets' and rate limits' Redis answers (0: counted in-process or refused, as configured)",
                value=1.0 if state.redis == "ok" else 0.0,
            )
        yield CounterMetricFamily(
            "dify_gateway_limits_admitted_in_process",
            "Requests admitted on in-process counters while Redis was unreachable (fail-open)",
            value=state.admitted_in_process,
        )
        yield CounterMetricFamily(
            "dify_gateway_limits_refused_unreachable",
            "Requests refused because Redis was unreachable and the limits fail closed",
            value=state.refused_unreachable,
        )
        yield CounterMetricFamily(
            "dify_gateway_limits_settles_dropped",
            "Finished requests whose cost could not be queued for the counters (the queue was full)",
            value=state.settles_dropped,
        )
        yield GaugeMetricFamily(
            "dify_gateway_limits_settles_pending", "Finished requests not yet charged", value=state.settles_pending
        )
        if state.redis != "none":
            yield GaugeMetricFamily(
                "dify_gateway_limits_charges_owed",
                "Budget counters charged in-process while Redis was away, to be added to Redis when it answers",
                value=state.charges_owed,
            )
            yield CounterMetricFamily(
                "dify_gateway_limits_charges_owed_dropped",
                "Budget counters charged while Redis was away that were never added to it (too many owed)",
                value=state.charges_owed_dropped,
            )


def multiprocess_dir() -> str | None:
    """Set when several workers share metrics through prometheus-client's files."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def build_registry(
    cache: EmbeddingCache | None,
    health: TargetHealth | None = None,
    status: GatewayStatus | None = None,
    loop: LoopMonitor | None = None,
    ledger: Ledger | None = None,
    governor: Governor | None = None,
    responses: ResponseCache | None = None,
) -> Registry:
    """The registry /metrics renders: this process's live state (cache, breakers, in flight)
    and, with several workers, every worker's request metrics summed from the shared files."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(BuildInfoCollector())
    if cache is not None:
        registry.register(EmbeddingCacheCollector(cache))
    if health is not None and status is not None:
        live = status
        registry.register(ResilienceCollector(health, lambda: live.in_flight, lambda: live.draining))
    if loop is not None:
        registry.register(LoopCollector(loop))
    if ledger is not None:
        registry.register(LedgerCollector(ledger))
    if governor is not None:
        registry.register(LimitsCollector(governor))
    if responses is not None:
        registry.register(ResponseCacheCollector(responses))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
