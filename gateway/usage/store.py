"""The ledger's database operations (sync; callers run them in a worker thread).

A row is inserted once: ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id``, and only
the rows actually inserted are added to ``usage_daily``, so a replayed batch (spill file,
a retry after a timeout whose insert did land) never counts twice in either table.

Text is stored verbatim except for what a database cannot hold: NUL (PostgreSQL text
refuses it) and lone UTF-16 surrogates (not encodable as UTF-8) become U+FFFD, on both
databases alike; ``tenant_key`` is still the hash of the id as received. Money on SQLite is
a double (SQLite has no decimal type): values are read back rounded to 12 places, and the
daily sums are added in Python with Decimal (exact up to ~15 significant digits).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import TextClause

from gateway.usage import sqlite_rows
from gateway.usage.database import DatabaseTarget
from gateway.usage.engine import create_ledger_engine
from gateway.usage.row import UsageRow, tenant_key
from gateway.usage.schema import usage, usage_daily

SCALE = Decimal("0.000000000001")  # the Money column's scale (12 places)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SHORT = 32  # String(32) columns: model_type, outcome
_SUMS = ("tokens_in", "tokens_out", "cached_tokens", "characters", "audio_seconds", "price_usd")


def clean_text(value: str) -> str:
    """The text as stored: NUL and lone surrogates replaced by U+FFFD (see the module doc)."""
    return _UNSTORABLE.sub("\ufffd", value) if not value.isascii() or "\x00" in value else value


def _optional_text(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _optional_finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _money(value: Decimal) -> Decimal:
    return value if value.is_finite() else Decimal(0)


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken as UTC): SQLite stores the wall time only."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def row_values(row: UsageRow) -> dict[str, Any]:
    """The row's columns as stored."""
    return {
        "id": row.id,
        "created_at": utc(row.created_at),
        "request_id": clean_text(row.request_id),
        "tenant_key": row.tenant_key,
        "tenant_id": clean_text(row.tenant_id),
        "user_id": clean_text(row.user_id),
        "model_type": clean_text(row.model_type)[:_SHORT],
        "provider": clean_text(row.provider),
        "model": clean_text(row.model),
        "route": _optional_text(row.route),
        "target": _optional_text(row.target),
        "target_model": _optional_text(row.target_model),
        "attempts": row.attempts,
        "outcome": clean_text(row.outcome)[:_SHORT],
        "status": row.status,
        "forwarded": row.forwarded,
        "tokens_in": row.tokens_in,
        "tokens_out": row.tokens_out,
        "cached_tokens": row.cached_tokens,
        "characters": row.characters,
        "audio_seconds": _finite(row.audio_seconds),
        "price_usd": _money(row.price_usd),
        "duration_ms": _finite(row.duration_ms),
        "first_byte_ms": _optional_finite(row.first_byte_ms),
        "overhead_ms": _optional_finite(row.overhead_ms),
    }


def group_key(day: date, tenant_id: str, model_type: str, provider: str, model: str, route: str) -> str:
    """usage_daily's key: sha256 of the grouping values as a JSON array (unambiguous: no
    separator can be forged by a value)."""
    parts = [day.isoformat(), tenant_id, model_type, provider, model, route]
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()


