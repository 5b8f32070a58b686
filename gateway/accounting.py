"""Who spent what: each answered invocation becomes a ledger row and is charged to its
tenant's budgets and token rate limits; a new one is admitted (or refused) first.

The app calls ``admit`` after the body is parsed (before any upstream call) and the
request observer calls ``record`` once the reply is sent. Both are O(1) on the request
path: the ledger only queues the row, the governor batches its counter updates.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.errors import BudgetExceeded, RateLimited
from gateway.limits.caller import Caller
from gateway.limits.governor import Governor
from gateway.routing import RouteTable
from gateway.trace import Trace
from gateway.usage.row import UsageRow

# Outcomes of requests the gateway refused itself before any upstream call.
REFUSED = {BudgetExceeded: "budget_exceeded", RateLimited: "rate_limited"}


def identify(trace: Trace, invocation: Any, model_type: str, routes: RouteTable | None) -> None:
    """Who asks for what, on the trace (for the ledger and the budgets). With ``routes``
    (when budgets or limits are on: some may be narrowed to a route) also the route that
    will answer, a cached lookup the service repeats the same way."""
    trace.tenant_id = invocation.tenant_id
    trace.user_id = invocation.user_id or ""
    trace.provider = getattr(invocation, "provider", "") or ""
    trace.model = getattr(invocation, "model", "") or ""
    if routes is not None and trace.route is None and trace.provider:
        resolution = routes.resolve(model_type, trace.provider, trace.model, trace.tenant_id)
        if resolution is not None:
            trace.route = resolution.route_label


class UsageSink(Protocol):
    def add(self, row: UsageRow) -> None: ...


class Accounting:
    def __init__(
        self,
        ledger: UsageSink | None,
        governor: Governor | None,
        clock: Callable[[], float],
    ) -> None:
        self.ledger = ledger
        self.governor = governor
        self._clock = clock  # wall time, for the row's created_at

    @staticmethod
    def caller(trace: Trace) -> Caller:
        return Caller(
            tenant_id=trace.tenant_id or "",
            user_id=trace.user_id,
            model_type=trace.model_type,
            provider=trace.provider,
            model=trace.model,
            route=trace.route,
        )

    async def admit(self, trace: Trace) -> None:
        """Refuse the request (``BudgetExceeded``/``RateLimited``, with its Retry-After on the
        trace) when its tenant is over a budget or a rate limit."""
        if self.governor is None:
            return
        try:
            await self.governor.admit(self.caller(trace))
        except (BudgetExceeded, RateLimited) as exc:
            trace.outcome = REFUSED[type(exc)]
            trace.retry_after_s = exc.retry_after_s
            raise

    def record(
        self,
        trace: Trace,
        outcome: str,
        status: int,
        duration_s: float,
        first_byte_s: float | None,
        started_at: float,
    ) -> None:
        """The finished request: charged to its tenant and queued for the ledger. Requests
        with no identity (a body that did not parse, a non-model path) are not invocations."""
        if trace.tenant_id is None:
            return
        tokens = trace.tokens_in + trace.tokens_out
        if self.governor is not None and outcome not in ("budget_exceeded", "rate_limited"):
            self.governor.settle(self.caller(trace), trace.price_usd, tokens)
        if self.ledger is None:
            return
        target = trace.target
        self.ledger.add(
            UsageRow(
                created_at=datetime.fromtimestamp(started_at, UTC),
                request_id=trace.request_id,
                tenant_id=trace.tenant_id,
                user_id=trace.user_id,
                model_type=trace.model_type,
                provider=trace.provider,
                model=trace.model,
                route=trace.route,
                target=target.config.model if target is not None else None,
                target_model=target.model if target is not None else None,
                attempts=trace.attempts,
                outcome=outcome,
                status=status,
                forwarded=outcome == "forwarded",
                tokens_in=trace.tokens_in,
                tokens_out=trace.tokens_out,
                cached_tokens=trace.cached_tokens,
                characters=trace.characters,
                audio_seconds=trace.audio_seconds,
                price_usd=trace.price_usd,
                duration_ms=round(duration_s * 1000, 3),
                first_byte_ms=round(first_byte_s * 1000, 3) if first_byte_s is not None else None,
                overhead_ms=round(max(0.0, duration_s - trace.upstream_s) * 1000, 3),
            )
        )
