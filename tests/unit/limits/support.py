"""Governors for tests: in-process or on real Redis (a unique key namespace per test, removed after)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gateway.cache.redis_store import create_redis_store
from gateway.config import BudgetsConfig, CacheConfig, RateLimitsConfig
from gateway.limits import Caller, Governor, SpendHistory
from gateway.limits.counters import Counters, MemoryCounters
from gateway.limits.redis_counters import RedisCounters
from tests.support.redis import delete_prefix, reachable, unique_prefix

KINDS = ["memory", "redis"]


class Clock:
    """A clock the test moves; starts at a fixed instant."""

    def __init__(self, start: datetime = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


def caller(
    tenant: str = "tenant-a", user: str = "user-1", *, route: str | None = "gpt", model: str = "gpt-4o"
) -> Caller:
    return Caller(tenant_id=tenant, user_id=user, model_type="llm", provider="openai", model=model, route=route)


def counters_for(kind: str, url: str | None, **cache: Any) -> Counters:
    if kind == "memory":
        return MemoryCounters()
    settings = {"redis_url": url, "timeout_ms": 1000, **cache}
    return RedisCounters(create_redis_store(CacheConfig.model_validate(settings)))


class Governors:
    """Builds governors of one kind sharing one namespace (so two of them share Redis)."""

    def __init__(self, kind: str, url: str | None) -> None:
        self.kind = kind
        self.url = url
        self.namespace = unique_prefix() + "limits:"
        self.made: list[Governor] = []

    async def make(
        self,
        *,
        budgets: dict[str, Any] | None = None,
        rate_limits: dict[str, Any] | None = None,
        clock: Clock,
        history: SpendHistory | None = None,
        counters: Counters | None = None,
        **cache: Any,
    ) -> Governor:
        governor = Governor(
            BudgetsConfig.model_validate(budgets or {}),
            RateLimitsConfig.model_validate(rate_limits or {}),
            counters or counters_for(self.kind, self.url, **cache),
            clock=clock,
            history=history,
            namespace=self.namespace,
        )
        await governor.start()
        self.made.append(governor)
        return governor

    async def close(self) -> None:
        for governor in self.made:
            await governor.aclose()
        if self.kind == "redis" and self.url is not None and reachable(self.url):
            delete_prefix(self.url, self.namespace.removesuffix("limits:"))


@asynccontextmanager
async def governors(kind: str, url: str | None) -> AsyncIterator[Governors]:
    made = Governors(kind, url)
    try:
        yield made
    finally:
        await made.close()


def usd(text: str) -> Decimal:
    return Decimal(text)
