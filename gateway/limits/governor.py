"""The governor: admits a caller under its tenant's rate limits and budgets, and charges
what each finished request cost.

``admit`` is one counter round trip (one Lua script on Redis) for all of a caller's limits;
the rules are resolved once per (tenant, route, model). ``settle`` only queues: a background
task charges queued settles in batches (one script call per batch). Budget counters missing
from the store are rebuilt from the ledger (``SpendHistory``) once per tenant and window.

Redis unreachable (timed out, or its breaker open): ``on_redis_error: open`` admits against
in-process counters meanwhile (rebuilt from the ledger the same way); ``closed`` refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.cache.redis_store import create_redis_store
from gateway.config import BudgetsConfig, GatewayConfig, Period, RateLimitsConfig
from gateway.errors import BudgetExceeded, RateLimited
from gateway.limits.caller import Caller
from gateway.limits.counters import (
    BudgetCharge,
    BudgetCheck,
    ChargeGroup,
    ChargeMark,
    CheckResult,
    Counters,
    GcraCheck,
    MemoryCounters,
    Reading,
    Seed,
    TokenCharge,
)
from gateway.limits.messages import (
    UNREACHABLE_RETRY_S,
    budget_refusal,
    budget_store_unreachable,
    rate_refusal,
    rate_store_unreachable,
)
from gateway.limits.redis_counters import RedisCounters
from gateway.limits.rules import Budget, Plan, Rules, from_nano, to_nano
from gateway.limits.windows import Window, WindowClock

log = logging.getLogger("dify_gateway")

# (tenant_id, window_start, route_glob, model_glob) -> (usd, tokens) spent in the window so far.
SpendHistory = Callable[[str, datetime, str | None, str | None], Awaitable[tuple[Decimal, int]]]
# The tenants that have used the gateway since a time (the ledger's), at most a number of them:
# the budget report lists them as well as those this process has seen.
TenantHistory = Callable[[datetime, int], Awaitable[list[str]]]

HISTORY_TIMEOUT_S = 0.5
MAX_PENDING_SETTLES = 100_000
MAX_TENANTS_SEEN = 10_000
MAX_HISTORY_CACHED = 50_000
# Budget counters charged in-process while Redis was away, kept to be added to Redis when it is
# back (beyond this many, the rest are dropped and counted).
MAX_OWED_COUNTERS = 100_000
# Charges sent to Redis without an answer, kept one by one (past this many, summed with the
# unsent ones: one Redis applied may then count twice).
MAX_UNSURE_CHARGES = 1_000
CLOSE_FLUSH_S = 2.0
# Settles are charged at most this often (the spend a budget check sees lags by as much).
SETTLE_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class BudgetState:
    tenant_id: str
    name: str  # BudgetLimit.name: "daily budget on route gpt4"
    period: Period
    route: str | None
    model: str | None
    spent_usd: Decimal
    limit_usd: Decimal | None
    spent_tokens: int
    limit_tokens: int | None
    resets_at: datetime  # in budgets.timezone
    over: bool


@dataclass(frozen=True, slots=True)
class GovernorState:
    redis: Literal["ok", "unreachable", "none"]
    counting: Literal["redis", "memory"]  # where admissions are counted right now
    budgets_on_redis_error: Literal["open", "closed"]
    rate_limits_on_redis_error: Literal["open", "closed"]
    admitted: int
    admitted_in_process: int  # of those, admitted on in-process counters while Redis was unreachable
    refused_budget: int
    refused_rate: int
    refused_unreachable: int  # refused because Redis was unreachable and the mode is closed
    settled: int
    settles_pending: int
    settles_dropped: int  # the queue was full
    charges_in_process: int  # settle batches Redis missed, counted in-process instead
    charges_owed: int  # budget counters with such charges, to be added to Redis once it answers again
    charges_owed_dropped: int  # more than MAX_OWED_COUNTERS were owed: these were never copied back
    history_failures: int
    tenants_seen: int


@dataclass(frozen=True, slots=True)
class _Settle:
    plan: Plan
    user_id: str
    nano: int
    tokens: int
    at: float


class Governor:
    def __init__(
        self,
        budgets: BudgetsConfig,
        rate_limits: RateLimitsConfig,
        counters: Counters,
        *,
        clock: Callable[[], float] = time.time,
        history: SpendHistory | None = None,
        tenants: TenantHistory | None = None,
        namespace: str = "limits:",
        history_timeout_s: float = HISTORY_TIMEOUT_S,
        max_pending_settles: int = MAX_PENDING_SETTLES,
        settle_interval_s: float = SETTLE_INTERVAL_S,
    ) -> None:
        self._namespace = namespace
        self._rules = Rules(budgets, rate_limits, namespace)
        self._primary = counters
        self._fallback = None if isinstance(counters, MemoryCounters) else MemoryCounters()
        self._clock = clock
        self._history = history
        self._tenant_history = tenants
        self._history_timeout_s = history_timeout_s
        self._windows = WindowClock(ZoneInfo(budgets.timezone))
        self._budget_mode = budgets.on_redis_error
        self._rate_mode = rate_limits.on_redis_error
        self._redis_ok = True
        self._pending: list[_Settle] = []
        self._max_pending = max_pending_settles
        self._settle_interval_s = settle_interval_s
        self._wake = asyncio.Event()
        self._charging = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._warm_up: asyncio.Task[bool] | None = None
        self._closed = False
        self._seen: dict[str, None] = {}  # budgeted tenants, oldest first
        self._history_cache: dict[str, tuple[int, int]] = {}  # counter key -> the ledger's figures
        self._history_calls: dict[str, asyncio.Task[tuple[int, int]]] = {}
        self._history_logged = False
        self._settle_logged = False
        self.admitted = 0
        self.admitted_in_process = 0
        self.refused_budget = 0
        self.refused_rate = 0
        self.refused_unreachable = 0
        self.settled = 0
        self.settles_dropped = 0
        self.charges_in_process = 0
        self.charges_owed_dropped = 0
        self.history_failures = 0
        # What Redis missed while away, to be added when it answers again (``_repay``): charges
        # sent without an answer, each under its seq (Redis may have applied them), and those
        # never sent, summed (tenant head -> budget key -> [nano, tokens, expire_at_ms]).
        self._process = uuid.uuid4().hex[:16]
        self._seq = 0
        self._unsure: deque[tuple[int, list[ChargeGroup]]] = deque()
        self._unsent: dict[str, dict[str, list[int]]] = {}
        self._unsent_count = 0

    def update(self, budgets: BudgetsConfig, rate_limits: RateLimitsConfig) -> None:
        """New budgets and rate limits (a configuration reload): the next admit uses them.
        Counters are kept, so what a tenant spent this window, or asked this minute, still
        counts against the new figures; settles already queued charge under their old rules."""
        self._rules = Rules(budgets, rate_limits, self._namespace)
        self._windows = WindowClock(ZoneInfo(budgets.timezone))
        self._budget_mode = budgets.on_redis_error
        self._rate_mode = rate_limits.on_redis_error

    # -- the hot path ---------------------------------------------------------------------

    async def admit(self, caller: Caller) -> None:
        """Raise ``RateLimited`` or ``BudgetExceeded`` if the caller must not go upstream."""
        plan = self._rules.plan(caller)
        if not plan.rates and not plan.budgets:
            self.admitted += 1
            return
        now = self._clock()
        windows = self._windows.current(now)
        gcra = plan.gcra(caller.user_id)
        budgets = plan.budget_checks(windows["day"].tag, windows["month"].tag) if plan.budgets else []
        if budgets and caller.tenant_id not in self._seen:
            self._note_tenant(caller.tenant_id)
        result = await self._check(self._primary, now, caller.tenant_id, plan, windows, gcra, budgets)
        if result is None:
            self._redis_ok = False
            result = await self._check_degraded(now, caller.tenant_id, plan, windows, gcra, budgets)
        elif self._fallback is not None:
            self._redis_ok = True
        self._decide(result, plan, windows, now)

    def settle(self, caller: Caller, usd: Decimal, tokens: int) -> None:
        """Queue what a finished request cost; never blocks, never raises."""
        try:
            if usd <= 0 and tokens <= 0:
                return
            plan = self._rules.plan(caller)
            if not plan.budgets and not any(rate.tokens for rate in plan.rates):
                return
            if len(self._pending) >= self._max_pending:
                self.settles_dropped += 1
                return
            self._pending.append(
                _Settle(plan, caller.user_id, to_nano(usd) if usd > 0 else 0, max(tokens, 0), self._clock())
            )
            if self._task is None and not self._closed:
                self._start_task()
            self._wake.set()
        except Exception:  # a charge is never worth failing a finished request
            if not self._settle_logged:
                self._settle_logged = True
                log.exception("limits: a request's cost could not be queued (logged once)")

    # -- reports ----------------------------------------------------------------------------

    async def budget_state(self, tenant_id: str | None = None) -> list[BudgetState]:
        now = self._clock()
        windows = self._windows.current(now)
        tenants = [tenant_id] if tenant_id is not None else await self._budget_tenants(windows)
        states: list[BudgetState] = []
        for tenant in tenants:
            keys, budgets, _ = self._rules.tenant(tenant)
            if not budgets:
                continue
            names = [keys.budget(b.scope, windows[b.period].tag) for b in budgets]
            readings = await self._read(tenant, budgets, names, windows)
            for budget, reading in zip(budgets, readings, strict=True):
                limit = budget.limit
                states.append(
                    BudgetState(
                        tenant_id=tenant,
                        name=limit.name,
                        period=limit.period,
                        route=limit.route,
                        model=limit.model,
                        spent_usd=from_nano(reading.nano),
                        limit_usd=limit.usd,
                        spent_tokens=reading.tokens,
                        limit_tokens=limit.tokens,
                        resets_at=windows[limit.period].end,
                        over=(0 <= budget.limit_nano <= reading.nano) or (0 <= budget.limit_tokens <= reading.tokens),
                    )
                )
        return states

    async def _budget_tenants(self, windows: dict[Period, Window]) -> list[str]:
        """The tenants seen here, and those in the ledger since the longest window began
        (another replica's, or from before a restart); at most MAX_TENANTS_SEEN."""
        seen = dict(self._seen)
        if self._tenant_history is not None and len(seen) < MAX_TENANTS_SEEN:
            since = min(window.start for window in windows.values())
            try:
                async with asyncio.timeout(self._history_timeout_s):
                    found = await self._tenant_history(since, MAX_TENANTS_SEEN)
            except Exception as exc:  # the report still shows the tenants seen here
                log.warning("limits: cannot list the ledger's tenants: %s", type(exc).__name__)
                found = []
            for tenant in found:
                if len(seen) >= MAX_TENANTS_SEEN:
                    break
                seen.setdefault(tenant, None)
        return list(seen)

    def state(self) -> GovernorState:
        redis: Literal["ok", "unreachable", "none"] = (
            "none" if self._fallback is None else "ok" if self._redis_ok else "unreachable"
        )
        return GovernorState(
            redis=redis,
            counting="memory" if redis != "ok" else "redis",
            budgets_on_redis_error=self._budget_mode,
            rate_limits_on_redis_error=self._rate_mode,
            admitted=self.admitted,
            admitted_in_process=self.admitted_in_process,
            refused_budget=self.refused_budget,
            refused_rate=self.refused_rate,
            refused_unreachable=self.refused_unreachable,
            settled=self.settled,
            settles_pending=len(self._pending),
            settles_dropped=self.settles_dropped,
            charges_in_process=self.charges_in_process,
            charges_owed=self._unsent_count + sum(len(g.budgets) for _, groups in self._unsure for g in groups),
            charges_owed_dropped=self.charges_owed_dropped,
            history_failures=self.history_failures,
            tenants_seen=len(self._seen),
        )

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the settle task, and connect to Redis in the background (off any request)."""
        self._closed = False
        if self._task is None:
            self._start_task()
        if isinstance(self._primary, RedisCounters) and self._warm_up is None:
            self._warm_up = asyncio.create_task(self._primary.store.warm_up())

    async def flush(self) -> None:
        """Charge every settle queued so far (tests; a drain before shutdown)."""
        async with self._charging:
            await self._charge_pending()

    async def aclose(self) -> None:
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_FLUSH_S):
                await self.flush()
        for task in (self._task, self._warm_up, *self._history_calls.values()):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._task = None
        self._warm_up = None
        await self._primary.aclose()
        if self._fallback is not None:
            await self._fallback.aclose()

    # -- admission --------------------------------------------------------------------------

    async def _check(
        self,
        counters: Counters,
        now: float,
        tenant_id: str,
        plan: Plan,
        windows: dict[Period, Window],
        gcra: Sequence[GcraCheck],
        budgets: Sequence[BudgetCheck],
    ) -> CheckResult | None:
        need_seed = self._history is not None and bool(budgets)
        result = await counters.check(now * 1000, gcra, budgets, need_seed)
        if result is None or result.verdict != "unseeded":
            return result
        # First sight of these counters (a new tenant, a new window, an emptied Redis).
        seeds = await asyncio.gather(
            *(self._seed_for(tenant_id, plan.budgets[i], budgets[i].key, windows) for i in result.unseeded)
        )
        if not await counters.seed(now * 1000, seeds):
            return None
        return await counters.check(now * 1000, gcra, budgets, False)

    async def _check_degraded(
        self,
        now: float,
        tenant_id: str,
        plan: Plan,
        windows: dict[Period, Window],
        gcra: Sequence[GcraCheck],
        budgets: Sequence[BudgetCheck],
    ) -> CheckResult:
        if budgets and self._budget_mode == "closed":
            self.refused_unreachable += 1
            raise BudgetExceeded(budget_store_unreachable(), UNREACHABLE_RETRY_S)
        if gcra and self._rate_mode == "closed":
            self.refused_unreachable += 1
            raise RateLimited(rate_store_unreachable(), UNREACHABLE_RETRY_S)
        assert self._fallback is not None  # in-process counters always answer
        result = await self._check(self._fallback, now, tenant_id, plan, windows, gcra, budgets)
        assert result is not None
        if result.verdict == "admitted":
            self.admitted_in_process += 1
        return result

    def _decide(self, result: CheckResult, plan: Plan, windows: dict[Period, Window], now: float) -> None:
        if result.verdict == "budget":
            self.refused_budget += 1
            budget = plan.budgets[result.index]
            window = windows[budget.period]
            message = budget_refusal(budget, result.spent_nano, result.spent_tokens, window.end)
            raise BudgetExceeded(message, max(window.end_ts - now, 0.001))
        if result.verdict == "rate":
            self.refused_rate += 1
            retry_s = max(result.retry_ms / 1000, 0.001)
            raise RateLimited(rate_refusal(plan.rates[result.index], retry_s), retry_s)
        self.admitted += 1  # "admitted", or counters that vanished between seeding and the check

    # -- the ledger's history -----------------------------------------------------------------

    async def _seed_for(self, tenant_id: str, budget: Budget, key: str, windows: dict[Period, Window]) -> Seed:
        window = windows[budget.period]
        cached = self._history_cache.get(key)
        if cached is None:
            call = self._history_calls.get(key)
            if call is None:
                call = asyncio.create_task(self._ask_history(tenant_id, window.start, budget))
                self._history_calls[key] = call
                call.add_done_callback(lambda _: self._history_calls.pop(key, None))
            cached = await asyncio.shield(call)
            if len(self._history_cache) >= MAX_HISTORY_CACHED:
                del self._history_cache[next(iter(self._history_cache))]
            self._history_cache[key] = cached
        return Seed(key, cached[0], cached[1], window.expire_at_ms)

    async def _ask_history(self, tenant_id: str, start: datetime, budget: Budget) -> tuple[int, int]:
        assert self._history is not None
        try:
            async with asyncio.timeout(self._history_timeout_s):
                usd, tokens = await self._history(tenant_id, start, budget.limit.route, budget.limit.model)
            return to_nano(Decimal(usd)), int(tokens)
        except Exception as exc:
            self.history_failures += 1
            if not self._history_logged:
                self._history_logged = True
                log.warning(
                    "limits: the ledger did not give a tenant's spend so far (%s); its budget counts from 0 "
                    "(logged once)",
                    type(exc).__name__,
                )
            return 0, 0

    async def _read(
        self, tenant_id: str, budgets: Sequence[Budget], keys: list[str], windows: dict[Period, Window]
    ) -> list[Reading]:
        counters: Counters = self._primary
        readings = await counters.read(keys)
        if readings is None and self._fallback is not None:
            counters = self._fallback
            readings = await counters.read(keys)
        if readings is None:
            return [Reading(False, 0, 0) for _ in keys]
        missing = [i for i, r in enumerate(readings) if not r.seeded]
        if self._history is not None and missing:
            seeds = await asyncio.gather(*(self._seed_for(tenant_id, budgets[i], keys[i], windows) for i in missing))
            if await counters.seed(self._clock() * 1000, seeds):
                readings = await counters.read(keys) or readings
        return readings

    def _note_tenant(self, tenant_id: str) -> None:
        if len(self._seen) >= MAX_TENANTS_SEEN:
            del self._seen[next(iter(self._seen))]
        self._seen[tenant_id] = None

    # -- charging -------------------------------------------------------------------------------

    def _start_task(self) -> None:
        try:
            self._task = asyncio.get_running_loop().create_task(self._charge_forever())
        except RuntimeError:  # no loop yet: start() or the next settle on a loop starts it
            self._task = None

    async def _charge_forever(self) -> None:
        while True:
            await self._wake.wait()
            # Let settles gather: one script call per interval, not one per request.
            await asyncio.sleep(self._settle_interval_s)
            self._wake.clear()
            async with self._charging:
                await self._charge_pending()

    async def _charge_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            groups = self._groups(batch)
            now_ms = self._clock() * 1000
            seq = self._next_seq()
            sent = self._primary.sends()
            if await self._primary.charge(now_ms, groups, self._mark(seq)):
                if self._unsure or self._unsent:
                    await self._repay(now_ms)
            elif self._fallback is not None:
                # Redis missed them: counted in-process, so a fail-open admission sees them,
                # and owed to Redis, so the shared budget counts them once it is back.
                self._redis_ok = False
                self.charges_in_process += 1
                await self._fallback.charge(now_ms, groups)
                owed = [ChargeGroup(g.budgets, (), g.head) for g in groups if g.budgets]
                if owed and sent and len(self._unsure) < MAX_UNSURE_CHARGES:
                    self._unsure.append((seq, owed))  # Redis may have applied it: sent again under its seq
                elif owed:
                    self._owe_unsent(owed)
            self.settled += len(batch)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _mark(self, seq: int) -> ChargeMark:
        """The charge's mark; the seqs of charges that may still be sent again are kept."""
        floor = self._unsure[0][0] if self._unsure else seq
        return ChargeMark(self._process, seq, floor, f"{self._namespace}applied:{self._process}")

    def _owe_unsent(self, groups: list[ChargeGroup]) -> None:
        """Charges Redis never saw (its breaker was open): summed per counter."""
        for group in groups:
            owed = self._unsent.setdefault(group.head, {})
            for charge in group.budgets:
                entry = owed.get(charge.key)
                if entry is None:
                    if self._unsent_count >= MAX_OWED_COUNTERS:
                        self.charges_owed_dropped += 1
                        continue
                    entry = owed[charge.key] = [0, 0, charge.expire_at_ms]
                    self._unsent_count += 1
                entry[0] += charge.nano
                entry[1] += charge.tokens

    async def _repay(self, now_ms: float) -> None:
        """Add to Redis what it missed while it was away (counters whose window has not ended),
        once each: a charge that was sent goes again under its own seq (skipped if Redis had
        applied it), those never sent go as one new charge. A counter Redis lost meanwhile is
        seeded from the ledger as the larger of the two, so that counts once too."""
        while self._unsure:
            seq, groups = self._unsure[0]
            live = _live(groups, now_ms)
            if live and not await self._primary.charge(now_ms, live, self._mark(seq)):
                return
            self._unsure.popleft()
        if self._unsent:
            groups = _live(
                [
                    ChargeGroup(tuple(BudgetCharge(k, n, t, e) for k, (n, t, e) in owed.items()), (), head)
                    for head, owed in self._unsent.items()
                ],
                now_ms,
            )
            self._unsent.clear()
            self._unsent_count = 0
            seq = self._next_seq()
            if groups and not await self._primary.charge(now_ms, groups, self._mark(seq)):
                self._unsure.append((seq, groups))  # sent now: from here on it may have been applied

    def _groups(self, batch: list[_Settle]) -> list[ChargeGroup]:
        """Sums per counter key, grouped per tenant (its keys share one Redis Cluster slot)."""
        tenants: dict[str, tuple[dict[str, list[int]], dict[str, float]]] = {}
        for item in batch:
            plan = item.plan
            spend, tokens = tenants.setdefault(plan.keys.head, ({}, {}))
            if plan.budgets:
                windows = self._windows.at(item.at)
                checks = plan.budget_checks(windows["day"].tag, windows["month"].tag)
                for budget, check in zip(plan.budgets, checks, strict=True):
                    entry = spend.setdefault(check.key, [0, 0, windows[budget.period].expire_at_ms])
                    entry[0] += item.nano
                    entry[1] += item.tokens
            if item.tokens:
                for rate, gcra in zip(plan.rates, plan.gcra(item.user_id), strict=True):
                    if rate.tokens:
                        tokens[gcra.key] = tokens.get(gcra.key, 0.0) + item.tokens * rate.interval_ms
        return [
            ChargeGroup(
                tuple(BudgetCharge(key, nano, toks, expire) for key, (nano, toks, expire) in spend.items()),
                tuple(TokenCharge(key, add) for key, add in tokens.items()),
                head,
            )
            for head, (spend, tokens) in tenants.items()
        ]


def _live(groups: list[ChargeGroup], now_ms: float) -> list[ChargeGroup]:
    """The groups' budget charges whose window has not ended."""
    kept = [ChargeGroup(tuple(c for c in g.budgets if c.expire_at_ms > now_ms), (), g.head) for g in groups]
    return [g for g in kept if g.budgets]


def build_governor(
    config: GatewayConfig,
    *,
    history: SpendHistory | None = None,
    tenants: TenantHistory | None = None,
    clock: Callable[[], float] = time.time,
) -> Governor | None:
    """None when neither budgets nor rate limits are configured. Counters in Redis when the
    cache has one (under its key_prefix + ``limits:``), else in-process."""
    if not config.budgets.enabled and not config.rate_limits.enabled:
        return None
    cache = config.cache
    counters: Counters
    if cache.redis_url is None and cache.redis_mode != "sentinel":
        counters = MemoryCounters()
    else:
        counters = RedisCounters(create_redis_store(cache))
    return Governor(
        config.budgets,
        config.rate_limits,
        counters,
        clock=clock,
        history=history,
        tenants=tenants,
        namespace=f"{cache.key_prefix}limits:",
    )
