"""A circuit breaker: stop calling a dependency that keeps failing, probe it again later.

    closed     calls allowed; N consecutive failures open it
    open       calls refused until the cooldown has passed
    half-open  the cooldown has passed: exactly one caller (the probe) is allowed; its
               success closes the breaker, its failure opens it for another cooldown

Pure bookkeeping with an injectable clock, no I/O and no awaits, so it is safe to share
between tasks of one event loop and to unit-test with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.cache.store import BreakerState


class CircuitBreaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
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

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self._cooldown_s:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether to make the call now. A True while not closed makes the caller the probe,
        who must then report ``record_success``, ``record_failure`` or ``release``."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self._cooldown_s:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        if self._opened_at is None:
            self._failures += 1
            if self._failures >= self._threshold:
                self._opened_at = self._clock()
        elif self._probing:
            # The probe failed (or a call from before the opening did; either way the
            # dependency is still unwell): wait another full cooldown.
            self._opened_at = self._clock()
            self._probing = False

    def release(self) -> None:
        """The allowed call ended with no verdict (cancelled, or never reached the dependency):
        if it was the probe, let the next caller probe instead."""
        self._probing = False
