"""What the gateway knows about each backend: its breaker, calls in flight, recent rates.

One ``TargetHealth`` per process, keyed by ``Target.key`` (model and address), so routes that
share a backend share its health. Pure bookkeeping on the event loop: no locks, no I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config import BreakerConfig
from gateway.resilience.breaker import BreakerState, CircuitBreaker
from gateway.resilience.window import SlidingSum
from gateway.routing import Target, target_key

_RATE_WINDOW_S = 60.0
# Targets rendered from templates ("openai/{model}") are as many as the model names callers
# send; idle ones are forgotten beyond this many.
_MAX_TARGETS = 4096


@dataclass(eq=False)
class TargetState:
    key: str
    # The target as configured (a template such as "openai/{model}" stays one label): the
    # bounded name metrics use.
    label: str
    breaker: CircuitBreaker | None
    in_flight: int = 0
    calls: int = 0
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock, for people
    requests: SlidingSum = field(default_factory=lambda: SlidingSum(_RATE_WINDOW_S))
    tokens: SlidingSum = field(default_factory=lambda: SlidingSum(_RATE_WINDOW_S))
    errors: SlidingSum = field(default_factory=lambda: SlidingSum(_RATE_WINDOW_S))  # failed attempts
    latency_s: float | None = None  # moving average of successful calls

    @property
    def state(self) -> BreakerState:
        return self.breaker.state if self.breaker is not None else "closed"

    def retry_in(self) -> float:
        return self.breaker.retry_in() if self.breaker is not None else 0.0


class TargetHealth:
    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._states: OrderedDict[str, TargetState] = OrderedDict()
        # Called with (key, state) whenever a breaker opens (shared breakers publish it).
        self.on_open: Callable[[str, float], None] | None = None

    def __call__(self, key: str) -> TargetState:
        """The state of a backend already seen (a fresh closed one otherwise)."""
        state = self._states.get(key)
        return state if state is not None else self._add(key, key)

    def of(self, target: Target) -> TargetState:
        state = self._states.get(target.key)
        return state if state is not None else self._add(target.key, target_key(target.config, target.config.model))

    def _add(self, key: str, label: str) -> TargetState:
        state = TargetState(key, label, self._new_breaker())
        self._states[key] = state
        if len(self._states) > _MAX_TARGETS:
            self._forget_idle()
        return state

    def _new_breaker(self) -> CircuitBreaker | None:
        c = self._config
        if not c.enabled:
            return None
        return CircuitBreaker(
            c.failures, c.cooldown_s, self._clock, error_ratio=c.error_ratio, window_s=c.window_s, min_calls=c.min_calls
        )

    def _forget_idle(self) -> None:
        for key in list(self._states)[: len(self._states) // 4]:
            state = self._states[key]
            if state.in_flight == 0 and state.state == "closed":
                del self._states[key]

    # --- choosing ---------------------------------------------------------------------

    def available(self, target: Target) -> bool:
        """Breaker closed (or ready for a probe) and under the target's rate hints."""
        state = self.of(target)
        if state.breaker is not None and not state.breaker.available():
            return False
        return not self.over_rate(target)

    def over_rate(self, target: Target) -> bool:
        cfg = target.config
        if cfg.rpm is None and cfg.tpm is None:
            return False
        state = self.of(target)
        now = self._clock()
        if cfg.rpm is not None and state.requests.total(now) >= cfg.rpm:
            return True
        return cfg.tpm is not None and state.tokens.total(now) >= cfg.tpm

    # --- one attempt ------------------------------------------------------------------

    def begin(self, target: Target) -> bool:
        """An attempt starts; False when the breaker refuses it (the probe is taken)."""
        state = self.of(target)
        if state.breaker is not None and not state.breaker.allow():
            return False
        state.in_flight += 1
        state.calls += 1
        state.requests.add(self._clock())
        return True

    def succeeded(self, target: Target, latency_s: float) -> None:
        state = self.of(target)
        state.in_flight -= 1
        if state.breaker is not None:
            state.breaker.record_success()
        state.latency_s = latency_s if state.latency_s is None else 0.8 * state.latency_s + 0.2 * latency_s

    def failed(self, target: Target, message: str, counts: bool) -> None:
        """The attempt failed; ``counts``: the failure says something about the backend's
        health (not the request's own fault)."""
        state = self.of(target)
        state.in_flight -= 1
        state.failures += 1
        state.errors.add(self._clock())
        state.last_error = message
        state.last_error_at = time.time()
        if state.breaker is None:
            return
        if not counts:
            state.breaker.release()
            return
        was_open = state.breaker.state != "closed"
        state.breaker.record_failure()
        if state.breaker.state == "open" and not was_open and self.on_open is not None:
            self.on_open(target.key, state.breaker.retry_in())

    def abandoned(self, target: Target) -> None:
        """The attempt ended with no verdict (the caller went away)."""
        state = self.of(target)
        state.in_flight -= 1
        if state.breaker is not None:
            state.breaker.release()

    def used_tokens(self, target: Target, tokens: int) -> None:
        if target.config.tpm is not None and tokens > 0:
            self.of(target).tokens.add(self._clock(), tokens)

    # --- reading ----------------------------------------------------------------------

    def states(self) -> list[TargetState]:
        return list(self._states.values())

    def snapshot(self) -> list[dict[str, object]]:
        """Every known backend, for the status endpoint (no secrets: keys carry none)."""
        rows: list[dict[str, object]] = []
        now = self._clock()
        for state in self._states.values():
            row: dict[str, object] = {
                "target": state.key,
                "state": state.state,
                "in_flight": state.in_flight,
                "calls": state.calls,
                "failures": state.failures,
                "requests_last_minute": state.requests.total(now),
                "errors_last_minute": state.errors.total(now),
            }
            if state.breaker is not None:
                window_calls, ratio = state.breaker.error_ratio()
                row["consecutive_failures"] = state.breaker.consecutive_failures
                row["window_calls"] = window_calls
                row["window_error_ratio"] = round(ratio, 4)
                if state.state != "closed":
                    row["retry_in_s"] = round(state.breaker.retry_in(), 3)
            if state.latency_s is not None:
                row["latency_avg_s"] = round(state.latency_s, 4)
            if state.last_error is not None:
                row["last_error"] = state.last_error
                row["last_error_at"] = state.last_error_at
            rows.append(row)
        return rows
