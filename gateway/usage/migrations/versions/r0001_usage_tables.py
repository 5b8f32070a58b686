"""The usage table (one row per invocation) and the usage_daily rollup.

Revision ID: 0001
Revises:
Create Date: 2026-12-03

Written out column by column (not from gateway.usage.schema) so the revision stays what it
was when later revisions change the schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("tenant_key", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("model_type", sa.String(32), nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("route", sa.Text),
        sa.Column("target", sa.Text),
        sa.Column("target_model", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("forwarded", sa.Boolean, nullable=False),
        sa.Column("tokens_in", sa.BigInteger, nullable=False),
        sa.Column("tokens_out", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("characters", sa.BigInteger, nullable=False),
        sa.Column("audio_seconds", sa.Float, nullable=False),
        sa.Column("price_usd", sa.Numeric(24, 12), nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("first_byte_ms", sa.Float),
        sa.Column("overhead_ms", sa.Float),
    )
    op.create_index("ix_usage_created_at", "usage", ["created_at"])
    op.create_index("ix_usage_tenant_created_at", "usage", ["tenant_key", "created_at"])
    op.create_table(
        "usage_daily",
        sa.Column("group_key", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("tenant_key", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("model_type", sa.String(32), nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        sa.Column("tokens_in", sa.BigInteger, nullable=False),
        sa.Column("tokens_out", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("characters", sa.BigInteger, nullable=False),
        sa.Column("audio_seconds", sa.Float, nullable=False),
        sa.Column("price_usd", sa.Numeric(24, 12), nullable=False),
    )
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"])
    op.create_index("ix_usage_daily_tenant_day", "usage_daily", ["tenant_key", "day"])


def downgrade() -> None:
    op.drop_table("usage_daily")
    op.drop_table("usage")
