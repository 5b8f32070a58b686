"""Known ledgers for the report tests: rows written to ``usage`` and summed into ``usage_daily``
exactly as the rollup defines it, on a SQLite file or a private PostgreSQL database.

Imported by the report, CLI, admin API and console tests; its own test checks that the
rollup it writes agrees with the rows.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url

from gateway.usage import schema
from gateway.usage.row import UsageRow

POSTGRES_URL = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
HOSTILE_TENANT = "<script>alert('x')</script> \"quoted\" ; DROP TABLE usage; -- ✓ 租户"
LONG_TENANT = "t" * 5_000 + "ü" * 2_500  # 10 KB of UTF-8


def sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")
    schema.metadata.create_all(engine)
    return engine


def _sqlalchemy_url(url: str) -> sa.URL:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg") if parsed.drivername in ("postgresql", "postgres") else parsed


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the test server (dropped afterwards); yields its SQLAlchemy URL."""
    admin_url = _sqlalchemy_url(POSTGRES_URL)
    name = "report_" + secrets.token_hex(6)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def postgres_engine() -> Iterator[Engine]:
    with postgres_database() as url:
        engine = create_engine(url)
        try:
            schema.metadata.create_all(engine)
            yield engine
        finally:
            engine.dispose()


def row(at: datetime, tenant: str, **fields: Any) -> UsageRow:
    values: dict[str, Any] = {
        "created_at": at,
        "request_id": secrets.token_hex(8),
        "tenant_id": tenant,
        "user_id": "user-1",
        "model_type": "llm",
        "provider": "langgenius/openai/openai",
        "model": "gpt-4o-mini",
        "route": "openai",
        "attempts": 1,
        **fields,
    }
    return UsageRow(**values)


def _group_key(r: UsageRow) -> str:
    parts = [r.created_at.date().isoformat(), r.tenant_id, r.model_type, r.provider, r.model, r.route or ""]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def write_rows(engine: Engine, rows: Iterable[UsageRow]) -> list[UsageRow]:
    """Insert ``rows`` into ``usage`` and add them to ``usage_daily``."""
    rows = list(rows)
    daily: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = daily.setdefault(
            _group_key(r),
            {
                "group_key": _group_key(r),
                "day": r.created_at.astimezone(UTC).date(),
                "tenant_key": r.tenant_key,
                "tenant_id": r.tenant_id,
                "model_type": r.model_type,
                "provider": r.provider,
                "model": r.model,
                "route": r.route or "",
                "requests": 0,
                "failed": 0,
                "tokens_in": 0,
                "tokens_out": 0,
                "cached_tokens": 0,
                "characters": 0,
                "audio_seconds": 0.0,
                "price_usd": Decimal(0),
            },
        )
        entry["requests"] += 1
        entry["failed"] += r.outcome != "ok"
        for name in ("tokens_in", "tokens_out", "cached_tokens", "characters", "audio_seconds", "price_usd"):
            entry[name] += getattr(r, name)
    with engine.begin() as connection:
        existing = {k for (k,) in connection.execute(select(schema.usage_daily.c.group_key))}
        if rows:
            connection.execute(schema.usage.insert(), [_usage_values(r) for r in rows])
        for key, entry in daily.items():
            if key in existing:
                d = schema.usage_daily.c
                connection.execute(
                    schema.usage_daily.update()
                    .where(d.group_key == key)
                    .values({name: d[name] + entry[name] for name in entry if name in _SUMMED})
                )
            else:
                connection.execute(schema.usage_daily.insert(), [entry])
    return rows


_SUMMED = {"requests", "failed", "tokens_in", "tokens_out", "cached_tokens", "characters", "audio_seconds", "price_usd"}


def _usage_values(r: UsageRow) -> dict[str, Any]:
    values = r.to_json()
    values["created_at"] = r.created_at.astimezone(UTC)
    values["price_usd"] = r.price_usd
    values["tenant_key"] = r.tenant_key
    return values


def test_the_rollup_written_agrees_with_the_rows(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "ledger.db")
    try:
        at = datetime(2026, 11, 2, 10, tzinfo=UTC)
        write_rows(engine, [row(at, "a", tokens_in=3, price_usd=Decimal("0.5")) for _ in range(3)])
        write_rows(engine, [row(at, "a", tokens_in=1, outcome="upstream_error", price_usd=Decimal("0.25"))])
        with engine.connect() as connection:
            daily = connection.execute(select(schema.usage_daily)).mappings().one()
            raw = connection.execute(select(func.count(), func.sum(schema.usage.c.tokens_in))).one()
        assert (daily["requests"], daily["failed"], daily["tokens_in"]) == (4, 1, 10) == (raw[0], 1, raw[1])
        assert Decimal(str(daily["price_usd"])) == Decimal("1.75")
    finally:
        engine.dispose()
