"""Which limits apply to a caller: the default, or the first override matching the tenant
(an exact id or an fnmatch glob), its budgets narrowed by route and model. Resolved once per
(tenant, route, model) and kept in a bounded dict, so the hot path does a dict lookup."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from fnmatch import fnmatchcase
from typing import TypeVar

from gateway.config import BudgetLimit, BudgetsConfig, Period, RateLimit, RateLimitsConfig
from gateway.limits.caller import Caller
from gateway.limits.counters import BudgetCheck, GcraCheck
from gateway.limits.keys import TenantKeys, budget_scope

MINUTE_MS = 60_000.0
NANO = Decimal(10) ** 9
MAX_PLANS = 10_000
MAX_USERS_PER_PLAN = 1_000

_K = TypeVar("_K")
_V = TypeVar("_V")


def to_nano(usd: Decimal) -> int:
    """USD as integer nano-dollars: exact sums in Redis (HINCRBY) and in-process alike."""
    return int((usd * NANO).to_integral_value(ROUND_HALF_EVEN))


def from_nano(nano: int) -> Decimal:
    return Decimal(nano) / NANO


@dataclass(frozen=True, slots=True)
class Budget:
    limit: BudgetLimit
    scope: str  # the counter it reads: limits with the same period, route and model share one
    limit_nano: int  # -1: no USD limit
    limit_tokens: int  # -1: no token limit

    @property
    def period(self) -> Period:
        return self.limit.period


@dataclass(frozen=True, slots=True)
class Rate:
    """One GCRA limit: ``per_minute`` requests (cost 1 each) or tokens (charged after the reply)."""

    kind: str  # rpm, tpm, user_rpm, user_tpm
    per_minute: int
    interval_ms: float = field(init=False)
    per_user: bool = field(init=False)
    tokens: bool = field(init=False)

    def __post_init__(self) -> None:
        # Plain fields, not properties: read on every admit and settle.
        object.__setattr__(self, "interval_ms", MINUTE_MS / self.per_minute)
        object.__setattr__(self, "per_user", self.kind.startswith("user_"))
        object.__setattr__(self, "tokens", self.kind.endswith("tpm"))


@dataclass(slots=True)
class Plan:
    """What one (tenant, route, model) is held to, and the keys that count it."""

    keys: TenantKeys
    rates: tuple[Rate, ...]
    budgets: tuple[Budget, ...]
    # The tenant-wide GCRA checks (None where the key depends on the user), in rates' order.
    _tenant_gcra: tuple[GcraCheck | None, ...] = ()
    # Budget checks for the last window tags seen: ((day tag, month tag), checks in budgets' order).
    _budget_checks: tuple[tuple[str, str], list[BudgetCheck]] | None = field(default=None)
    # The checks per user seen (bounded: cleared when full).
    _user_gcra: dict[str, list[GcraCheck]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tenant_gcra = tuple(
            None
            if rate.per_user
            else GcraCheck(
                self.keys.tokens if rate.tokens else self.keys.requests, rate.interval_ms, 0 if rate.tokens else 1
            )
            for rate in self.rates
        )

    @property
    def empty(self) -> bool:
        return not self.rates and not self.budgets

    def gcra(self, user_id: str) -> list[GcraCheck]:
        checks = self._user_gcra.get(user_id)
        if checks is not None:
            return checks
        checks = []
        for rate, fixed in zip(self.rates, self._tenant_gcra, strict=True):
            if fixed is None:
                key = self.keys.user_tokens(user_id) if rate.tokens else self.keys.user_requests(user_id)
                fixed = GcraCheck(key, rate.interval_ms, 0 if rate.tokens else 1)
            checks.append(fixed)
        if len(self._user_gcra) >= MAX_USERS_PER_PLAN:
            self._user_gcra.clear()
        self._user_gcra[user_id] = checks
        return checks

    def budget_checks(self, day_tag: str, month_tag: str) -> list[BudgetCheck]:
        cached = self._budget_checks
        if cached is not None and cached[0] == (day_tag, month_tag):
            return cached[1]
        checks = [
            BudgetCheck(
                self.keys.budget(b.scope, day_tag if b.period == "day" else month_tag), b.limit_nano, b.limit_tokens
            )
            for b in self.budgets
        ]
        self._budget_checks = ((day_tag, month_tag), checks)
        return checks


def _matches(value: str | None, glob: str | None) -> bool:
    if glob is None:
        return True
    return value is not None and (value == glob or fnmatchcase(value, glob))


def _budget(limit: BudgetLimit) -> Budget:
    return Budget(
        limit=limit,
        scope=budget_scope(limit.period, limit.route, limit.model),
        limit_nano=to_nano(limit.usd) if limit.usd is not None else -1,
        limit_tokens=limit.tokens if limit.tokens is not None else -1,
    )


def _rates(rate: RateLimit) -> tuple[Rate, ...]:
    found = ((kind, getattr(rate, kind)) for kind in ("rpm", "tpm", "user_rpm", "user_tpm"))
    return tuple(Rate(kind, value) for kind, value in found if value is not None)


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    if len(cache) >= MAX_PLANS:
        del cache[next(iter(cache))]  # the oldest entry
    cache[key] = value
    return value


class Rules:
    def __init__(self, budgets: BudgetsConfig, rate_limits: RateLimitsConfig, namespace: str) -> None:
        self._budgets = budgets
        self._rate_limits = rate_limits
        self._namespace = namespace
        self._plans: dict[tuple[str, str | None, str], Plan] = {}
        self._tenants: dict[str, tuple[TenantKeys, tuple[Budget, ...], tuple[Rate, ...]]] = {}

    def plan(self, caller: Caller) -> Plan:
        key = (caller.tenant_id, caller.route, caller.model)
        plan = self._plans.get(key)
        if plan is None:
            keys, budgets, rates = self.tenant(caller.tenant_id)
            narrowed = tuple(
                b for b in budgets if _matches(caller.route, b.limit.route) and _matches(caller.model, b.limit.model)
            )
            plan = _remember(self._plans, key, Plan(keys, rates, narrowed))
        return plan

    def tenant(self, tenant_id: str) -> tuple[TenantKeys, tuple[Budget, ...], tuple[Rate, ...]]:
        """The tenant's keys, every budget it has (whatever the route and model), its rate limits."""
        found = self._tenants.get(tenant_id)
        if found is None:
            limits = self._budgets.default
            for override in self._budgets.overrides:
                if _matches(tenant_id, override.tenant):
                    limits = override.limits
                    break
            rate = self._rate_limits.default
            for rate_override in self._rate_limits.overrides:
                if _matches(tenant_id, rate_override.tenant):
                    rate = rate_override
                    break
            found = (TenantKeys(self._namespace, tenant_id), tuple(_budget(b) for b in limits), _rates(rate))
            _remember(self._tenants, tenant_id, found)
        return found
