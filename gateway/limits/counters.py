"""Where the limits count: the protocol, its value types, and the in-process implementation.

Both implementations share the semantics (the Redis one in Lua, this one in Python), and the
same tests run against both:

* ``check`` looks at the caller's budget counters and GCRA arrival times; if nothing refuses,
  it consumes one request from each request limit, atomically; a refusal consumes nothing.
* GCRA: ``tat`` is the theoretical arrival time in ms. A request limit of N per minute takes
  ``interval = 60000 / N`` per request and admits while ``max(tat, now) + interval - now <=
  60000`` (a burst of N from idle, then one each interval); the refusal's wait is exact. A
  token limit is charged after the reply (``tokens * interval``) and admits while ``tat -
  now < 60000``; an overrun is carried as debt.
* A budget counter (per tenant, scope and window) holds nano-USD ``u``, tokens ``t`` and ``s``
  once it was seeded from the ledger. ``check`` reports unseeded counters (when asked to) and
  decides nothing then; ``seed`` raises each to at least the ledger's figures, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

WINDOW_MS = 60_000.0
MAX_ENTRIES = 200_000  # in-process counters kept at most; the oldest go first beyond that


@dataclass(frozen=True, slots=True)
class GcraCheck:
    key: str
    interval_ms: float
    cost: int  # 1 for a request limit, 0 for a token limit (charged later)


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    key: str
    limit_nano: int  # -1: none
    limit_tokens: int  # -1: none


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Literal["admitted", "rate", "budget", "unseeded"]
    index: int = -1  # which GcraCheck (rate) or BudgetCheck (budget) refused
    retry_ms: float = 0.0  # rate: when the next request would be admitted
    spent_nano: int = 0  # budget: the counter that refused
    spent_tokens: int = 0
    unseeded: tuple[int, ...] = ()  # budget checks whose counters the ledger has not seeded


@dataclass(frozen=True, slots=True)
class Seed:
    key: str
    nano: int
    tokens: int
    expire_at_ms: int


@dataclass(frozen=True, slots=True)
class BudgetCharge:
    key: str
    nano: int
    tokens: int
    expire_at_ms: int


@dataclass(frozen=True, slots=True)
class TokenCharge:
    key: str
    add_ms: float  # tokens * the limit's interval


@dataclass(frozen=True, slots=True)
class ChargeGroup:
    """One tenant's charges (on a Redis Cluster one script call per tenant)."""

    budgets: tuple[BudgetCharge, ...]
    tokens: tuple[TokenCharge, ...]
    head: str = ""  # the tenant's key prefix (its Redis Cluster slot)


@dataclass(frozen=True, slots=True)
class ChargeMark:
    """Makes a charge apply at most once: the store remembers ``seq`` under ``process`` and
    skips a charge it has applied before (one sent again after its reply was lost). Seqs
    below ``floor`` (none of them will be sent again) are forgotten."""

    process: str
    seq: int
    floor: int
    key: str  # the marker's key (on a Redis Cluster each tenant's is ``{head}applied:{process}``)


@dataclass(frozen=True, slots=True)
class Reading:
    seeded: bool
    nano: int
    tokens: int


class Counters(Protocol):
    name: str  # "redis" or "memory"

    async def check(
        self, now_ms: float, gcra: Sequence[GcraCheck], budgets: Sequence[BudgetCheck], need_seed: bool
    ) -> CheckResult | None:
        """None: the store did not answer in time (or its breaker is open)."""
        ...

    async def seed(self, now_ms: float, seeds: Sequence[Seed]) -> bool: ...

    async def charge(self, now_ms: float, groups: Sequence[ChargeGroup], mark: ChargeMark | None = None) -> bool:
        """False: not applied, or not known to be (no answer in time)."""
        ...

    def sends(self) -> bool:
        """Whether a call now would reach the store (False: refused unsent, e.g. an open breaker)."""
        ...

    async def read(self, keys: Sequence[str]) -> list[Reading] | None: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Spend:
    seeded: bool
    nano: int
    tokens: int
    expire_at_ms: float


