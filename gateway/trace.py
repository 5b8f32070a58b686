"""What happened to one request, gathered while it runs, for its metrics, log line and headers.

The app sets a ``Trace`` in ``current_trace`` for each inner-API request; the code on the
way (attempt plans, services, the stream writer) records into it when one is set. Nothing
here is secret or prompt text.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # routing imports the configuration, which imports this (through http)
    from gateway.routing import Target


@dataclass(slots=True)
class Trace:
    request_id: str = ""
    model_type: str = "other"  # from the path: llm, text-embedding, ... or forward / other
    route: str | None = None  # the route label (bounded: from the configuration)
    attempts: int = 0
    target: Target | None = None  # the target of the last attempt (the one that answered)
    upstream_s: float = 0.0  # time spent on upstream attempts and the backoff between them
    errors: list[str] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    stream_error: bool = False  # a stream ended with an error frame
    outcome: str | None = None  # set where it is known (see request_metrics.OUTCOMES)
    traceparent: str | None = None  # the caller's W3C traceparent, passed on upstream
    # For the usage ledger and the budgets: who asked (the daemon's identity fields, set once
    # the body is parsed; None before) and what the reply cost.
    tenant_id: str | None = None
    user_id: str = ""
    provider: str = ""
    model: str = ""
    price_usd: Decimal = Decimal(0)  # the price the reply's usage carried
    cached_tokens: int = 0  # tokens served from a cache: embedding inputs, or a cached LLM answer's
    response_cache: str | None = None  # an LLM route's response cache: "hit" or "miss" (None: not cached)
    characters: int = 0  # TTS input characters
    audio_seconds: float = 0.0  # speech-to-text audio length, where the container says it
    retry_after_s: float | None = None  # a refusal's Retry-After (rate limits, budgets)

    def summary(self, outcome: str, status: int, duration_s: float, *, ms_digits: int = 3) -> dict[str, Any]:
        """The request in a few fields (the request log line and the console's recent errors start with these)."""
        return {
            "request_id": self.request_id,
            "type": self.model_type,
            "route": self.route,
            "target": self.target.label if self.target is not None else None,
            "outcome": outcome,
            "status": status,
            "attempts": self.attempts,
            "duration_ms": round(duration_s * 1000, ms_digits),
        }


current_trace: ContextVar[Trace | None] = ContextVar("dify_gateway_trace", default=None)


def valid_traceparent(value: str | None) -> str | None:
    """A W3C ``traceparent`` worth passing on (version-traceid-parentid-flags), else None."""
    if not value or len(value) != 55:
        return None
    parts = value.split("-")
    if [len(p) for p in parts] != [2, 32, 16, 2] or parts[1] == "0" * 32 or parts[2] == "0" * 16:
        return None
    try:
        int(value.replace("-", ""), 16)
    except ValueError:
        return None
    return value.lower()
