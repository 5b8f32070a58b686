from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.limits import Caller, build_governor
from gateway.limits.counters import MemoryCounters
from gateway.limits.redis_counters import RedisCounters
from tests.support.redis import delete_prefix, unique_prefix


@pytest.mark.asyncio
async def test_no_governor_without_budgets_or_rate_limits() -> None:
    assert build_governor(parse_config({}, "test", env={})) is None
    assert build_governor(parse_config({"rate_limits": {"overrides": [{"tenant": "x"}]}}, "test", env={})) is None


@pytest.mark.asyncio
async def test_in_process_without_redis_and_redis_with_it(redis_url: str) -> None:
    memory = build_governor(parse_config({"rate_limits": {"default": {"rpm": 1}}}, "test", env={}))
    assert memory is not None and isinstance(memory._primary, MemoryCounters)
    assert memory.state().redis == "none"
    await memory.aclose()
    prefix = unique_prefix()
    raw = {
        "budgets": {"default": [{"period": "day", "usd": 1}]},
        "cache": {"redis_url": redis_url, "key_prefix": prefix},
    }
    shared = build_governor(parse_config(raw, "test", env={}))
    assert shared is not None and isinstance(shared._primary, RedisCounters)
    await shared.start()
    caller = Caller("t", "u", "llm", "openai", "gpt-4o", None)
    await shared.admit(caller)
    assert shared.state().redis == "ok"
    [state] = await shared.budget_state("t")
    assert state.limit_usd == 1
    await shared.aclose()
    delete_prefix(redis_url, prefix)


def test_settle_without_a_running_loop_never_raises() -> None:
    governor = build_governor(parse_config({"rate_limits": {"default": {"tpm": 10}}}, "test", env={}))
    assert governor is not None
    governor.settle(Caller("t", "u", "llm", "openai", "m", None), 0, 5)  # type: ignore[arg-type]
    assert governor.state().settles_pending == 1
