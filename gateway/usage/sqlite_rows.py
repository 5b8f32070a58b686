"""SQLite's ledger writes as plain DB-API statements, off SQLAlchemy's per-parameter layer.

The writer inserts every invocation's row, so its cost per row is the gateway's cost per
request: through SQLAlchemy's insertmanyvalues (bind processors, parameter dictionaries) a
row cost ~80 µs of CPU; as tuples on the sqlite3 cursor it costs a fraction of that. The
values are stored exactly as SQLAlchemy's SQLite types store them (DateTime as
``YYYY-MM-DD HH:MM:SS.ffffff``, Date as ``YYYY-MM-DD``, Numeric and Float as REAL, Boolean
as 0/1), so everything read through SQLAlchemy (reports, the budget rebuild) is unchanged.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from gateway.usage.schema import usage, usage_daily

USAGE_COLUMNS = tuple(column.name for column in usage.columns)
DAILY_COLUMNS = tuple(column.name for column in usage_daily.columns)
DAILY_SUMS = ("requests", "failed", "tokens_in", "tokens_out", "cached_tokens", "characters", "audio_seconds")
# SQLite binds at most 32,766 parameters per statement (3.32+): 1,000 rows of 25 columns fit.
ROWS_PER_STATEMENT = 1000


_usage_values = operator.itemgetter(*USAGE_COLUMNS)
_daily_values = operator.itemgetter(*DAILY_COLUMNS)
_USAGE_CREATED = USAGE_COLUMNS.index("created_at")
_USAGE_PRICE = USAGE_COLUMNS.index("price_usd")
_DAILY_DAY = DAILY_COLUMNS.index("day")
_DAILY_PRICE = DAILY_COLUMNS.index("price_usd")


def stored_datetime(moment: datetime) -> str:
    """A UTC datetime as SQLAlchemy's SQLite DateTime stores it (the wall time, microseconds always)."""
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


@functools.lru_cache(maxsize=8)
def insert_usage_sql(rows: int) -> str:
    one = "(" + ", ".join("?" * len(USAGE_COLUMNS)) + ")"
    return (
        f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES {', '.join([one] * rows)} "
        "ON CONFLICT (id) DO NOTHING RETURNING id"
    )


def usage_parameters(values: Sequence[dict[str, Any]]) -> list[Any]:
    """The rows' values in column order, flattened for one multi-row VALUES (sqlite3 binds
    str, int, float, bool and None itself; the datetime and the Decimal are converted)."""
    flat: list[Any] = []
    for value in values:
        row = list(_usage_values(value))
        row[_USAGE_CREATED] = stored_datetime(row[_USAGE_CREATED])
        row[_USAGE_PRICE] = float(row[_USAGE_PRICE])
        flat.extend(row)
    return flat


def select_daily_sql(keys: int) -> str:
    return (
        f"SELECT group_key, {', '.join(DAILY_SUMS)}, price_usd FROM usage_daily "
        f"WHERE group_key IN ({', '.join('?' * keys)})"
    )


UPSERT_DAILY_SQL = (
    f"INSERT INTO usage_daily ({', '.join(DAILY_COLUMNS)}) VALUES ({', '.join('?' * len(DAILY_COLUMNS))}) "
    "ON CONFLICT (group_key) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in (*DAILY_SUMS, "price_usd"))
)


def daily_parameters(group: dict[str, Any]) -> list[Any]:
    row = list(_daily_values(group))
    day: date = row[_DAILY_DAY]
    row[_DAILY_DAY] = day.isoformat()
    row[_DAILY_PRICE] = float(row[_DAILY_PRICE])
    return row
