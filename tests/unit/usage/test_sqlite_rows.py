"""SQLite's plain DB-API writes store exactly what SQLAlchemy's types would store."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.usage import sqlite_rows
from gateway.usage.schema import metadata, usage, usage_daily
from gateway.usage.store import daily_sums, row_values
from tests.integration.test_ledger_writer import row


def _tables(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every stored value with its SQLite storage class, as the file holds them."""
    with sqlite3.connect(path) as connection:
        out = []
        for table in ("usage", "usage_daily"):
            names = [c[1] for c in connection.execute(f"PRAGMA table_info({table})")]
            parts = ", ".join(f"{n}, typeof({n})" for n in names)
            out.append(sorted(connection.execute(f"SELECT {parts} FROM {table}")))
    return out[0], out[1]


def test_rows_and_daily_sums_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    values = [row_values(row(i, tenant=f"t{i % 3}")) for i in range(7)]
    values[0]["created_at"] = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # no microseconds
    values[1]["price_usd"] = Decimal("1234.000000000001")
    values[2]["route"] = None
    values[3]["first_byte_ms"] = None
    values[4]["forwarded"] = True
    values[5]["tenant_id"] = "租户 '; DROP TABLE usage; --"
    groups = list(daily_sums(values).values())
    assert any(isinstance(g["day"], date) for g in groups)

    by_sqlalchemy = sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    metadata.create_all(by_sqlalchemy)
    with by_sqlalchemy.begin() as connection:
        connection.execute(sa.insert(usage), values)
        connection.execute(sa.insert(usage_daily), groups)
    by_sqlalchemy.dispose()

    plain = sa.create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    metadata.create_all(plain)
    plain.dispose()
    with sqlite3.connect(tmp_path / "b.db") as connection:
        inserted = connection.execute(
            sqlite_rows.insert_usage_sql(len(values)), sqlite_rows.usage_parameters(values)
        ).fetchall()
        connection.executemany(sqlite_rows.UPSERT_DAILY_SQL, map(sqlite_rows.daily_parameters, groups))

    assert sorted(i for (i,) in inserted) == sorted(v["id"] for v in values)
    assert _tables(tmp_path / "b.db") == _tables(tmp_path / "a.db")


def test_a_row_already_there_is_not_returned(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    metadata.create_all(engine)
    engine.dispose()
    values = [row_values(row(i)) for i in range(3)]
    with sqlite3.connect(tmp_path / "c.db") as connection:
        connection.execute(sqlite_rows.insert_usage_sql(1), sqlite_rows.usage_parameters(values[:1])).fetchall()
        again = connection.execute(sqlite_rows.insert_usage_sql(3), sqlite_rows.usage_parameters(values)).fetchall()
    assert sorted(i for (i,) in again) == sorted(v["id"] for v in values[1:])
