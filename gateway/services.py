"""The gateway's live objects, built once from the configuration, and their lifecycle.

``build_services`` is the one factory: it turns a ``GatewayConfig`` into a frozen
``Services`` (routes, backends, resilience, cache, the invoke services, metrics, the
forwarder, the drain). The ASGI app, the console and the serverless endpoint all read the
same instance; none of them builds a service of its own. ``ServicesLifecycle`` runs the
start-up work (litellm's background import, the embedded models' first load, the Redis
warm-up) and releases everything at shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gateway.accounting import Accounting
from gateway.adapters.litellm_loader import load_litellm
from gateway.adapters.local.chat import LocalLLMSettings
from gateway.adapters.registry import Backends, uses_litellm
from gateway.cache.embedding_cache import EmbeddingCache
from gateway.cache.redis_store import create_redis_store
from gateway.cache.response_cache import ResponseCache
from gateway.cache.setup import build_embedding_cache, build_response_cache
from gateway.catalog import is_local, preload_list
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.forward import DifyForwarder
from gateway.invoke.embedding import EmbeddingService
from gateway.invoke.llm import LLMService
from gateway.invoke.moderation import ModerationService
from gateway.invoke.rerank import RerankService
from gateway.invoke.speech2text import Speech2TextService
from gateway.invoke.summary import SummaryService
from gateway.invoke.tts import TTSService
from gateway.limits.governor import Governor, SpendHistory, TenantHistory, build_governor
from gateway.loop_monitor import LoopMonitor
from gateway.metrics import Registry, build_registry, multiprocess_dir
from gateway.pricing import ModelMap
from gateway.redaction import Redactor
from gateway.request_metrics import RequestMetrics
from gateway.resilience.drain import Drain
from gateway.resilience.health import TargetHealth
from gateway.resilience.plan import Resilience
from gateway.resilience.shared import SharedBreakers
from gateway.routing import RouteTable, Target
from gateway.status import GatewayStatus
from gateway.tracing import Tracing
from gateway.usage.writer import Ledger

log = logging.getLogger("dify_gateway")


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """Everything a request may use, shared by all requests of one app instance."""

    config: GatewayConfig
    routes: RouteTable
    backends: Backends
    model_map: ModelMap
    health: TargetHealth
    resilience: Resilience
    shared_breakers: SharedBreakers | None  # breaker state shared across replicas through Redis
    embedding_cache: EmbeddingCache | None
    response_cache: ResponseCache | None  # the LLM routes' ``cache``
    llm: LLMService
    embedding: EmbeddingService
    rerank: RerankService
    tts: TTSService
    speech2text: Speech2TextService
    moderation: ModerationService
    summary: SummaryService | None  # None: no summary_model configured
    forwarder: DifyForwarder | None  # None: no dify.api_url
    redactor: Redactor  # every configured secret, replaced wherever text leaves the gateway
    metrics: Registry  # what /metrics renders
    request_metrics: RequestMetrics
    tracing: Tracing | None
    drain: Drain
    loop_monitor: LoopMonitor
    inner_api_key: bytes
    ledger: Ledger | None  # None: ledger.enabled is false
    governor: Governor | None  # None: no budgets and no rate limits configured
    accounting: Accounting  # admits requests and records what they spent

    @property
    def passthrough(self) -> bool:
        """Invocations no route matches go to Dify (``dify.passthrough`` with ``dify.api_url``)."""
        return self.forwarder is not None and self.config.dify.passthrough


def build_services(config: GatewayConfig, status: GatewayStatus, backends: Backends | None = None) -> Services:
    """The live objects for ``config``. ``status`` is read (lazily) by the metrics."""
    if config.dify.inner_api_key is None:
        raise ValueError("no inner API key configured")
    backends = backends or Backends()
    backends.local_llm = LocalLLMSettings(**config.server.local_llm.model_dump())
    health = TargetHealth(config.resilience.breaker)
    embedding_cache = build_embedding_cache(config.cache)
    response_cache = build_response_cache(config.cache, embedding_cache)
    loop_monitor = LoopMonitor()
    ledger = Ledger(config.ledger) if config.ledger.enabled else None
    governor = build_governor(config, history=_spend_history(ledger), tenants=_ledger_tenants(ledger))
    metrics = build_registry(embedding_cache, health, status, loop_monitor, ledger, governor, response_cache)
    request_metrics = RequestMetrics(None if multiprocess_dir() else metrics)
    backends.on_local_restart = request_metrics.model_restarted
    return _with_routes(
        config,
        backends=backends,
        model_map=ModelMap(),
        health=health,
        shared_breakers=_shared_breakers(config, health),
        embedding_cache=embedding_cache,
        response_cache=response_cache,
        metrics=metrics,
        request_metrics=request_metrics,
        tracing=Tracing(config.tracing) if config.tracing.enabled else None,
        drain=Drain(config.server.drain_grace_s, config.server.drain_timeout_s),
        loop_monitor=loop_monitor,
        inner_api_key=config.dify.inner_api_key.get_secret_value().encode(),
        secrets=config.secrets(),
        ledger=ledger,
        governor=governor,
    )


def rebuild_services(running: Services, config: GatewayConfig) -> Services:
    """The services for a reloaded ``config``: new routes, invoke services, forwarder and
    redaction; the same backends (their connection pools and embedded models), breaker and
    health state, cache, metrics, tracing and drain as ``running``. The caller has already
    put back the settings that need a restart (``gateway.reload``)."""
    old = running.config
    # A secret once configured stays redacted for the life of the process: an error about
    # a request that started before the reload may still carry it.
    secrets = sorted({*old.secrets(), *config.secrets()})
    return _with_routes(
        config,
        backends=running.backends,
        model_map=running.model_map,
        health=running.health,
        shared_breakers=running.shared_breakers,
        embedding_cache=running.embedding_cache,
        response_cache=running.response_cache,
        metrics=running.metrics,
        request_metrics=running.request_metrics,
        tracing=running.tracing,
        drain=running.drain,
        loop_monitor=running.loop_monitor,
        inner_api_key=running.inner_api_key,
        secrets=secrets,
        ledger=running.ledger,
        governor=running.governor,
    )


def _with_routes(
    config: GatewayConfig,
    *,
    backends: Backends,
    model_map: ModelMap,
    health: TargetHealth,
    shared_breakers: SharedBreakers | None,
    embedding_cache: EmbeddingCache | None,
    response_cache: ResponseCache | None,
    metrics: Registry,
    request_metrics: RequestMetrics,
    tracing: Tracing | None,
    drain: Drain,
    loop_monitor: LoopMonitor,
    inner_api_key: bytes,
    secrets: list[str],
    ledger: Ledger | None,
    governor: Governor | None,
) -> Services:
    """What depends on the routes, built around the long-lived objects given."""
    routes = RouteTable(config.routes)
    resilience = Resilience(config.resilience.retry, health)
    limits = config.limits
    summary = (
        SummaryService(config.summary_model, config.summary_concurrency, backends, model_map, resilience)
        if config.summary_model is not None
        else None
    )
    forwarder = (
        DifyForwarder(
            config.dify.api_url,
            backends.http,
            api_key=config.dify.api_key.get_secret_value() if config.dify.api_key else None,
            timeout_s=config.dify.forward_timeout_s,
        )
        if config.dify.api_url
        else None
    )
    return Services(
        config=config,
        routes=routes,
        backends=backends,
        model_map=model_map,
        health=health,
        resilience=resilience,
        shared_breakers=shared_breakers,
        embedding_cache=embedding_cache,
        response_cache=response_cache,
        llm=LLMService(routes, backends, model_map, resilience, response_cache),
        embedding=EmbeddingService(routes, backends, model_map, resilience, embedding_cache, limits),
        rerank=RerankService(routes, backends, resilience, limits),
        tts=TTSService(routes, backends, resilience, limits),
        speech2text=Speech2TextService(routes, backends, resilience, limits),
        moderation=ModerationService(routes, backends, resilience, limits),
        summary=summary,
        forwarder=forwarder,
        redactor=Redactor(secrets),
        metrics=metrics,
        request_metrics=request_metrics,
        tracing=tracing,
        drain=drain,
        loop_monitor=loop_monitor,
        inner_api_key=inner_api_key,
        ledger=ledger,
        governor=governor,
        accounting=Accounting(ledger, governor, time.time),
    )


def local_models(config: GatewayConfig) -> list[str]:
    """The embedded models the routes (and the summary) send to first (fallbacks load on
    their first call)."""
    models = {t.model for r in config.routes for t in r.targets if is_local(t.model)}
    if config.summary_model is not None and is_local(config.summary_model.model):
        models.add(config.summary_model.model)
    return sorted(models)


class ServicesLifecycle:
    """Start-up work in the background, and the release of everything at shutdown.

    Readiness waits for the embedded models (a first call would otherwise pay their load
    time), not for litellm (its first call waits for the import instead).
    """

    def __init__(self, services: Services, on_ready: Callable[[], None]) -> None:
        self._services = services
        self._on_ready = on_ready
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self) -> None:
        services = self._services
        loop = asyncio.get_running_loop()
        if needs_litellm(services.config):
            self._tasks.append(loop.create_task(_warm_litellm()))
        if services.shared_breakers is not None:
            services.shared_breakers.start()
        if services.embedding_cache is not None:
            self._tasks.append(loop.create_task(services.embedding_cache.store.warm_up()))
        services.loop_monitor.start()
        if services.ledger is not None:
            self._tasks.append(loop.create_task(services.ledger.start()))
        if services.governor is not None:
            self._tasks.append(loop.create_task(services.governor.start()))
        config = services.config
        local = local_models(config)
        preload = preload_list(local, config.server.preload_local_models)
        on_demand = [name for name in local if name not in preload]
        if on_demand:
            services.backends.check_local(on_demand)
        if preload:
            self._tasks.append(loop.create_task(self._preload(preload)))
        else:
            self._on_ready()
        self._tasks.append(loop.create_task(_settle(list(self._tasks))))

    async def aclose(self) -> None:
        services = self._services
        for task in self._tasks:
            task.cancel()
        await services.loop_monitor.aclose()
        # After the drain: every answered request has queued its row and its charge.
        if services.governor is not None:
            await services.governor.aclose()
        if services.ledger is not None:
            await services.ledger.aclose()
        if services.shared_breakers is not None:
            await services.shared_breakers.aclose()
        if services.tracing is not None:
            await asyncio.to_thread(services.tracing.shutdown)  # flushes buffered spans
        await services.backends.aclose()
        if services.embedding_cache is not None:
            await services.embedding_cache.store.aclose()
        responses = services.response_cache
        embedding_store = services.embedding_cache.store if services.embedding_cache is not None else None
        if responses is not None and responses.store is not embedding_store:
            await responses.store.aclose()

    async def _preload(self, names: list[str]) -> None:
        started = time.monotonic()
        backends = self._services.backends
        try:
            await backends.preload_local(names)
            failed = {n: s for n, s in backends.local_status().items() if s.startswith("failed")}
            if failed:
                log.error("embedded models failed to load (readiness stays 503): %s", failed)
            else:
                log.info("embedded models ready in %.2f s: %s", time.monotonic() - started, ", ".join(names))
        except GatewayError as exc:
            log.warning("embedded models not loaded, calls routed to them will fail: %s", exc.message)
        except Exception:
            log.exception("loading the embedded models failed")
        finally:
            self._on_ready()


def _spend_history(ledger: Ledger | None) -> SpendHistory | None:
    """What a tenant spent since a time, from the ledger: the budgets' counters start from it."""
    if ledger is None:
        return None

    async def spent(tenant_id: str, since: datetime, route: str | None, model: str | None) -> tuple[Decimal, int]:
        store = ledger.store
        if store is None:
            return Decimal(0), 0
        return await asyncio.to_thread(store.spend, tenant_id, since, route, model)

    return spent


