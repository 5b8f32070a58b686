"""What a Dify user reads when a request is refused. Messages name the limit, never the
tenant or user id (the caller knows its own workspace; logs and traces carry the ids)."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from gateway.limits.rules import Budget, Rate, from_nano

UNREACHABLE_RETRY_S = 1.0

_WHAT = {
    "rpm": "requests per minute for this workspace",
    "tpm": "tokens per minute for this workspace",
    "user_rpm": "requests per minute for this user",
    "user_tpm": "tokens per minute for this user",
}


def usd(amount: Decimal, places: int = 2) -> str:
    """Dollars with ``places`` decimals, more when a small amount would round to nothing."""
    shown = amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    while shown == 0 and amount != 0 and places < 9:
        places += 2
        shown = amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    return f"${shown:,}"


def resets(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} {at.tzname() or at.strftime('%z')}"


def budget_refusal(budget: Budget, spent_nano: int, spent_tokens: int, resets_at: datetime) -> str:
    limit = budget.limit
    if limit.usd is not None and 0 <= budget.limit_nano <= spent_nano:
        spent = f"spent {usd(from_nano(spent_nano), 4)} of {usd(limit.usd)}"
    else:
        spent = f"used {spent_tokens:,} of {limit.tokens or 0:,} tokens"
    return f"tenant budget exceeded: {limit.name}: {spent} (resets {resets(resets_at)})"


def retry_seconds(retry_s: float) -> int:
    return max(1, math.ceil(retry_s - 1e-9))


def rate_refusal(rate: Rate, retry_s: float) -> str:
    return f"rate limit: {rate.per_minute:,} {_WHAT[rate.kind]}; retry in {retry_seconds(retry_s)} s"


def rate_store_unreachable() -> str:
    return "rate limits cannot be checked: the limits store (Redis) is unreachable; retry shortly"


def budget_store_unreachable() -> str:
    return "tenant budgets cannot be checked: the limits store (Redis) is unreachable; retry shortly"
