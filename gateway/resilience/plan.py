"""One request's way through its route: which target next, when to wait, when to give up.

The order: a target chosen by the route's balancing among those whose breaker is closed and
who are under their rate hints; on a retryable failure the same target again (``retries``
times, with exponential backoff and jitter, or the upstream's ``Retry-After`` when it is
short enough); then the route's other targets; then its fallbacks, in order. Never more
than the route's attempt budget in all, never past the request's deadline.

What may be retried is decided by the error class (``gateway.errors``): request errors
(400, 404, 422, ...) are final everywhere; refused credentials (401/403) move to the next
target; connect errors, resets, 408, 429, 5xx and broken streams are retried. Whether a
stream may still be retried (no byte reached the daemon yet) is the caller's decision:
it simply stops asking for another target.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

from gateway.config import RetryConfig
from gateway.errors import (
    GatewayError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.resilience.health import TargetHealth
from gateway.routing import Resolution, Target
from gateway.trace import current_trace

T = TypeVar("T")
Chunk = TypeVar("Chunk")


def counts_against_target(exc: BaseException) -> bool:
    """Whether a failure says something about the backend's health rather than the request."""
    if not isinstance(exc, UpstreamError):
        return False
    return exc.retryable or isinstance(exc, UpstreamAuthError)


class Resilience:
    """The process-wide parts (config, health, randomness) that every plan uses."""

    def __init__(
        self,
        retry: RetryConfig,
        health: TargetHealth,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry = retry
        self.health = health
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock

    def plan(self, resolution: Resolution, deadline: float, where: Callable[[Target], str]) -> AttemptPlan:
        return AttemptPlan(self, resolution, deadline, where)

    def backoff(self, retry_number: int) -> float:
        """Seconds to wait before the ``retry_number``-th retry (1-based) of a target."""
        base = self.retry.backoff_initial_s * 2.0 ** (retry_number - 1)
        return min(self.retry.backoff_max_s, base) * (0.5 + 0.5 * self._rng.random())

    def choose(self, resolution: Resolution, candidates: list[Target]) -> Target:
        """The next target among ``candidates`` by the route's balancing."""
        if len(candidates) == 1:
            return candidates[0]
        if resolution.route.balancing == "least_in_flight":
            return min(candidates, key=lambda t: (self.health.of(t).in_flight, -t.config.weight))
        weights = [t.config.weight for t in candidates]
        return self._rng.choices(candidates, weights=weights, k=1)[0]


class AttemptPlan:
    def __init__(
        self, resilience: Resilience, resolution: Resolution, deadline: float, where: Callable[[Target], str]
    ) -> None:
        self._r = resilience
        self._health = resilience.health
        self._resolution = resolution
        self.deadline = deadline
        self._where = where
        self._budget = resolution.route.attempt_budget
        self._retries = resolution.route.retries
        self._untried = list(resolution.targets)
        self._fallbacks = list(resolution.fallbacks)
        self._current: Target | None = None
        self._tries_on_current = 0
        self._last_error: UpstreamError | None = None
        self._skipped_open: list[Target] = []
        self._skipped_rate: list[Target] = []
        self._started: float = 0.0
        self.attempts = 0
        self.trace = current_trace.get()
        if self.trace is not None:
            self.trace.route = resolution.route_label

    # --- choosing -----------------------------------------------------------------------

    async def next_target(self) -> Target:
        """The target of the next attempt, after any wait; raises when there is none."""
        error = self._last_error
        if error is not None and not error.failover:
            raise error
        if self.attempts >= self._budget:
            raise self._exhausted("the route's attempt budget is spent")
        if (
            error is not None
            and self._current is not None
            and self._may_retry_current(error)
            and self._health.available(self._current)
        ):
            delay = self._delay(error)
            if delay is not None:
                if delay > 0:
                    await self._r._sleep(delay)
                    if self.trace is not None:
                        # Waiting for the upstream to be ready again is upstream time, not
                        # the gateway's own (overhead = total - upstream).
                        self.trace.upstream_s += delay
                if self._health.available(self._current):
                    return self._begin(self._current)
        target = self._next_candidate()
        if target is None:
            raise self._exhausted("no target left to try")
        self._tries_on_current = 0
        return self._begin(target)

    def _may_retry_current(self, error: UpstreamError) -> bool:
        assert self._current is not None
        if not error.retryable or self._current.local:
            return False  # an embedded model fails the same way again
        return self._tries_on_current <= self._retries

    def _delay(self, error: UpstreamError) -> float | None:
        """Seconds to wait before retrying the same target; None: move on instead."""
        delay = self._r.backoff(self._tries_on_current)
        if error.retry_after_s is not None:
            if error.retry_after_s > self._r.retry.retry_after_max_s:
                return None  # the upstream asks for longer than we may wait: try elsewhere
            delay = max(delay, error.retry_after_s)
        if self._r._clock() + delay >= self.deadline:
            return None
        return delay

    def _next_candidate(self) -> Target | None:
        while self._untried:
            ready = [t for t in self._untried if self._available(t)]
            if not ready:
                break
            target = self._r.choose(self._resolution, ready)
            self._untried.remove(target)
            return target
        self._untried = []
        while self._fallbacks:
            target = self._fallbacks.pop(0)
            if self._available(target):
                return target
        return None

    def _available(self, target: Target) -> bool:
        if self._health.available(target):
            return True
        bucket = self._skipped_rate if self._health.over_rate(target) else self._skipped_open
        if target not in bucket:
            bucket.append(target)
        return False

    def _begin(self, target: Target) -> Target:
        if self._r._clock() >= self.deadline:
            raise self._exhausted("the route's total deadline has passed", timeout=True)
        self._health.begin(target)  # never refused: availability was checked just before
        self._current = target
        self._tries_on_current += 1
        self.attempts += 1
        self._started = self._r._clock()
        if self.trace is not None:
            self.trace.attempts += 1
            self.trace.target = target
        return target

    # --- outcomes -----------------------------------------------------------------------

    def where(self, target: Target) -> str:
        return self._where(target)

    def remaining(self, target: Target) -> float:
        """Seconds this attempt may take: to the deadline, capped by the target's timeout."""
        remaining = max(0.001, self.deadline - self._r._clock())
        own = target.config.timeout_s
        return min(remaining, own) if own else remaining

    def timed_out(self, target: Target, seconds: float) -> UpstreamTimeout:
        """The error for an attempt cut off after ``seconds`` (``remaining(target)`` at its
        start), naming the limit that cut it: the target's ``timeout_s`` or the route's total."""
        own = target.config.timeout_s
        if own and seconds >= own:
            return UpstreamTimeout(f"upstream did not answer within {own:g} s (timeout_s; {self._where(target)})")
        total = self._resolution.route.timeouts.total_s
        return UpstreamTimeout(
            f"the route's total deadline (timeouts.total_s) of {total:g} s was reached ({self._where(target)})"
        )

    def ceiling(self, target: Target) -> float:
        """The attempt timeout handed to backend clients: a constant per target, because
        client libraries key their connection pools by it (litellm keeps one OpenAI client
        per distinct timeout). The attempt's real deadline is enforced around the call."""
        return target.config.timeout_s or self._resolution.route.timeouts.total_s

    def succeeded(self, target: Target) -> None:
        elapsed = self._r._clock() - self._started
        self._health.succeeded(target, elapsed)
        if self.trace is not None:
            self.trace.upstream_s += elapsed

    def failed(self, target: Target, exc: GatewayError) -> None:
        """Record a failed attempt; the next ``next_target`` decides what follows."""
        self._health.failed(target, exc.message, counts_against_target(exc))
        if self.trace is not None:
            self.trace.upstream_s += self._r._clock() - self._started
            self.trace.errors.append(exc.message)
        if isinstance(exc, UpstreamError):
            self._last_error = exc
        else:
            self._last_error = None
            raise exc  # not the backend's doing: nothing to retry

    def abandoned(self, target: Target) -> None:
        self._health.abandoned(target)

    def _exhausted(self, why: str, timeout: bool = False) -> UpstreamError:
        last = self._last_error
        route = self._resolution.route_label
        if last is None:
            if timeout:
                return UpstreamTimeout(f"route {route!r}: {why} before any attempt")
            if self._skipped_rate and not self._skipped_open:
                names = ", ".join(t.label for t in self._skipped_rate)
                return UpstreamRateLimited(f"route {route!r}: every target is at its rpm/tpm limit ({names})")
            names = ", ".join(t.label for t in [*self._skipped_open, *self._skipped_rate])
            wait = min((self._health.of(t).retry_in() for t in self._skipped_open), default=0.0)
            return UpstreamUnavailable(
                f"route {route!r}: every target is cooling down after failures ({names}); "
                f"the next probe in {wait:.1f} s"
            )
        if self.attempts <= 1 and not timeout:
            return last
        suffix = f" [{self.attempts} attempt{'s' if self.attempts != 1 else ''}; {why}]"
        cls = UpstreamTimeout if timeout else type(last)
        return cls(last.message + suffix, last.upstream_status, last.retry_after_s)


async def run_attempts(plan: AttemptPlan, op: Callable[[Target, float], Awaitable[T]]) -> tuple[T, Target]:
    """Run a unary upstream call under ``plan``: ``op(target, ceiling_s)`` per attempt, cut
    off when the attempt's time (``plan.remaining``) is up."""
    while True:
        target = await plan.next_target()
        seconds = plan.remaining(target)
        try:
            async with asyncio.timeout(seconds):
                result = await op(target, plan.ceiling(target))
        except TimeoutError:
            plan.failed(target, plan.timed_out(target, seconds))
            continue
        except GatewayError as exc:
            plan.failed(target, exc)
            continue
        except BaseException:
            plan.abandoned(target)
            raise
        plan.succeeded(target)
        return result, target


async def stream_attempts(
    plan: AttemptPlan, attempt: Callable[[Target], AsyncGenerator[Chunk, None]]
) -> AsyncGenerator[Chunk, None]:
    """The chunks of the first attempt that succeeds, under ``plan``.

    An attempt may be replaced by the next one only while it has yielded nothing: once a
    chunk is out it may have reached the daemon, so a later failure is final (the caller
    ends the stream with an error frame) and nothing is sent twice.
    """
    while True:
        target = await plan.next_target()
        sent = False
        try:
            async with aclosing(attempt(target)) as frames:
                async for frame in frames:
                    sent = True
                    yield frame
        except GatewayError as exc:
            plan.failed(target, exc)
            if sent:
                raise
            continue
        except BaseException:
            plan.abandoned(target)
            raise
        plan.succeeded(target)
        return
