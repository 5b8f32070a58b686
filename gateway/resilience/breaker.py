"""A circuit breaker: stop calling a dependency that keeps failing, probe it again later.

    closed     calls allowed; it opens after N consecutive failures, or (when a window is
               set) once at least ``error_ratio`` of the window's calls failed
    open       calls refused until the cooldown has passed
    half-open  the cooldown has passed: exactly one caller (the probe) is allowed; its
               success closes the breaker, its failure opens it for another cooldown

Pure bookkeeping with an injectable clock, no I/O and no awaits, so it is safe to share
between tasks of one event loop and to unit-test with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from gateway.resilience.window import SlidingSum

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        error_ratio: float | None = None,
        window_s: float = 30.0,
        min_calls: int = 20,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None  # None while closed
        self._probing = False  # the single half-open probe is out
        self._ratio = error_ratio
        self._min_calls = min_calls
        # Calls and failures over the window, for the error ratio.
        self._calls = SlidingSum(window_s) if error_ratio is not None else None
        self._failed = SlidingSum(window_s) if error_ratio is not None else None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self._cooldown_s:
            return "half-open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown_s - self._clock())

    def error_ratio(self) -> tuple[int, float]:
        """Calls in the window and the share of them that failed (0, 0.0 without a window)."""
        if self._calls is None or self._failed is None:
            return 0, 0.0
        now = self._clock()
        calls = self._calls.total(now)
        return calls, (self._failed.total(now) / calls if calls else 0.0)

    def allow(self) -> bool:
        """Whether to make the call now. A True while not closed makes the caller the probe,
        who must then report ``record_success``, ``record_failure`` or ``release``."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self._cooldown_s:
            return False
        self._probing = True
        return True

    def available(self) -> bool:
        """Whether ``allow`` would say yes, without taking the probe."""
        return self._opened_at is None or (not self._probing and self._clock() - self._opened_at >= self._cooldown_s)

    def record_success(self) -> None:
        self._failures = 0
        if self._calls is not None and self._failed is not None:
            if self._opened_at is not None:  # a recovered dependency starts with a clean record
                self._calls.clear()
                self._failed.clear()
            self._calls.add(self._clock())
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        now = self._clock()
        if self._opened_at is None:
            self._failures += 1
            if self._calls is not None and self._failed is not None:
                self._calls.add(now)
                self._failed.add(now)
            if self._failures >= self._threshold or self._ratio_exceeded(now):
                self._opened_at = now
        elif self._probing:
            # The probe failed (or a call from before the opening did; either way the
            # dependency is still unwell): wait another full cooldown.
            self._opened_at = now
            self._probing = False

    def open_until(self, until: float) -> None:
        """Open (or keep open) until the clock reads ``until``: another replica saw it fail."""
        opened_at = until - self._cooldown_s
        if self._opened_at is None or (not self._probing and opened_at > self._opened_at):
            self._opened_at = opened_at

    def release(self) -> None:
        """The allowed call ended with no verdict (cancelled, or never reached the dependency):
        if it was the probe, let the next caller probe instead."""
        self._probing = False

    def _ratio_exceeded(self, now: float) -> bool:
        if self._calls is None or self._failed is None or self._ratio is None:
            return False
        calls = self._calls.total(now)
        return calls >= self._min_calls and self._failed.total(now) >= self._ratio * calls