class MemoryCounters:
    """In-process counters: one process's view (no sharing between workers or replicas)."""

    name = "memory"

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._tats: dict[str, tuple[float, float]] = {}  # key -> (tat, expires at)
        self._spend: dict[str, _Spend] = {}
        self._max = max_entries

    async def check(
        self, now_ms: float, gcra: Sequence[GcraCheck], budgets: Sequence[BudgetCheck], need_seed: bool
    ) -> CheckResult | None:
        return self.check_now(now_ms, gcra, budgets, need_seed)

    def check_now(
        self, now_ms: float, gcra: Sequence[GcraCheck], budgets: Sequence[BudgetCheck], need_seed: bool
    ) -> CheckResult:
        unseeded: list[int] = []
        for index, budget in enumerate(budgets):
            spend = self._spend_of(budget.key, now_ms)
            if spend is None or (need_seed and not spend.seeded):
                if need_seed:
                    unseeded.append(index)
                continue
            if (0 <= budget.limit_nano <= spend.nano) or (0 <= budget.limit_tokens <= spend.tokens):
                return CheckResult("budget", index, spent_nano=spend.nano, spent_tokens=spend.tokens)
        if unseeded:
            return CheckResult("unseeded", unseeded=tuple(unseeded))
        updates: list[tuple[str, float]] = []
        for index, rate in enumerate(gcra):
            tat = max(self._tat(rate.key, now_ms), now_ms)
            if rate.cost:
                new = tat + rate.interval_ms * rate.cost
                if new - now_ms > WINDOW_MS:
                    return CheckResult("rate", index, retry_ms=new - WINDOW_MS - now_ms)
                updates.append((rate.key, new))
            elif tat - now_ms >= WINDOW_MS:
                return CheckResult("rate", index, retry_ms=tat - WINDOW_MS - now_ms)
        for key, new in updates:
            self._set_tat(key, new, now_ms)
        return CheckResult("admitted")

    async def seed(self, now_ms: float, seeds: Sequence[Seed]) -> bool:
        for seed in seeds:
            spend = self._spend.get(seed.key)
            if spend is None:
                self._store(seed.key, _Spend(True, seed.nano, seed.tokens, seed.expire_at_ms))
            elif not spend.seeded:
                spend.seeded = True
                spend.nano = max(spend.nano, seed.nano)
                spend.tokens = max(spend.tokens, seed.tokens)
                spend.expire_at_ms = seed.expire_at_ms
        return True

    def sends(self) -> bool:
        return True

    async def charge(self, now_ms: float, groups: Sequence[ChargeGroup], mark: ChargeMark | None = None) -> bool:
        for group in groups:
            for budget in group.budgets:
                spend = self._spend_of(budget.key, now_ms)
                if spend is None:
                    self._store(budget.key, _Spend(False, budget.nano, budget.tokens, budget.expire_at_ms))
                else:
                    spend.nano += budget.nano
                    spend.tokens += budget.tokens
                    spend.expire_at_ms = budget.expire_at_ms
            for tokens in group.tokens:
                self._set_tat(tokens.key, max(self._tat(tokens.key, now_ms), now_ms) + tokens.add_ms, now_ms)
        return True

    async def read(self, keys: Sequence[str]) -> list[Reading] | None:
        readings = []
        for key in keys:
            spend = self._spend.get(key)
            readings.append(Reading(False, 0, 0) if spend is None else Reading(spend.seeded, spend.nano, spend.tokens))
        return readings

    async def aclose(self) -> None:
        self._tats.clear()
        self._spend.clear()

    def _spend_of(self, key: str, now_ms: float) -> _Spend | None:
        spend = self._spend.get(key)
        if spend is not None and spend.expire_at_ms <= now_ms:
            del self._spend[key]
            return None
        return spend

    def _tat(self, key: str, now_ms: float) -> float:
        found = self._tats.get(key)
        return found[0] if found is not None and found[1] > now_ms else 0.0

    def _set_tat(self, key: str, tat: float, now_ms: float) -> None:
        if key not in self._tats and len(self._tats) >= self._max:
            self._evict(self._tats, now_ms)
        # Kept a second past the point where it no longer limits anything, like the Redis TTL.
        self._tats[key] = (tat, tat + 1000.0)

    def _store(self, key: str, spend: _Spend) -> None:
        if len(self._spend) >= self._max:
            self._evict(self._spend, 0.0)
        self._spend[key] = spend

    @staticmethod
    def _evict(table: dict[str, _Spend] | dict[str, tuple[float, float]], now_ms: float) -> None:
        # The oldest tenth goes (dicts keep insertion order): bounded memory, O(1) amortised.
        for key in list(table)[: max(1, len(table) // 10)]:
            del table[key]
