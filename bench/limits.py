"""The cost of the governor's admit() per call: in-process counters, then Redis.

Every caller has two budgets (day, month) and four rate limits (rpm, tpm, user_rpm,
user_tpm) set high enough never to refuse, over 1,000 tenants; admit() is awaited one call
at a time, so each figure is one call's whole cost (Python plus, for Redis, one Lua script
round trip on loopback). settle() is timed too (it only queues; the charge runs later).

Run: .venv/bin/python bench/limits.py [calls] [redis_url]
     (default 20000 and redis://127.0.0.1:6379/0; keys under a unique prefix, removed after)
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.cache.redis_store import RedisStore, create_redis_store
from gateway.config import BudgetsConfig, CacheConfig, RateLimitsConfig
from gateway.limits import Caller, Governor
from gateway.limits.counters import Counters, MemoryCounters
from gateway.limits.redis_counters import RedisCounters
from tests.support.redis import delete_prefix, unique_prefix

BUDGETS = BudgetsConfig.model_validate(
    {"default": [{"period": "day", "usd": 1_000_000}, {"period": "month", "usd": 1_000_000, "tokens": 10**12}]}
)
RATES = RateLimitsConfig.model_validate(
    {"default": {"rpm": 10_000_000, "tpm": 10**12, "user_rpm": 10_000_000, "user_tpm": 10**12}}
)
CALLERS = [Caller(f"tenant-{i:04d}", f"user-{i % 7}", "llm", "openai", "gpt-4o", "gpt") for i in range(1000)]


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(name: str, counters: Counters, namespace: str, calls: int) -> None:
    governor = Governor(BUDGETS, RATES, counters, namespace=namespace)
    await governor.start()
    try:
        for caller in CALLERS:  # warm: rules resolved, scripts loaded, connections open
            await governor.admit(caller)
        admit: list[float] = []
        settle: list[float] = []
        gc.collect()
        gc.freeze()
        cpu = time.process_time()
        for i in range(calls):
            caller = CALLERS[i % len(CALLERS)]
            started = time.perf_counter()
            await governor.admit(caller)
            admit.append(time.perf_counter() - started)
            started = time.perf_counter()
            governor.settle(caller, Decimal("0.0012"), 300)
            settle.append(time.perf_counter() - started)
            if i % 200 == 199:
                await governor.flush()  # the background charge, outside the timed calls
        cpu_per_call = (time.process_time() - cpu) / calls
        gc.unfreeze()
        admit.sort()
        settle.sort()
        print(
            f"{name:10} admit p50 {_pct(admit, 0.5) * 1e6:7.1f} us  p99 {_pct(admit, 0.99) * 1e6:7.1f} us   "
            f"settle p50 {_pct(settle, 0.5) * 1e6:5.1f} us  p99 {_pct(settle, 0.99) * 1e6:5.1f} us   "
            f"CPU per admit+settle (incl. batched charges) {cpu_per_call * 1e6:6.1f} us"
        )
        assert governor.state().refused_budget == governor.state().refused_rate == 0
    finally:
        await governor.aclose()


async def _floor(store: RedisStore, calls: int) -> None:
    """One GET through the same store: the round trip every Redis admit() pays at least."""
    times: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        await store.get_many(["dgw-bench-floor"])
        times.append(time.perf_counter() - started)
    times.sort()
    print(f"{'redis GET':10} floor p50 {_pct(times, 0.5) * 1e6:7.1f} us  p99 {_pct(times, 0.99) * 1e6:7.1f} us")


async def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    url = sys.argv[2] if len(sys.argv) > 2 else "redis://127.0.0.1:6379/0"
    print(f"{calls} calls, 1,000 tenants, 2 budgets and 4 rate limits each")
    await _run("in-process", MemoryCounters(), "limits:", calls)
    prefix = unique_prefix()
    store = create_redis_store(CacheConfig.model_validate({"redis_url": url, "timeout_ms": 1000}))
    await _floor(store, calls)
    try:
        await _run("redis", RedisCounters(store), prefix + "limits:", calls)
    finally:
        delete_prefix(url, prefix)


if __name__ == "__main__":
    asyncio.run(main())