def _ledger_tenants(ledger: Ledger | None) -> TenantHistory | None:
    """The tenants in the ledger since a time: the budget report lists them too."""
    if ledger is None:
        return None

    async def tenants(since: datetime, limit: int) -> list[str]:
        store = ledger.store
        if store is None:
            return []
        return await asyncio.to_thread(store.tenants_since, since.astimezone(UTC).date(), limit)

    return tenants


def _shared_breakers(config: GatewayConfig, health: TargetHealth) -> SharedBreakers | None:
    """Breaker state shared across replicas, kept in the cache's Redis (``resilience.breaker.shared``)."""
    breaker = config.resilience.breaker
    if not (breaker.enabled and breaker.shared):
        return None
    return SharedBreakers(create_redis_store(config.cache), health, config.cache.key_prefix)


def needs_litellm(config: GatewayConfig) -> bool:
    """Whether a route or the summary model may need litellm (else it is never imported)."""
    if config.summary_model is not None and not is_local(config.summary_model.model):
        return True
    for route in config.routes:
        for target in [*route.targets, *route.fallbacks]:
            if uses_litellm(Target(config=target, model=target.model), route.match.types):
                return True
    return False


async def _warm_litellm() -> None:
    """Import litellm in the background; a failure here is retried by the first call."""
    try:
        await load_litellm()
    except Exception:
        log.exception("importing litellm failed; the first call that needs it will try again")


async def _settle(warmups: list[asyncio.Task[Any]]) -> None:
    """After start-up work, move the objects it made out of the garbage collector's reach: a
    full collection over litellm's and the models' objects pauses the process for hundreds
    of milliseconds, which would land on some unlucky request."""
    await asyncio.gather(*warmups, return_exceptions=True)
    gc.freeze()
