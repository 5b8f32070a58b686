"""The counters in Redis, shared by every worker and replica: one Lua script per operation,
run under the cache store's time budget and breaker (``RedisStore.script``). The semantics
are those of ``MemoryCounters`` (see ``gateway.limits.counters``); the clock is the caller's,
passed in, so every replica must keep its clock in sync (NTP) for windows and GCRA to agree."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gateway.cache.redis_store import RedisStore
from gateway.limits.counters import (
    BudgetCheck,
    ChargeGroup,
    ChargeMark,
    CheckResult,
    GcraCheck,
    Reading,
    Seed,
)

# KEYS: gcra keys, then budget keys. ARGV: now_ms, number of gcra keys, need_seed (0/1), then
# (interval_ms, cost) per gcra key, then (limit_nano, limit_tokens) per budget key.
# Reply: {0} admitted, {1, i, retry_ms} rate, {2, i, nano, tokens} budget, {3, {i...}} unseeded.
CHECK = """
local now = tonumber(ARGV[1])
local ng = tonumber(ARGV[2])
local need_seed = ARGV[3] == '1'
local nb = #KEYS - ng
local base = 3 + 2 * ng
local unseeded = {}
for i = 1, nb do
  local v = redis.call('HMGET', KEYS[ng + i], 's', 'u', 't')
  if need_seed and not v[1] then
    unseeded[#unseeded + 1] = i - 1
  else
    local lu = tonumber(ARGV[base + 2 * i - 1])
    local lt = tonumber(ARGV[base + 2 * i])
    local u = v[2] or '0'
    local t = v[3] or '0'
    if (lu >= 0 and tonumber(u) >= lu) or (lt >= 0 and tonumber(t) >= lt) then
      return {2, i - 1, u, t}
    end
  end
end
if #unseeded > 0 then
  return {3, unseeded}
end
local news = {}
for i = 1, ng do
  local interval = tonumber(ARGV[2 + 2 * i])
  local cost = tonumber(ARGV[3 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  if cost > 0 then
    local new = tat + interval * cost
    if new - now > 60000 then
      return {1, i - 1, string.format('%.3f', new - 60000 - now)}
    end
    news[i] = new
  elseif tat - now >= 60000 then
    return {1, i - 1, string.format('%.3f', tat - 60000 - now)}
  end
end
for i = 1, ng do
  if news[i] then
    redis.call('SET', KEYS[i], string.format('%.3f', news[i]), 'PX', math.ceil(news[i] - now) + 1000)
  end
end
return {0}
"""

# Expiry times are sent as the gateway's clock reads them and applied relative to its now
# (PEXPIRE, not PEXPIREAT): a gateway clock a little off Redis's does not shorten a window.
# KEYS: budget keys, then token keys, then (with a seq) the marker. ARGV: now_ms, number of
# budget keys, seq ('' for none), floor, then (nano, tokens, expire_at_ms) per budget key, then
# add_ms per token key. The marker is a sorted set of the seqs one process has applied: a seq
# found there was applied before (its reply was lost) and is skipped (reply 0).
CHARGE = """
local now = tonumber(ARGV[1])
local nb = tonumber(ARGV[2])
local nk = #KEYS
if ARGV[3] ~= '' then
  local marker = KEYS[nk]
  nk = nk - 1
  if redis.call('ZSCORE', marker, ARGV[3]) then return 0 end
  redis.call('ZREMRANGEBYSCORE', marker, '-inf', '(' .. ARGV[4])
  redis.call('ZADD', marker, ARGV[3], ARGV[3])
  redis.call('PEXPIRE', marker, 604800000)
end
for i = 1, nb do
  local k = KEYS[i]
  local p = 3 * i + 2
  if ARGV[p] ~= '0' then redis.call('HINCRBY', k, 'u', ARGV[p]) end
  if ARGV[p + 1] ~= '0' then redis.call('HINCRBY', k, 't', ARGV[p + 1]) end
  redis.call('PEXPIRE', k, math.max(1000, math.ceil(tonumber(ARGV[p + 2]) - now)))
end
for j = 1, nk - nb do
  local k = KEYS[nb + j]
  local tat = tonumber(redis.call('GET', k) or '0')
  if tat < now then tat = now end
  tat = tat + tonumber(ARGV[4 + 3 * nb + j])
  redis.call('SET', k, string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
end
return 1
"""
# KEYS: budget keys. ARGV: now_ms, then (nano, tokens, expire_at_ms) per key. Raises each
# unseeded counter to at least the ledger's figures and marks it seeded; a seeded one is left
# alone, so two replicas seeding at once count the ledger once.
SEED = """
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
  local k = KEYS[i]
  local p = 3 * i - 1
  if redis.call('HEXISTS', k, 's') == 0 then
    local v = redis.call('HMGET', k, 'u', 't')
    if tonumber(ARGV[p]) > tonumber(v[1] or '0') then redis.call('HSET', k, 'u', ARGV[p]) end
    if tonumber(ARGV[p + 1]) > tonumber(v[2] or '0') then redis.call('HSET', k, 't', ARGV[p + 1]) end
    redis.call('HSET', k, 's', '1')
    redis.call('PEXPIRE', k, math.max(1000, math.ceil(tonumber(ARGV[p + 2]) - now)))
  end
end
return 1
"""

READ = """
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 's', 'u', 't')
  out[i] = {v[1] and '1' or '0', v[2] or '0', v[3] or '0'}
end
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(value: float) -> str:
    return f"{value:.3f}"


def parse_check(reply: Any) -> CheckResult:
    code = int(reply[0])
    if code == 0:
        return CheckResult("admitted")
    if code == 1:
        return CheckResult("rate", int(reply[1]), retry_ms=float(_text(reply[2])))
    if code == 2:
        return CheckResult("budget", int(reply[1]), spent_nano=int(_text(reply[2])), spent_tokens=int(_text(reply[3])))
    return CheckResult("unseeded", unseeded=tuple(int(i) for i in reply[1]))


class RedisCounters:
    name = "redis"

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._check = store.script(CHECK)
        self._charge = store.script(CHARGE)
        self._seed = store.script(SEED)
        self._read = store.script(READ)

    @property
    def reachable(self) -> bool:
        return self.store.breaker.state == "closed"

    async def check(
        self, now_ms: float, gcra: Sequence[GcraCheck], budgets: Sequence[BudgetCheck], need_seed: bool
    ) -> CheckResult | None:
        args: list[str | int | float] = [_ms(now_ms), len(gcra), "1" if need_seed else "0"]
        for rate in gcra:
            args += (_ms(rate.interval_ms), rate.cost)
        for budget in budgets:
            args += (budget.limit_nano, budget.limit_tokens)
        reply = await self._check([r.key for r in gcra] + [b.key for b in budgets], args)
        return None if reply is None else parse_check(reply)

    async def seed(self, now_ms: float, seeds: Sequence[Seed]) -> bool:
        if not seeds:
            return True
        args: list[str | int | float] = [_ms(now_ms)]
        for seed in seeds:
            args += (seed.nano, seed.tokens, seed.expire_at_ms)
        return await self._seed([s.key for s in seeds], args) is not None

    def sends(self) -> bool:
        return self.store.breaker.available()

    async def charge(self, now_ms: float, groups: Sequence[ChargeGroup], mark: ChargeMark | None = None) -> bool:
        if not groups:
            return True
        if self.store.is_cluster:  # a script's keys must share a slot: one call per tenant, a marker each
            done = await asyncio.gather(
                *(self._charge_group(now_ms, [group], mark, f"{group.head}applied:") for group in groups)
            )
            return all(done)
        return await self._charge_group(now_ms, groups, mark, None)

    async def _charge_group(
        self, now_ms: float, groups: Sequence[ChargeGroup], mark: ChargeMark | None, marker_prefix: str | None
    ) -> bool:
        budgets = [b for group in groups for b in group.budgets]
        tokens = [t for group in groups for t in group.tokens]
        keys = [b.key for b in budgets] + [t.key for t in tokens]
        args: list[str | int | float] = [_ms(now_ms), len(budgets)]
        if mark is None:
            args += ("", 0)
        else:
            args += (mark.seq, mark.floor)
            keys.append(mark.key if marker_prefix is None else f"{marker_prefix}{mark.process}")
        for budget in budgets:
            args += (budget.nano, budget.tokens, budget.expire_at_ms)
        args += [_ms(t.add_ms) for t in tokens]
        return await self._charge(keys, args) is not None

    async def read(self, keys: Sequence[str]) -> list[Reading] | None:
        if not keys:
            return []
        reply = await self._read(list(keys), [])
        if reply is None:
            return None
        return [Reading(_text(s) == "1", int(_text(u)), int(_text(t))) for s, u, t in reply]

    async def aclose(self) -> None:
        await self.store.aclose()
