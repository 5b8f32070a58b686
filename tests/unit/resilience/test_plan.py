"""Attempt plans, breakers and target health, with a fake clock and no sleeping."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.config import BreakerConfig, RetryConfig, RouteConfig
from gateway.errors import (
    BadRequest,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    retry_after_seconds,
)
from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.health import TargetHealth
from gateway.resilience.plan import AttemptPlan, Resilience
from gateway.routing import Resolution, Target


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds


def route(**extra: Any) -> RouteConfig:
    raw: dict[str, Any] = {"match": {"type": "llm"}, "targets": [{"model": "openai/a"}], **extra}
    return RouteConfig.model_validate(raw)


def resolution_of(config: RouteConfig) -> Resolution:
    targets = tuple(Target(config=t, model=t.model) for t in config.targets)
    fallbacks = tuple(Target(config=t, model=t.model, fallback=True) for t in config.fallbacks)
    return Resolution(route=config, route_label="r", targets=targets, fallbacks=fallbacks)


def setup(
    config: RouteConfig, breaker: dict[str, Any] | None = None, deadline_s: float = 100.0
) -> tuple[AttemptPlan, Resilience, Clock, Sleeps]:
    clock = Clock()
    sleeps = Sleeps(clock)
    health = TargetHealth(BreakerConfig(**(breaker or {"enabled": False})), clock)
    resilience = Resilience(RetryConfig(), health, random.Random(7), sleeps, clock)
    plan = resilience.plan(resolution_of(config), clock.now + deadline_s, lambda t: t.label)
    return plan, resilience, clock, sleeps


async def run(plan: AttemptPlan, outcomes: list[UpstreamError | None]) -> list[str]:
    """Drive the plan: each attempt gets the next outcome (None: success). The targets tried."""
    tried: list[str] = []
    for outcome in outcomes:
        target = await plan.next_target()
        tried.append(target.model)
        if outcome is None:
            plan.succeeded(target)
            return tried
        plan.failed(target, outcome)
    await plan.next_target()  # must raise: the outcomes were meant to exhaust the plan
    raise AssertionError("the plan offered another attempt")


def unavailable() -> UpstreamError:
    return UpstreamUnavailable("503", 503)


@pytest.mark.asyncio
async def test_retries_the_same_target_with_growing_backoff() -> None:
    plan, _, _, sleeps = setup(route(retries=2))
    assert await run(plan, [unavailable(), unavailable(), None]) == ["openai/a"] * 3
    assert len(sleeps.waits) == 2
    # Exponential with jitter: the n-th wait is between half and all of 0.1 * 2^(n-1).
    assert 0.05 <= sleeps.waits[0] <= 0.1 and 0.1 <= sleeps.waits[1] <= 0.2


@pytest.mark.asyncio
async def test_budget_is_never_exceeded() -> None:
    plan, _, _, _ = setup(route(retries=5, max_attempts=2))
    with pytest.raises(UpstreamUnavailable) as info:
        await run(plan, [unavailable(), unavailable()])
    assert "[2 attempts; the route's attempt budget is spent]" in info.value.message
    assert plan.attempts == 2


@pytest.mark.parametrize("error", [UpstreamBadRequest("400", 400), UpstreamBadRequest("422", 422)])
@pytest.mark.asyncio
async def test_request_errors_are_final(error: UpstreamError) -> None:
    config = route(fallbacks=[{"model": "anthropic/b"}])
    plan, _, _, _ = setup(config)
    target = await plan.next_target()
    plan.failed(target, error)
    with pytest.raises(UpstreamBadRequest):
        await plan.next_target()
    assert plan.attempts == 1


@pytest.mark.asyncio
async def test_auth_errors_move_to_the_next_target_without_retry() -> None:
    config = route(retries=2, fallbacks=[{"model": "anthropic/b"}])
    plan, _, _, sleeps = setup(config)
    assert await run(plan, [UpstreamAuthError("401", 401), None]) == ["openai/a", "anthropic/b"]
    assert sleeps.waits == []


@pytest.mark.asyncio
async def test_other_targets_then_fallbacks_in_order() -> None:
    config = route(
        retries=0,
        targets=[{"model": "openai/a"}, {"model": "openai/b"}],
        fallbacks=[{"model": "xai/c"}, {"model": "xai/d"}],
    )
    plan, _, _, _ = setup(config)
    tried = await run(plan, [unavailable(), unavailable(), unavailable(), None])
    assert sorted(tried[:2]) == ["openai/a", "openai/b"]
    assert tried[2:] == ["xai/c", "xai/d"]


@pytest.mark.asyncio
async def test_retry_after_is_honoured_up_to_the_cap() -> None:
    plan, _, _, sleeps = setup(route(retries=1))
    await run(plan, [UpstreamRateLimited("429", 429, retry_after_s=3.0), None])
    assert sleeps.waits == [3.0]


@pytest.mark.asyncio
async def test_retry_after_over_the_cap_moves_on_at_once() -> None:
    plan, _, _, sleeps = setup(route(retries=2, fallbacks=[{"model": "xai/b"}]))
    tried = await run(plan, [UpstreamRateLimited("429", 429, retry_after_s=60.0), None])
    assert tried == ["openai/a", "xai/b"] and sleeps.waits == []


@pytest.mark.asyncio
async def test_no_wait_past_the_deadline() -> None:
    plan, _, clock, sleeps = setup(route(retries=2), deadline_s=1.0)
    target = await plan.next_target()
    clock.now += 0.95
    plan.failed(target, UpstreamRateLimited("429", 429, retry_after_s=0.5))
    with pytest.raises(UpstreamRateLimited):
        await plan.next_target()
    assert sleeps.waits == []


@pytest.mark.asyncio
async def test_embedded_models_are_not_retried() -> None:
    config = RouteConfig.model_validate(
        {
            "match": {"type": "text-embedding"},
            "targets": [{"model": "local/multilingual-e5-small"}],
            "fallbacks": [{"model": "openai/text-embedding-3-small"}],
        }
    )
    plan, _, _, _ = setup(config)
    tried = await run(plan, [UpstreamTimeout("slow"), None])
    assert tried == ["local/multilingual-e5-small", "openai/text-embedding-3-small"]


@pytest.mark.asyncio
async def test_errors_that_are_not_the_backends_are_raised_and_end_the_plan() -> None:
    plan, resilience, _, _ = setup(route())
    target = await plan.next_target()
    with pytest.raises(BadRequest):
        plan.failed(target, BadRequest("bad"))
    assert resilience.health.of(target).in_flight == 0


@pytest.mark.asyncio
async def test_open_breakers_are_skipped_and_reported_when_all_are_open() -> None:
    config = route(retries=0, targets=[{"model": "openai/a"}, {"model": "openai/b"}])
    plan, resilience, _, _ = setup(config, breaker={"failures": 1, "cooldown_s": 30})
    with pytest.raises(UpstreamUnavailable):
        await run(plan, [unavailable(), unavailable()])  # both fail once: both breakers open
    fresh = resilience.plan(resolution_of(config), 2000.0, lambda t: t.label)
    with pytest.raises(UpstreamUnavailable) as info:
        await fresh.next_target()
    assert "every target is cooling down" in info.value.message
    assert fresh.attempts == 0


@pytest.mark.asyncio
async def test_half_open_probe_then_closed() -> None:
    config = route(retries=0)
    plan, resilience, clock, _ = setup(config, breaker={"failures": 1, "cooldown_s": 5})
    with pytest.raises(UpstreamUnavailable):
        await run(plan, [unavailable()])
    target = resolution_of(config).targets[0]
    assert resilience.health.of(target).state == "open"
    clock.now += 5
    probe = resilience.plan(resolution_of(config), clock.now + 10, lambda t: t.label)
    assert (await probe.next_target()).model == "openai/a"
    # While the probe is out, nobody else gets through.
    other = resilience.plan(resolution_of(config), clock.now + 10, lambda t: t.label)
    with pytest.raises(UpstreamUnavailable):
        await other.next_target()
    probe.succeeded(target)
    assert resilience.health.of(target).state == "closed"


def test_breaker_opens_on_error_ratio() -> None:
    clock = Clock()
    breaker = CircuitBreaker(100, 10, clock, error_ratio=0.5, window_s=10, min_calls=10)
    for i in range(10):
        clock.now += 0.1
        if i % 2:
            breaker.record_failure()
        else:
            breaker.record_success()
    assert breaker.state == "open"


def test_breaker_ratio_forgets_old_calls() -> None:
    clock = Clock()
    breaker = CircuitBreaker(100, 10, clock, error_ratio=0.5, window_s=10, min_calls=4)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 11  # the failures leave the window
    for _ in range(3):
        breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.error_ratio() == (4, 0.25)


def test_rate_hints_make_a_target_unavailable_for_a_minute() -> None:
    clock = Clock()
    health = TargetHealth(BreakerConfig(), clock)
    config = route(targets=[{"model": "openai/a", "rpm": 2, "tpm": 100}])
    target = resolution_of(config).targets[0]
    for _ in range(2):
        assert health.available(target)
        health.begin(target)
        health.succeeded(target, 0.1)
    assert not health.available(target)
    clock.now += 61
    assert health.available(target)
    health.used_tokens(target, 150)
    assert not health.available(target)


@pytest.mark.asyncio
async def test_all_targets_at_their_rate_hints_is_a_rate_limit_error() -> None:
    config = route(targets=[{"model": "openai/a", "rpm": 1}])
    plan, resilience, _, _ = setup(config)
    await run(plan, [None])
    again = resilience.plan(resolution_of(config), 2000.0, lambda t: t.label)
    with pytest.raises(UpstreamRateLimited, match="rpm/tpm"):
        await again.next_target()


@pytest.mark.asyncio
async def test_least_in_flight_prefers_the_idle_target() -> None:
    config = route(balancing="least_in_flight", targets=[{"model": "openai/a"}, {"model": "openai/b", "weight": 5}])
    _, resilience, _, _ = setup(config)
    resolution = resolution_of(config)
    busy = resolution.targets[1]
    resilience.health.begin(busy)
    for _ in range(5):
        plan = resilience.plan(resolution, 2000.0, lambda t: t.label)
        assert (await plan.next_target()).model == "openai/a"
        plan.succeeded(resolution.targets[0])


def test_weighted_choice_follows_weights() -> None:
    config = route(targets=[{"model": "openai/a", "weight": 3}, {"model": "openai/b", "weight": 1}])
    _, resilience, _, _ = setup(config)
    resolution = resolution_of(config)
    picks = [resilience.choose(resolution, list(resolution.targets)).model for _ in range(4000)]
    share = picks.count("openai/a") / len(picks)
    assert 0.72 <= share <= 0.78


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), ("0.5", 0.5), (" 7 ", 7.0), ("", None), (None, None), ("soon", None), ("-3", 0.0)],
)
def test_retry_after_values(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_retry_after_http_date() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_default_budget_is_retries_plus_one_per_target_and_fallback() -> None:
    config = route(
        retries=2, targets=[{"model": "anthropic/x"}, {"model": "anthropic/y"}], fallbacks=[{"model": "bedrock/z"}]
    )
    assert config.attempt_budget == 5
    assert route(retries=1, max_attempts=9).attempt_budget == 9
