"""The management API's response bodies (and so its OpenAPI schemas).

Money is a string of fixed-point digits (``"12.345678000000"``), never a JSON number, so it
stays exact; times are ISO 8601 in UTC; identity values are verbatim.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.usage.report import GroupBy

Money = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["12.345678000000"])]


class ErrorBody(BaseModel):
    """Every error: the same shape as the gateway's other errors."""

    data: None = None
    error: str = Field(
        examples=["unauthorized: missing or wrong admin key (send X-Admin-Key or Authorization: Bearer)"]
    )


class UsageLine(BaseModel):
    """One group's totals; only the grouping's key fields are set (the rest are null)."""

    tenant_id: str | None = None
    provider: str | None = None
    model: str | None = None
    route: str | None = Field(default=None, description='the route that answered; "" when none did')
    day: date | None = None
    model_type: str | None = None
    requests: int
    failed: int = Field(description="requests whose outcome was not ok")
    tokens_in: int
    tokens_out: int
    cached_tokens: int = Field(description="input tokens served from the embedding cache (no upstream cost)")
    characters: int = Field(description="TTS input characters")
    audio_seconds: float = Field(description="speech-to-text audio length")
    price_usd: Money


class UsageReply(BaseModel):
    since: datetime
    until: datetime | None = Field(description="exclusive; null: up to now")
    by: GroupBy
    tenant: str | None
    lines: list[UsageLine] = Field(description="the biggest spend first (by day: the oldest day first)")
    total: UsageLine = Field(description="the whole window, every group (also those past the limit)")


class DayTotals(BaseModel):
    day: date
    requests: int
    failed: int
    tokens_in: int
    tokens_out: int
    cached_tokens: int
    price_usd: Money


class DailyReply(BaseModel):
    since: date
    tenant: str | None
    days: list[DayTotals] = Field(description="every UTC day from since to today, zeros where nothing was called")


class Budget(BaseModel):
    tenant_id: str | None = None
    name: str
    period: str = Field(examples=["day", "month"])
    route: str | None = None
    model: str | None = None
    spent_usd: Money | None = None
    limit_usd: Money | None = None
    spent_tokens: int | None = None
    limit_tokens: int | None = None
    resets_at: datetime | None = None
    over: bool


class BudgetsReply(BaseModel):
    enabled: bool = Field(description="false: no budgets are configured")
    tenant: str | None
    budgets: list[Budget]


class LedgerReply(BaseModel):
    enabled: bool
    state: dict[str, Any] = Field(description="the writer's counters and database (no credentials)")


class TargetsReply(BaseModel):
    """What ``/status/targets`` answers: each backend's breaker, in flight and recent errors."""

    model_config = ConfigDict(extra="allow")

    in_flight: int
    draining: bool
    shared_breakers: bool
    targets: list[dict[str, Any]]
