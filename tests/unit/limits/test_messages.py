from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from gateway.config import BudgetLimit
from gateway.limits.messages import budget_refusal, rate_refusal, usd
from gateway.limits.rules import Rate, _budget, to_nano


def test_dollars_are_rounded_sensibly() -> None:
    assert usd(Decimal(5)) == "$5.00"
    assert usd(Decimal("5.01234"), 4) == "$5.0123"
    assert usd(Decimal("1234567.5")) == "$1,234,567.50"
    assert usd(Decimal("0.001")) == "$0.0010"  # never "$0.00" for a small limit


def test_budget_and_rate_messages() -> None:
    budget = _budget(BudgetLimit(period="month", usd=Decimal(100), route="gpt4"))
    resets = datetime(2027, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    assert budget_refusal(budget, to_nano(Decimal("100.00004")), 0, resets) == (
        "tenant budget exceeded: monthly budget on route gpt4: spent $100.0000 of $100.00 (resets 2027-01-01 00:00 CET)"
    )
    assert rate_refusal(Rate("user_tpm", 200_000), 2.2) == (
        "rate limit: 200,000 tokens per minute for this user; retry in 3 s"
    )
    assert rate_refusal(Rate("rpm", 60), 0.001).endswith("retry in 1 s")
