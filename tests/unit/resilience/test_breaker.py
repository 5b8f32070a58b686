"""The circuit breaker, on a fake clock."""

from __future__ import annotations

import pytest

from gateway.resilience.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- CircuitBreaker -----------------------------------------------------------------------


def state_of(breaker: CircuitBreaker) -> str:
    return breaker.state  # as a plain str: mypy would narrow the property between asserts


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 5.0, clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # resets the count: failures must be consecutive
    for _ in range(2):
        breaker.record_failure()
    assert state_of(breaker) == "closed" and breaker.allow()
    breaker.record_failure()
    assert state_of(breaker) == "open"
    assert not breaker.allow()


def test_breaker_allows_exactly_one_probe_after_the_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 5.0, clock)
    breaker.record_failure()
    clock.now += 4.999
    assert not breaker.allow() and state_of(breaker) == "open"
    clock.now += 0.001
    assert state_of(breaker) == "half-open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # concurrent callers are refused while it is out
    assert state_of(breaker) == "half-open"
    breaker.record_success()
    assert state_of(breaker) == "closed"
    assert breaker.allow() and breaker.allow()


def test_breaker_failed_probe_reopens_for_another_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 1.0, clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    clock.now += 0.5  # the probe took a while
    breaker.record_failure()
    assert state_of(breaker) == "open"
    clock.now += 0.999
    assert not breaker.allow()
    clock.now += 0.001
    assert breaker.allow()
    breaker.record_success()
    assert state_of(breaker) == "closed"


def test_breaker_released_probe_lets_the_next_caller_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 1.0, clock)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.release()  # e.g. the probing request was cancelled
    assert breaker.allow()
    assert not breaker.allow()


def test_breaker_ignores_late_failures_while_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 1.0, clock)
    breaker.record_failure()
    clock.now += 0.9
    breaker.record_failure()  # a call that started before the opening: does not extend the cooldown
    clock.now += 0.1
    assert breaker.allow()


def test_breaker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0)
