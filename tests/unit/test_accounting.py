"""gateway.accounting: a finished trace becomes one ledger row and one charge; a new one is admitted first."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.accounting import Accounting
from gateway.config import parse_config
from gateway.errors import BudgetExceeded, RateLimited
from gateway.limits.governor import build_governor
from gateway.routing import Target
from gateway.trace import Trace
from gateway.usage.row import UsageRow

STARTED = 1_764_720_000.5  # 2025-12-03 00:00:00.5 UTC


class Rows:
    """The ledger's one method, keeping what it is given."""

    def __init__(self) -> None:
        self.rows: list[UsageRow] = []

    def add(self, row: UsageRow) -> None:
        self.rows.append(row)


def finished_trace(**fields: object) -> Trace:
    config = parse_config({"routes": [{"match": {"type": "llm"}, "targets": [{"model": "openai/{model}"}]}]}, "<t>")
    trace = Trace(request_id="req-1", model_type="llm", route="chat", attempts=2, upstream_s=0.4)
    trace.target = Target(config=config.routes[0].targets[0], model="openai/gpt-4o-mini")
    trace.tenant_id, trace.user_id, trace.provider, trace.model = "t1", "u1", "langgenius/openai/openai", "gpt-4o-mini"
    trace.tokens_in, trace.tokens_out, trace.price_usd = 120, 30, Decimal("0.000036")
    for name, value in fields.items():
        setattr(trace, name, value)
    return trace


def test_a_finished_invocation_is_one_row_with_what_it_cost() -> None:
    rows = Rows()
    Accounting(rows, None, lambda: 0.0).record(finished_trace(), "ok", 200, 0.5, 0.12, STARTED)
    (row,) = rows.rows
    assert row.created_at == datetime.fromtimestamp(STARTED, UTC)
    assert (row.tenant_id, row.user_id, row.model_type, row.provider, row.model) == (
        "t1",
        "u1",
        "llm",
        "langgenius/openai/openai",
        "gpt-4o-mini",
    )
    assert (row.route, row.target, row.target_model, row.attempts) == (
        "chat",
        "openai/{model}",
        "openai/gpt-4o-mini",
        2,
    )
    assert (row.tokens_in, row.tokens_out, row.price_usd) == (120, 30, Decimal("0.000036"))
    assert (row.duration_ms, row.first_byte_ms, row.overhead_ms) == (500.0, 120.0, 100.0)
    assert row.outcome == "ok" and not row.forwarded and len(row.id) == 32


def test_a_forwarded_call_is_marked_and_a_request_without_identity_is_no_row() -> None:
    rows = Rows()
    accounting = Accounting(rows, None, lambda: 0.0)
    accounting.record(
        finished_trace(target=None, route=None, tokens_in=0, tokens_out=0), "forwarded", 200, 0.1, None, STARTED
    )
    accounting.record(Trace(request_id="bad-body"), "client_error", 400, 0.01, 0.01, STARTED)
    (row,) = rows.rows
    assert row.forwarded and row.target is None and row.first_byte_ms is None


def governed(budgets: object = None, rate_limits: object = None) -> Accounting:
    raw: dict[str, object] = {}
    if budgets is not None:
        raw["budgets"] = budgets
    if rate_limits is not None:
        raw["rate_limits"] = rate_limits
    governor = build_governor(parse_config(raw, "<t>"))
    assert governor is not None
    return Accounting(None, governor, lambda: 0.0)


@pytest.mark.asyncio
async def test_a_refusal_puts_its_outcome_and_retry_after_on_the_trace() -> None:
    accounting = governed(rate_limits={"default": {"rpm": 1}})
    assert accounting.governor is not None
    await accounting.governor.start()
    try:
        await accounting.admit(finished_trace())
        trace = finished_trace()
        with pytest.raises(RateLimited):
            await accounting.admit(trace)
        assert trace.outcome == "rate_limited" and trace.retry_after_s is not None and trace.retry_after_s > 0
    finally:
        await accounting.governor.aclose()


@pytest.mark.asyncio
async def test_what_a_request_cost_is_charged_and_refusals_are_not() -> None:
    accounting = governed(budgets={"default": [{"period": "day", "tokens": 100}]})
    governor = accounting.governor
    assert governor is not None
    await governor.start()
    try:
        await accounting.admit(finished_trace())
        accounting.record(finished_trace(), "ok", 200, 0.5, 0.1, STARTED)  # 150 tokens: over the 100
        await governor.flush()
        trace = finished_trace()
        with pytest.raises(BudgetExceeded, match="daily budget"):
            await accounting.admit(trace)
        assert trace.outcome == "budget_exceeded" and trace.retry_after_s is not None
        accounting.record(trace, "budget_exceeded", 429, 0.001, 0.001, STARTED)  # never charged
        await governor.flush()
        (state,) = await governor.budget_state("t1")
        assert state.spent_tokens == 150 and state.over
    finally:
        await governor.aclose()
