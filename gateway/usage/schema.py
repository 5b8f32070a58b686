"""The ledger's tables, one schema for SQLite and PostgreSQL (migrations: gateway/usage/migrations).

``usage`` holds one row per invocation; ``usage_daily`` sums them per UTC day, tenant, type,
provider, model and route for fast reports. Identity values are stored verbatim (any length,
any characters); indexes use ``tenant_key`` (a hash of the tenant id), and the daily table's
key is ``group_key`` (a hash of its grouping values), because an index entry cannot hold a
10 KB id.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

# Money: 24 digits, 12 after the point (a one-token call at $0.02 per million tokens is exact).
Money = Numeric(24, 12)

metadata = MetaData()

usage = Table(
    "usage",
    metadata,
    Column("id", String(32), primary_key=True),  # the row's own id (UsageRow.id): replays count once
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("request_id", Text, nullable=False),
    Column("tenant_key", String(32), nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("model_type", String(32), nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("route", Text),
    Column("target", Text),
    Column("target_model", Text),
    Column("attempts", Integer, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("status", Integer, nullable=False),
    Column("forwarded", Boolean, nullable=False),
    Column("tokens_in", BigInteger, nullable=False),
    Column("tokens_out", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("characters", BigInteger, nullable=False),
    Column("audio_seconds", Float, nullable=False),
    Column("price_usd", Money, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("first_byte_ms", Float),
    Column("overhead_ms", Float),
    Index("ix_usage_created_at", "created_at"),
    Index("ix_usage_tenant_created_at", "tenant_key", "created_at"),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("group_key", String(64), primary_key=True),  # hash of day, tenant, type, provider, model, route
    Column("day", Date, nullable=False),
    Column("tenant_key", String(32), nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("model_type", String(32), nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("route", Text, nullable=False),  # "" when no route answered
    Column("requests", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),  # outcome other than ok
    Column("tokens_in", BigInteger, nullable=False),
    Column("tokens_out", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("characters", BigInteger, nullable=False),
    Column("audio_seconds", Float, nullable=False),
    Column("price_usd", Money, nullable=False),
    Index("ix_usage_daily_day", "day"),
    Index("ix_usage_daily_tenant_day", "tenant_key", "day"),
)
