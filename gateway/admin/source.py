"""What the management API reads, as callables the app fills in (so the API never holds the
gateway's objects, and a reload that replaces them is seen at the next request)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from gateway.key_guard import KeyGuard


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSource:
    # The admin key (console.admin_key, else the inner API key), compared in constant time.
    admin_key: Callable[[], bytes]
    # Throttles wrong keys per address; the console's own, so both share one budget.
    key_guard: KeyGuard
    # The ledger's engine; None when the ledger is off (the usage endpoints answer 503).
    engine: Callable[[], Engine | None]
    # The ledger writer's state (queued, written, spilled, ...): any JSON-safe mapping.
    ledger_state: Callable[[], Mapping[str, Any]]
    # Budget state for one tenant (or every budgeted tenant with None): mappings or
    # dataclasses with name, period, route, model, spent_usd, limit_usd, spent_tokens,
    # limit_tokens, resets_at, over (and tenant_id). None: no budgets are configured.
    budget_state: Callable[[str | None], Awaitable[Sequence[Any]] | None]
    # What /status/targets answers: in_flight, draining, shared_breakers, targets.
    targets: Callable[[], Mapping[str, Any]]