def daily_sums(values: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows' contribution to usage_daily, by group_key."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for value in values:
        day = value["created_at"].date()
        route = value["route"] or ""
        identity = (day, value["tenant_id"], value["model_type"], value["provider"], value["model"], route)
        group = groups.get(identity)
        if group is None:  # hashed once per group, not per row
            group = groups[identity] = {
                "group_key": group_key(*identity),
                "day": day,
                "tenant_key": value["tenant_key"],
                "tenant_id": value["tenant_id"],
                "model_type": value["model_type"],
                "provider": value["provider"],
                "model": value["model"],
                "route": route,
                "requests": 0,
                "failed": 0,
                "tokens_in": 0,
                "tokens_out": 0,
                "cached_tokens": 0,
                "characters": 0,
                "audio_seconds": 0.0,
                "price_usd": Decimal(0),
            }
        group["requests"] += 1
        group["failed"] += value["outcome"] != "ok"
        for name in _SUMS:
            group[name] += value[name]
    return {group["group_key"]: group for group in groups.values()}


def _unnest_insert() -> TextClause:
    """PostgreSQL: ``INSERT ... SELECT * FROM unnest(<one array per column>)``. A multi-row
    VALUES of 1,000 rows has 25,000 placeholders, which psycopg parses for every batch
    (~2,000 rows/s); arrays keep the statement small and constant (~12,000 rows/s here)."""
    dialect = PGDialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
    names = ", ".join(column.name for column in usage.columns)
    arrays = ", ".join(f"CAST(:{column.name} AS {column.type.compile(dialect)}[])" for column in usage.columns)
    return text(f"INSERT INTO usage ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT (id) DO NOTHING RETURNING id")


def money(value: Any) -> Decimal:
    """A Money column's value as an exact Decimal at the column's scale (SQLite returns doubles)."""
    if value is None:
        return Decimal(0)
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return number.quantize(SCALE)


class LedgerStore:
    """Inserts, retention and the budget rebuild's query over one database."""

    def __init__(self, target: DatabaseTarget, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._engine = create_ledger_engine(target, timeout_s)
        self._sqlite = target.kind == "sqlite"
        # SQLite's writes go through sqlite_rows; PostgreSQL's through these statements. On
        # SQLite the daily sums are computed in Python (exact Decimal) and set; on PostgreSQL
        # (NUMERIC is exact) the database adds them.
        self._insert_usage: Executable = _unnest_insert()
        upsert = pg_insert(usage_daily)
        changes = {name: usage_daily.c[name] + upsert.excluded[name] for name in ("requests", "failed", *_SUMS)}
        self._upsert_daily = upsert.on_conflict_do_update(index_elements=["group_key"], set_=changes)

    @property
    def engine(self) -> Engine:
        return self._engine

    def insert(self, rows: Sequence[UsageRow]) -> int:
        """Insert in one transaction; the number of rows that were new (the others were there)."""
        if not rows:
            return 0
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:
            unique.setdefault(row.id, row_values(row))
        values = list(unique.values())
        with self._engine.begin() as connection:
            if self._sqlite:
                inserted = self._insert_sqlite(connection, values)
            else:  # one array per column: 25 parameters whatever the batch size
                columns = {column.name: [value[column.name] for value in values] for column in usage.columns}
                inserted = set(connection.execute(self._insert_usage, columns).scalars())
            if not inserted:
                return 0
            groups = daily_sums(value for value in values if value["id"] in inserted)
            if self._sqlite:
                self._add_existing(connection, groups)
                cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
                cursor.executemany(sqlite_rows.UPSERT_DAILY_SQL, map(sqlite_rows.daily_parameters, groups.values()))
            else:
                # A fixed order: two PostgreSQL writers touching the same groups lock them alike (no deadlock).
                connection.execute(self._upsert_daily, [groups[key] for key in sorted(groups)])
        return len(inserted)

    @staticmethod
    def _insert_sqlite(connection: Connection, values: list[dict[str, Any]]) -> set[str]:
        """The ids inserted (multi-row VALUES ... RETURNING on the sqlite3 cursor; see sqlite_rows)."""
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        inserted: set[str] = set()
        step = sqlite_rows.ROWS_PER_STATEMENT
        for start in range(0, len(values), step):
            chunk = values[start : start + step]
            cursor.execute(sqlite_rows.insert_usage_sql(len(chunk)), sqlite_rows.usage_parameters(chunk))
            inserted.update(found[0] for found in cursor.fetchall())
        return inserted

    @staticmethod
    def _add_existing(connection: Connection, groups: dict[str, dict[str, Any]]) -> None:
        """SQLite: add the stored sums to the new ones in Python. The transaction already
        holds SQLite's write lock (it inserted), so no other writer can interleave."""
        keys = list(groups)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            cursor.execute(sqlite_rows.select_daily_sql(len(chunk)), chunk)
            for key, requests, failed, tokens_in, tokens_out, cached, characters, audio, price in cursor.fetchall():
                group = groups[key]
                group["requests"] += requests
                group["failed"] += failed
                group["tokens_in"] += tokens_in
                group["tokens_out"] += tokens_out
                group["cached_tokens"] += cached
                group["characters"] += characters
                group["audio_seconds"] += audio
                group["price_usd"] = money(group["price_usd"] + money(price))

    def ping(self) -> None:
        """One round trip; raises when the database does not answer."""
        with self._engine.connect() as connection:
            connection.execute(select(1))

    def purge(self, before: datetime, batch: int = 5000, *, stop: Callable[[], bool] | None = None) -> int:
        """Delete usage rows created before ``before`` in batches (each its own short
        transaction), and usage_daily days before its date. The usage rows deleted.
        ``stop`` is asked between batches (a shutdown ends a long purge early)."""
        cutoff = utc(before)
        deleted = 0
        while stop is None or not stop():
            oldest = select(usage.c.id).where(usage.c.created_at < cutoff).limit(batch).scalar_subquery()
            with self._engine.begin() as connection:
                count = connection.execute(delete(usage).where(usage.c.id.in_(oldest))).rowcount
            deleted += count
            if count < batch:
                break
        with self._engine.begin() as connection:
            connection.execute(delete(usage_daily).where(usage_daily.c.day < cutoff.date()))
        return deleted

    def tenants_since(self, day: date, limit: int) -> list[str]:
        """Tenants with rows on ``day`` (UTC) or later, from the daily rollup; at most ``limit``."""
        query = select(usage_daily.c.tenant_id).where(usage_daily.c.day >= day).distinct().limit(limit)
        with self._engine.connect() as connection:
            return [str(tenant) for (tenant,) in connection.execute(query)]

    def spend(
        self, tenant_id: str, since: datetime, route: str | None = None, model: str | None = None
    ) -> tuple[Decimal, int]:
        """USD and tokens (in + out) of the tenant's rows created at or after ``since``;
        ``route``/``model`` are fnmatch globs (None: any; a row without a route counts as "").

        Summed per (route, model) in SQL over the tenant_key index, the globs applied to those
        few groups in Python: exact fnmatch semantics, no glob-to-LIKE translation."""
        query = (
            select(
                usage.c.route,
                usage.c.model,
                func.sum(usage.c.price_usd),
                func.sum(usage.c.tokens_in + usage.c.tokens_out),
            )
            .where(
                usage.c.tenant_key == tenant_key(tenant_id),
                usage.c.created_at >= utc(since),
                usage.c.tenant_id == clean_text(tenant_id),
            )
            .group_by(usage.c.route, usage.c.model)
        )
        usd = Decimal(0)
        tokens = 0
        with self._engine.connect() as connection:
            for found_route, found_model, price, count in connection.execute(query):
                if route is not None and not fnmatch.fnmatchcase(found_route or "", route):
                    continue
                if model is not None and not fnmatch.fnmatchcase(found_model, model):
                    continue
                usd += money(price)
                tokens += int(count or 0)
        return money(usd), tokens

    def close(self) -> None:
        self._engine.dispose()
