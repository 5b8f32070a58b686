"""Rate limits per tenant and per user, in-process and on real Redis (same tests, both kinds)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from gateway.errors import RateLimited
from gateway.limits import Governor
from tests.support.redis import RedisProcess, free_port
from tests.unit.limits.support import KINDS, Clock, caller, counters_for, governors


async def admitted_count(governor: Governor, tries: int, **who: str) -> int:
    count = 0
    for _ in range(tries):
        try:
            await governor.admit(caller(**who))
            count += 1
        except RateLimited:
            pass
    return count


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_n_per_minute_gives_exactly_n_then_a_refusal_with_retry_after(kind: str, redis_url: str) -> None:
    clock = Clock()
    async with governors(kind, redis_url) as made:
        governor = await made.make(rate_limits={"default": {"rpm": 60}}, clock=clock)
        assert await admitted_count(governor, 60) == 60
        with pytest.raises(RateLimited) as refused:
            await governor.admit(caller())
        assert refused.value.retry_after_s == pytest.approx(1.0, abs=0.01)  # 60 per minute: one a second
        assert str(refused.value) == "rate limit: 60 requests per minute for this workspace; retry in 1 s"
        # Refusals consumed nothing: a second later exactly one more is admitted, not zero.
        assert await admitted_count(governor, 20) == 0
        clock.advance(1.0)
        assert await admitted_count(governor, 5) == 1
        clock.advance(60)
        assert await admitted_count(governor, 100) == 60
        state = governor.state()
        assert (state.admitted, state.refused_rate) == (121, 1 + 20 + 4 + 40)
        assert state.redis == ("ok" if kind == "redis" else "none")


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_retry_after_is_when_the_next_request_would_be_admitted(kind: str, redis_url: str) -> None:
    clock = Clock()
    async with governors(kind, redis_url) as made:
        governor = await made.make(rate_limits={"default": {"rpm": 6}}, clock=clock)
        assert await admitted_count(governor, 6) == 6
        clock.advance(3.0)
        with pytest.raises(RateLimited) as refused:
            await governor.admit(caller())
        assert refused.value.retry_after_s == pytest.approx(7.0, abs=0.01)  # one each 10 s, 3 s gone
        assert "retry in 7 s" in str(refused.value)
        clock.advance(6.9)
        assert await admitted_count(governor, 1) == 0
        clock.advance(0.2)
        assert await admitted_count(governor, 2) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_user_limits_are_per_user_and_the_tenant_limit_is_shared(kind: str, redis_url: str) -> None:
    clock = Clock()
    async with governors(kind, redis_url) as made:
        governor = await made.make(rate_limits={"default": {"rpm": 5, "user_rpm": 2}}, clock=clock)
        assert await admitted_count(governor, 5, user="u1") == 2
        with pytest.raises(RateLimited, match="2 requests per minute for this user"):
            await governor.admit(caller(user="u1"))
        assert await admitted_count(governor, 5, user="u2") == 2
        assert await admitted_count(governor, 5, user="u3") == 1  # the tenant's 5 are used up
        with pytest.raises(RateLimited, match="5 requests per minute for this workspace"):
            await governor.admit(caller(user="u4"))
        assert await admitted_count(governor, 5, tenant="tenant-b", user="u1") == 2  # another tenant


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_tokens_per_minute_refuse_once_settled_tokens_reach_the_limit(kind: str, redis_url: str) -> None:
    clock = Clock()
    async with governors(kind, redis_url) as made:
        governor = await made.make(rate_limits={"default": {"tpm": 10_000, "user_tpm": 8_000}}, clock=clock)
        await governor.admit(caller(user="u1"))
        governor.settle(caller(user="u1"), Decimal(0), 6_000)
        await governor.flush()
        await governor.admit(caller(user="u2"))  # 6,000 of 10,000 used: admitted
        governor.settle(caller(user="u2"), Decimal(0), 6_000)  # a reply can overrun: 12,000 counted
        await governor.flush()
        with pytest.raises(RateLimited) as refused:
            await governor.admit(caller(user="u3"))
        assert "10,000 tokens per minute for this workspace" in str(refused.value)
        # 2,000 tokens over: they drain at 10,000 a minute, so 12 s until there is room.
        assert refused.value.retry_after_s == pytest.approx(12.0, abs=0.01)
        clock.advance(12.1)
        await governor.admit(caller(user="u3"))
        governor.settle(caller(user="u3"), Decimal(0), 8_000)
        await governor.flush()
        clock.advance(300)  # everything drained
        await governor.admit(caller(user="u1"))
        governor.settle(caller(user="u1"), Decimal(0), 8_000)  # the tenant has room, u1 has none
        await governor.flush()
        with pytest.raises(RateLimited, match="8,000 tokens per minute for this user"):
            await governor.admit(caller(user="u1"))
        await governor.admit(caller(user="u2"))


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_the_first_matching_override_replaces_the_default(kind: str, redis_url: str) -> None:
    clock = Clock()
    limits = {
        "default": {"rpm": 3},
        "overrides": [
            {"tenant": "vip-7", "rpm": 10},
            {"tenant": "free-*", "rpm": 1},
            {"tenant": "free-vip", "rpm": 100},  # never reached: free-* comes first
            {"tenant": "unlimited-*", "tpm": 1_000_000},  # replaces the default: no rpm at all
        ],
    }
    async with governors(kind, redis_url) as made:
        governor = await made.make(rate_limits=limits, clock=clock)
        assert await admitted_count(governor, 20, tenant="vip-7") == 10
        assert await admitted_count(governor, 20, tenant="vip-77") == 3
        assert await admitted_count(governor, 20, tenant="free-1") == 1
        assert await admitted_count(governor, 20, tenant="free-vip") == 1
        assert await admitted_count(governor, 50, tenant="unlimited-x") == 50
        assert await admitted_count(governor, 20, tenant="other") == 3


@pytest.mark.asyncio
async def test_two_governors_sharing_redis_enforce_one_limit(redis_url: str) -> None:
    clock = Clock()
    async with governors("redis", redis_url) as made:
        one = await made.make(rate_limits={"default": {"rpm": 40}}, clock=clock)
        two = await made.make(rate_limits={"default": {"rpm": 40}}, clock=clock)
        results = await asyncio.gather(*(admitted_count(g, 30) for g in (one, two)))
        assert sum(results) == 40
        assert min(results) > 0


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_hostile_ids_are_limited_separately_and_keys_stay_bounded(kind: str, redis_url: str) -> None:
    clock = Clock()
    hostile = ["t" * 10_000, "t" * 10_001, "租户-🙂", "a*b?c[d]", "quote'\"`;DROP TABLE", "line\nbreak\r\0", "{x}", ""]
    async with governors(kind, redis_url) as made:
        governor = await made.make(rate_limits={"default": {"rpm": 2, "user_rpm": 1}}, clock=clock)
        for tenant in hostile:
            assert await admitted_count(governor, 4, tenant=tenant, user=tenant) == 1
            assert await admitted_count(governor, 4, tenant=tenant, user=tenant + "2") == 1
        if kind == "redis":
            import redis

            client = redis.Redis.from_url(redis_url)
            try:
                keys = list(client.scan_iter(match=made.namespace.replace("*", r"\*") + "*"))
            finally:
                client.close()
            assert len(keys) == 3 * len(hostile)  # per tenant: its requests, two users' requests
            assert max(len(k) for k in keys) < len(made.namespace) + 120


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_unreachable_fails_open_or_closed_as_configured(mode: str) -> None:
    clock = Clock()
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with governors("redis", url) as made:
        governor = await made.make(
            rate_limits={"default": {"rpm": 2}, "on_redis_error": mode},
            clock=clock,
            counters=counters_for("redis", url, timeout_ms=200),
        )
        if mode == "open":
            # Admitted, and counted in-process meanwhile: the limit still holds in this process.
            assert await admitted_count(governor, 5) == 2
            state = governor.state()
            assert (state.redis, state.counting, state.admitted_in_process) == ("unreachable", "memory", 2)
        else:
            with pytest.raises(RateLimited) as refused:
                await governor.admit(caller())
            assert "limits store (Redis) is unreachable" in str(refused.value)
            assert refused.value.retry_after_s == 1.0
            state = governor.state()
            assert (state.redis, state.refused_unreachable, state.rate_limits_on_redis_error) == (
                "unreachable",
                1,
                "closed",
            )


@pytest.mark.asyncio
async def test_a_redis_that_stops_and_comes_back(private_redis: RedisProcess) -> None:
    clock = Clock()
    async with governors("redis", private_redis.url) as made:
        governor = await made.make(
            rate_limits={"default": {"rpm": 100}, "on_redis_error": "closed"},
            clock=clock,
            counters=counters_for("redis", private_redis.url, timeout_ms=300, breaker_cooldown_s=0.2),
        )
        await governor.admit(caller())
        assert governor.state().redis == "ok"
        private_redis.kill()
        for _ in range(3):
            with pytest.raises(RateLimited, match="unreachable"):
                await governor.admit(caller())
        assert governor.state().redis == "unreachable"
        private_redis.start()
        await asyncio.sleep(0.3)  # the breaker's cooldown: the next call probes
        await governor.admit(caller())
        assert governor.state().redis == "ok"
