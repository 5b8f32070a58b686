"""The console's status document, built from the services and the app's status.

No secrets: keys appear only as ``"<set>"``, addresses as ``scheme://host:port`` (no user
info, path or query), and backends' error messages pass through the app's redactor.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway import __version__
from gateway.cache.embedding_cache import EmbeddingCache
from gateway.config import TargetConfig
from gateway.metrics import multiprocess_dir
from gateway.resilience.health import TargetState
from gateway.routing import target_key
from gateway.services import Services
from gateway.status import GatewayStatus

if TYPE_CHECKING:
    from gateway.console.state import ConsoleState

_STATE_ORDER = {"open": 3, "half-open": 2, "closed": 1, "idle": 0}


def public_address(url: str | None) -> str | None:
    """``scheme://host[:port]`` of a URL: no credentials, path or query."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else host + port or None


def _public_key(key: str) -> str:
    """A backend's key (``model`` or ``model@address``) with the address as ``public_address``."""
    model, at, address = key.rpartition("@")
    if at and "://" in address:
        return f"{model}@{public_address(address)}"
    return key


def build_status(services: Services, status: GatewayStatus, state: ConsoleState) -> dict[str, Any]:
    config = services.config
    now = time.time()
    health = _health_by_label(services)
    redact = services.redactor
    route_traffic = state.route_traffic()
    routes = []
    for route, described in zip(config.routes, services.routes.describe(), strict=True):
        routes.append(
            {
                "route": described["route"],
                "types": described["types"],
                "provider": described["provider"],
                "model": described["model"],
                "tenants": described["tenants"],
                "balancing": route.balancing,
                "retries": route.retries,
                "max_attempts": route.attempt_budget,
                "timeouts": route.timeouts.model_dump(),
                "traffic": route_traffic.get(str(described["route"])),
                "targets": [_target(t, False, health, redact) for t in route.targets],
                "fallbacks": [_target(t, True, health, redact) for t in route.fallbacks],
            }
        )
    backends = services.health.snapshot()
    for row in backends:
        row["target"] = _public_key(str(row["target"]))
        if isinstance(row.get("last_error"), str):
            row["last_error"] = redact(str(row["last_error"]))
    return {
        "version": __version__,
        "python": platform.python_version(),
        "config_source": config.source,
        # With several workers each keeps its own console data; the console merges them all
        # (gateway.console.aggregate) unless asked for the answering worker's own.
        "pid": os.getpid(),
        "multiprocess": multiprocess_dir() is not None,
        "started_at": round(status.started_at, 3),
        "uptime_s": round(now - status.started_at, 1),
        "now": round(now, 3),
        "ready": status.ready,
        "draining": status.draining,
        "in_flight": status.in_flight,
        "max_in_flight": config.server.max_in_flight,
        "traffic": state.traffic(),
        "errors_total": state.errors_total,
        "routes": routes,
        "backends": backends,
        "shared_breakers": services.shared_breakers is not None,
        "cache": _cache(services),
        "response_cache": _response_cache(services),
        "embedded_models": services.backends.local_status(),
        "forwarding": {
            "dify_api_url": public_address(config.dify.api_url),
            "passthrough": config.dify.passthrough and config.dify.api_url is not None,
        },
        "summary_model": _summary(config.summary_model),
        "serverless": config.serverless.enabled,
        "tracing": config.tracing.enabled,
        "reload": status.last_reload,
    }


def _health_by_label(services: Services) -> dict[str, list[TargetState]]:
    """Backends by the configured target they came from (``openai/{model}`` has one per model)."""
    found: dict[str, list[TargetState]] = {}
    for state in services.health.states():
        found.setdefault(state.label, []).append(state)
    return found


def _target(
    config: TargetConfig, fallback: bool, health: dict[str, list[TargetState]], redact: Callable[[str], str]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": config.model,
        "weight": config.weight,
        "api_base": public_address(config.api_base),
        "api_key": "<set>" if config.api_key is not None else None,
        "fallback": fallback,
    }
    states = health.get(target_key(config, config.model), [])
    now = time.monotonic()
    requests = sum(s.requests.total(now) for s in states)
    errors = sum(s.errors.total(now) for s in states)
    latencies = [s.latency_s for s in states if s.latency_s is not None]
    last = max((s for s in states if s.last_error_at is not None), key=lambda s: s.last_error_at or 0.0, default=None)
    row.update(
        {
            "state": max((s.state for s in states), key=_STATE_ORDER.__getitem__, default="idle"),
            "backends": len(states),
            "in_flight": sum(s.in_flight for s in states),
            "calls": sum(s.calls for s in states),
            "failures": sum(s.failures for s in states),
            "requests_last_minute": requests,
            "errors_last_minute": errors,
            "error_rate": round(errors / requests, 4) if requests else None,
            "latency_ms": round(1000 * sum(latencies) / len(latencies), 1) if latencies else None,
            "last_error": redact(last.last_error) if last is not None and last.last_error else None,
            "last_error_at": last.last_error_at if last is not None else None,
        }
    )
    return row


def _cache(services: Services) -> dict[str, Any]:
    cache: EmbeddingCache | None = services.embedding_cache
    settings = services.config.cache
    if cache is None:
        return {"enabled": False}
    stats = cache.stats
    looked_up = stats.hits + stats.misses + stats.shared
    store = cache.store
    tiers = store.tiers()
    body: dict[str, Any] = {
        "enabled": True,
        "scope": settings.embeddings.scope,
        "store": "+".join(name for name, _ in tiers),
        "hits": stats.hits,
        "misses": stats.misses,
        "shared": stats.shared,
        "hit_rate": round(stats.hits / looked_up, 4) if looked_up else None,
        "redis": None,
    }
    for name, tier in tiers:
        if name == "memory":
            body["memory"] = {"entries": tier.entries, "size_bytes": tier.size_bytes}
        else:
            body["redis"] = {
                "mode": settings.redis_mode,
                "state": {"closed": "up", "open": "down", "half-open": "probing"}[tier.breaker],
                "breaker": tier.breaker,
                "hits": tier.hits,
                "misses": tier.misses,
                "errors": tier.errors,
                "dropped_writes": tier.dropped_writes,
            }
    return body


def _response_cache(services: Services) -> dict[str, Any] | None:
    """The LLM response cache's counts, or None when no route caches answers."""
    cache = services.response_cache
    routes = [r.label for r in services.config.routes if r.cache is not None]
    if cache is None or not routes:
        return None
    stats = cache.stats
    looked_up = stats.hits + stats.misses
    return {
        "routes": routes,
        "hits": stats.hits,
        "misses": stats.misses,
        "stored": stats.stored,
        "hit_rate": round(stats.hits / looked_up, 4) if looked_up else None,
    }


def _summary(config: TargetConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return {"model": config.model, "api_base": public_address(config.api_base)}
