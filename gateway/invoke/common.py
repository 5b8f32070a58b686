"""Steps every invocation shares: resolve a route, name the call, bound it in time, price it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import TypeVar

from gateway.adapters.base import UpstreamContext
from gateway.adapters.registry import Backends
from gateway.config import RequestLimits
from gateway.errors import NoRoute, UpstreamTimeout
from gateway.invoke.limits import Limits
from gateway.pricing import ModelMap, Prices
from gateway.resilience.plan import Resilience, run_attempts
from gateway.routing import Resolution, RouteTable, Target

T = TypeVar("T")


class RoutedService:
    """What the rerank, TTS, speech-to-text and moderation services hold: the routes, the backends,
    the attempt policy and the request limits."""

    def __init__(
        self, routes: RouteTable, backends: Backends, resilience: Resilience, limits: RequestLimits | None = None
    ) -> None:
        self._routes = routes
        self._limits = Limits(limits or RequestLimits())
        self._backends = backends
        self._resilience = resilience


def resolve(routes: RouteTable, model_type: str, provider: str, model: str, tenant: str) -> Resolution:
    resolution = routes.resolve(model_type, provider, model, tenant)
    if resolution is None:
        raise NoRoute(
            f"no route for {model_type} provider {provider!r} model {model!r}: "
            "add a route for it to the gateway configuration"
        )
    return resolution


def upstream_context(resolution: Resolution, provider: str, model: str) -> UpstreamContext:
    return UpstreamContext(route=resolution.route_label, provider=provider, model=model)


async def call_upstream(
    resilience: Resilience,
    resolution: Resolution,
    context: UpstreamContext,
    op: Callable[[Target, float], Awaitable[T]],
) -> tuple[T, Target]:
    """``op(target, seconds)`` under the route's retries, fallbacks and total deadline;
    the result and the target that produced it."""
    deadline = time.monotonic() + resolution.route.timeouts.total_s
    return await run_attempts(resilience.plan(resolution, deadline, context.describe), op)


async def within(awaitable: Awaitable[T], timeout_s: float, where: str) -> T:
    """``awaitable``'s result, or ``UpstreamTimeout`` once ``timeout_s`` has passed."""
    try:
        # A timeout scope, not wait_for: on Python 3.11 wait_for runs a coroutine in a new task.
        async with asyncio.timeout(max(timeout_s, 0.001)):
            return await awaitable
    except TimeoutError:
        raise UpstreamTimeout(f"upstream did not answer within {max(timeout_s, 0):g} s ({where})") from None


async def gather_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Like ``asyncio.gather``, but the first failure cancels the rest: pieces of a request
    that has already failed must not go on calling (and paying) the upstream."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def target_prices(target: Target, model_map: ModelMap) -> Prices | None:
    """Per-token prices: the target's configured ones over litellm's model map."""
    cfg = target.config
    known = model_map.lookup(target.model).prices
    if cfg.input_cost_per_token is None and cfg.output_cost_per_token is None:
        return known
    return Prices(
        input_per_token=Decimal(str(cfg.input_cost_per_token))
        if cfg.input_cost_per_token is not None
        else (known.input_per_token if known else Decimal(0)),
        output_per_token=Decimal(str(cfg.output_cost_per_token))
        if cfg.output_cost_per_token is not None
        else (known.output_per_token if known else Decimal(0)),
    )
