"""Budgets per tenant, in-process and on real Redis (same tests, both kinds)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from gateway.errors import BudgetExceeded
from gateway.limits import Governor
from tests.support.redis import RedisProcess, free_port
from tests.unit.limits.support import KINDS, Clock, caller, counters_for, governors

DAILY_5 = {"default": [{"period": "day", "usd": 5}]}


async def spend(governor: Governor, usd: str, tokens: int = 0, **who: str | None) -> None:
    governor.settle(caller(**who), Decimal(usd), tokens)  # type: ignore[arg-type]
    await governor.flush()


async def admits(governor: Governor, **who: str | None) -> bool:
    try:
        await governor.admit(caller(**who))  # type: ignore[arg-type]
    except BudgetExceeded:
        return False
    return True


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_over_budget_is_refused_with_the_budget_spent_limit_and_reset(kind: str, redis_url: str) -> None:
    clock = Clock(datetime(2026, 12, 3, 12, 0, tzinfo=UTC))
    async with governors(kind, redis_url) as made:
        governor = await made.make(budgets=DAILY_5, clock=clock)
        assert await admits(governor)
        await spend(governor, "4.99")
        assert await admits(governor)
        await spend(governor, "0.0223")
        with pytest.raises(BudgetExceeded) as refused:
            await governor.admit(caller())
        assert str(refused.value) == (
            "tenant budget exceeded: daily budget: spent $5.0123 of $5.00 (resets 2026-12-04 00:00 UTC)"
        )
        assert refused.value.retry_after_s == pytest.approx(12 * 3600)
        assert await admits(governor, tenant="tenant-b")  # another tenant has its own budget
        state = governor.state()
        assert (state.refused_budget, state.admitted) == (1, 3)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_token_budgets_and_a_streams_overrun(kind: str, redis_url: str) -> None:
    clock = Clock()
    async with governors(kind, redis_url) as made:
        governor = await made.make(budgets={"default": [{"period": "month", "tokens": 1_000_000}]}, clock=clock)
        await governor.admit(caller())
        # A stream admitted under the budget crossed it midway: it finished, the overrun is counted.
        await spend(governor, "0.5", 1_234_567)
        with pytest.raises(BudgetExceeded) as refused:
            await governor.admit(caller())
        assert str(refused.value) == (
            "tenant budget exceeded: monthly budget: used 1,234,567 of 1,000,000 tokens (resets 2027-01-01 00:00 UTC)"
        )
        [state] = await governor.budget_state("tenant-a")
        assert (state.spent_tokens, state.limit_tokens, state.over) == (1_234_567, 1_000_000, True)
        assert state.spent_usd == Decimal("0.5")
        assert state.resets_at == datetime(2027, 1, 1, tzinfo=ZoneInfo("UTC"))


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_day_and_month_roll_over_with_the_clock_in_a_non_utc_zone(kind: str, redis_url: str) -> None:
    zone = ZoneInfo("America/New_York")
    clock = Clock(datetime(2026, 12, 31, 22, 0, tzinfo=zone))
    budgets = {"timezone": "America/New_York", "default": [{"period": "day", "usd": 1}, {"period": "month", "usd": 3}]}
    async with governors(kind, redis_url) as made:
        governor = await made.make(budgets=budgets, clock=clock)
        await spend(governor, "1")
        with pytest.raises(
            BudgetExceeded, match=r"daily budget: spent \$1.0000 of \$1.00 \(resets 2027-01-01 00:00 EST\)"
        ):
            await governor.admit(caller())
        clock.set(datetime(2026, 12, 31, 23, 59, 59, tzinfo=zone))  # still the same local day (UTC is past 04:00)
        assert not await admits(governor)
        clock.set(datetime(2027, 1, 1, 0, 0, 1, tzinfo=zone))
        assert await admits(governor)  # a new day and a new month
        await spend(governor, "0.9")
        clock.set(datetime(2027, 1, 2, 9, 0, tzinfo=zone))
        await spend(governor, "0.9")
        clock.set(datetime(2027, 1, 3, 9, 0, tzinfo=zone))
        await spend(governor, "0.9")
        clock.set(datetime(2027, 1, 4, 9, 0, tzinfo=zone))
        await spend(governor, "0.4")  # 3.10 this month, 0.40 today
        with pytest.raises(BudgetExceeded) as refused:
            await governor.admit(caller())
        assert "monthly budget: spent $3.1000 of $3.00 (resets 2027-02-01 00:00 EST)" in str(refused.value)
        assert refused.value.retry_after_s == pytest.approx(datetime(2027, 2, 1, tzinfo=zone).timestamp() - clock.now)
        states = {s.period: s for s in await governor.budget_state()}
        assert states["day"].spent_usd == Decimal("0.4") and not states["day"].over
        assert states["month"].spent_usd == Decimal("3.1") and states["month"].over
        assert states["day"].resets_at == datetime(2027, 1, 5, tzinfo=zone)
        clock.set(datetime(2027, 2, 1, 0, 0, tzinfo=zone))
        assert await admits(governor)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_overrides_by_id_and_glob_and_budgets_narrowed_to_a_route_or_model(kind: str, redis_url: str) -> None:
    clock = Clock()
    budgets = {
        "default": [{"period": "day", "usd": 1}],
        "overrides": [
            {"tenant": "vip", "limits": [{"period": "day", "usd": 100}]},
            {
                "tenant": "team-*",
                "limits": [
                    {"period": "day", "usd": 2, "route": "gpt4"},
                    {"period": "day", "usd": 1, "model": "claude-*"},
                ],
            },
            {"tenant": "free-[0-9]", "limits": []},  # no budget at all
        ],
    }
    async with governors(kind, redis_url) as made:
        governor = await made.make(budgets=budgets, clock=clock)
        await spend(governor, "50", tenant="vip")
        assert await admits(governor, tenant="vip")
        await spend(governor, "50", tenant="free-1")
        assert await admits(governor, tenant="free-1")
        await spend(governor, "1", tenant="free-x")  # not [0-9]: the default budget
        assert not await admits(governor, tenant="free-x")
        # team-*: only the gpt4 route's calls count against the first, only claude-* models against the second.
        await spend(governor, "3", tenant="team-a", route="other", model="gpt-4o")
        assert await admits(governor, tenant="team-a", route="gpt4", model="gpt-4o")
        await spend(governor, "2", tenant="team-a", route="gpt4", model="gpt-4o")
        assert not await admits(governor, tenant="team-a", route="gpt4", model="gpt-4o")
        assert not await admits(governor, tenant="team-a", route="gpt4", model="claude-3")
        assert await admits(governor, tenant="team-a", route="other", model="gpt-4o")
        assert await admits(governor, tenant="team-a", route=None, model="claude-3")
        await spend(governor, "1", tenant="team-a", route=None, model="claude-3")
        with pytest.raises(BudgetExceeded, match=r"daily budget for model claude-\*: spent \$1.0000 of \$1.00"):
            await governor.admit(caller(tenant="team-a", route="other", model="claude-3"))
        names = {(s.name, s.spent_usd) for s in await governor.budget_state("team-a")}
        assert names == {("daily budget on route gpt4", Decimal(2)), ("daily budget for model claude-*", Decimal(1))}


@pytest.mark.asyncio
async def test_two_governors_sharing_redis_enforce_one_budget(redis_url: str) -> None:
    clock = Clock()
    async with governors("redis", redis_url) as made:
        one = await made.make(budgets={"default": [{"period": "day", "usd": 10}]}, clock=clock)
        two = await made.make(budgets={"default": [{"period": "day", "usd": 10}]}, clock=clock)
        await spend(one, "6")
        assert await admits(two)
        await spend(two, "4")
        assert not await admits(one)
        assert not await admits(two)

        # Concurrent requests of $1 each: the overshoot is bounded by the requests in flight.
        async def worker(governor: Governor, tenant: str) -> int:
            served = 0
            while await admits(governor, tenant=tenant):
                await asyncio.sleep(0.001)  # the upstream call
                served += 1
                await spend(governor, "1", tenant=tenant)
            return served

        in_flight = 4  # two workers per governor
        served = await asyncio.gather(*(worker(g, "shared") for g in (one, two, one, two)))
        assert 10 <= sum(served) <= 10 + in_flight - 1
        spent = {s.spent_usd for g in (one, two) for s in await g.budget_state("shared")}
        assert spent == {Decimal(sum(served))}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_counters_rebuilt_from_the_ledger_once_per_tenant_and_window(kind: str, redis_url: str) -> None:
    clock = Clock()
    calls: list[tuple[str, datetime, str | None, str | None]] = []

    async def history(tenant: str, start: datetime, route: str | None, model: str | None) -> tuple[Decimal, int]:
        calls.append((tenant, start, route, model))
        await asyncio.sleep(0.01)
        return Decimal(4), 1000

    async with governors(kind, redis_url) as made:
        governor = await made.make(budgets=DAILY_5, clock=clock, history=history)
        assert all(await asyncio.gather(*(admits(governor) for _ in range(5))))
        assert calls == [("tenant-a", datetime(2026, 12, 3, tzinfo=ZoneInfo("UTC")), None, None)]
        [state] = await governor.budget_state("tenant-a")
        assert (state.spent_usd, state.spent_tokens) == (Decimal(4), 1000)  # $1 left of $5
        await spend(governor, "0.99")
        assert await admits(governor)
        await spend(governor, "0.02")
        assert not await admits(governor)
        assert len(calls) == 1
        clock.advance(24 * 3600)  # a new window: asked again, for the new day
        assert await admits(governor)
        assert len(calls) == 2 and calls[1][1] == datetime(2026, 12, 4, tzinfo=ZoneInfo("UTC"))


@pytest.mark.asyncio
async def test_two_replicas_rebuilding_at_once_count_the_ledger_once(redis_url: str) -> None:
    clock = Clock()

    async def history(tenant: str, start: datetime, route: str | None, model: str | None) -> tuple[Decimal, int]:
        return Decimal(3), 0

    async with governors("redis", redis_url) as made:
        one = await made.make(budgets=DAILY_5, clock=clock, history=history)
        two = await made.make(budgets=DAILY_5, clock=clock, history=history)
        assert all(await asyncio.gather(admits(one), admits(two), admits(one), admits(two)))
        [state] = await one.budget_state("tenant-a")
        assert state.spent_usd == Decimal(3)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_failing_ledger_starts_the_budget_from_zero(kind: str, redis_url: str) -> None:
    clock = Clock()

    async def broken(tenant: str, start: datetime, route: str | None, model: str | None) -> tuple[Decimal, int]:
        raise OSError("the ledger is down")

    async def slow(tenant: str, start: datetime, route: str | None, model: str | None) -> tuple[Decimal, int]:
        await asyncio.sleep(30)
        return Decimal(100), 0

    async with governors(kind, redis_url) as made:
        governor = await made.make(budgets=DAILY_5, clock=clock, history=broken)
        assert await admits(governor)
        assert governor.state().history_failures == 1
        other = await made.make(budgets={"default": [{"period": "month", "usd": 5}]}, clock=clock, history=slow)
        started = asyncio.get_running_loop().time()
        assert await admits(other, tenant="slow-tenant")
        assert asyncio.get_running_loop().time() - started < 5  # the history's short timeout
        assert other.state().history_failures == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_hostile_tenant_ids_have_their_own_budgets(kind: str, redis_url: str) -> None:
    clock = Clock()
    hostile = ["t" * 10_000, "t" * 10_001, "租户-🙂", "a*b?c[d]", "quote'\"`;DROP TABLE usage;--", "line\nbreak\r\0"]
    async with governors(kind, redis_url) as made:
        governor = await made.make(budgets=DAILY_5, clock=clock)
        for index, tenant in enumerate(hostile):
            await spend(governor, str(4 + index), tenant=tenant)
        for index, tenant in enumerate(hostile):
            assert await admits(governor, tenant=tenant) == (index == 0)
        states = {s.tenant_id: s.spent_usd for s in await governor.budget_state()}
        assert states == {tenant: Decimal(4 + index) for index, tenant in enumerate(hostile)}
        for tenant in hostile:  # never in a message
            try:
                await governor.admit(caller(tenant=tenant))
            except BudgetExceeded as refused:
                assert tenant not in str(refused) and "t" * 64 not in str(refused)


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_unreachable_fails_open_or_closed_as_configured(mode: str) -> None:
    clock = Clock()
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with governors("redis", url) as made:
        governor = await made.make(
            budgets={**DAILY_5, "on_redis_error": mode},
            clock=clock,
            counters=counters_for("redis", url, timeout_ms=200),
        )
        if mode == "closed":
            with pytest.raises(BudgetExceeded) as refused:
                await governor.admit(caller())
            assert "limits store (Redis) is unreachable" in str(refused.value)
            assert governor.state().refused_unreachable == 1
            return
        assert await admits(governor)
        await spend(governor, "5")  # Redis missed it: counted in-process, so the budget still holds here
        assert not await admits(governor)
        state = governor.state()
        assert (state.redis, state.counting, state.charges_in_process, state.budgets_on_redis_error) == (
            "unreachable",
            "memory",
            1,
            "open",
        )
        [budget] = await governor.budget_state("tenant-a")
        assert budget.spent_usd == Decimal(5)


@pytest.mark.asyncio
async def test_what_redis_missed_while_away_is_added_to_it_when_it_is_back(private_redis: RedisProcess) -> None:
    clock = Clock()
    async with governors("redis", private_redis.url) as made:
        governor = await made.make(budgets=DAILY_5, clock=clock, timeout_ms=200, breaker_cooldown_s=0.2)
        await spend(governor, "1")
        private_redis.pause()
        try:
            await spend(governor, "2")  # counted in-process (fail-open) and owed to Redis
            state = governor.state()
            assert (state.redis, state.charges_owed) == ("unreachable", 1)
        finally:
            private_redis.resume()
        later = Decimal(0)
        deadline = time.monotonic() + 15
        while governor.state().charges_owed:  # the first charge Redis takes again repays the rest
            assert time.monotonic() < deadline, "the owed charges never reached Redis"
            await asyncio.sleep(0.3)
            await spend(governor, "0.25")
            later += Decimal("0.25")
        fresh = await made.make(budgets=DAILY_5, clock=clock)  # another replica: reads Redis only
        [budget] = await fresh.budget_state("tenant-a")
        assert budget.spent_usd == Decimal(3) + later


@pytest.mark.asyncio
async def test_budget_counters_live_until_their_window_ends_by_the_gateways_clock(redis_url: str) -> None:
    """Expiry is relative to the gateway's clock: a clock a day behind Redis's (or any skew)
    neither drops a counter early nor keeps it much past its window's end plus the margin."""
    import redis.asyncio as aioredis

    clock = Clock(datetime(2020, 6, 1, 18, 0, tzinfo=UTC))
    async with governors("redis", redis_url) as made:
        governor = await made.make(budgets=DAILY_5, clock=clock)
        await spend(governor, "5.01")
        assert not await admits(governor)
        client = aioredis.Redis.from_url(redis_url)
        try:
            # The budget's counter (the other key is the charges' marker: which were applied).
            keys = [key async for key in client.scan_iter(f"{made.namespace}*") if b":applied:" not in key]
            ttls = [await client.pttl(key) for key in keys]
        finally:
            await client.aclose()
    assert len(keys) == 1
    expected_ms = (6 * 3600 + 3600) * 1000  # to midnight UTC, plus the hour's margin
    assert expected_ms - 60_000 <= ttls[0] <= expected_ms
