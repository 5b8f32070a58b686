"""Usage reports from the ledger: totals grouped by tenant, model, route, day or model type.

Whole UTC days come from ``usage_daily`` (one row per day and group: fast over months); the
partial days at either end of a window come from ``usage`` itself, so a window such as "the
last 24 hours" is exact to the row. Both parts are summed in one parameterised query
(SQLAlchemy Core), grouped, sorted and limited by the database.

Windows are half-open, ``[since, until)``, in UTC; ``until=None`` means "up to now". Money
is a ``Decimal`` with 12 digits after the point (the ledger's ``Numeric(24, 12)``).
Identity values come back verbatim, whatever their length or characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, Engine, Select, and_, case, func, select, union_all
from sqlalchemy.sql.selectable import Subquery

from gateway.usage.row import tenant_key
from gateway.usage.schema import usage, usage_daily

GroupBy = Literal["tenant", "model", "route", "day", "type"]
GROUPINGS: tuple[GroupBy, ...] = get_args(GroupBy)
MONEY_QUANTUM = Decimal("1e-12")

# The columns each grouping reports (and groups on); "tenant" groups on the indexed key.
_KEYS: dict[GroupBy, tuple[str, ...]] = {
    "tenant": ("tenant_id",),
    "model": ("provider", "model"),
    "route": ("route",),
    "day": ("day",),
    "type": ("model_type",),
}
_SUMS = ("requests", "failed", "tokens_in", "tokens_out", "cached_tokens", "characters", "audio_seconds", "price_usd")


class ReportError(ValueError):
    """A report's parameters are wrong (the message says which and why)."""


@dataclass(slots=True, kw_only=True)
class ReportLine:
    """One group's totals. Only the fields of the report's grouping are set: ``tenant_id``
    (by tenant), ``provider`` and ``model`` (by model), ``route`` (by route; "" when no
    route answered), ``day`` (by day), ``model_type`` (by type); none for a grand total."""

    tenant_id: str | None = None
    provider: str | None = None
    model: str | None = None
    route: str | None = None
    day: date | None = None
    model_type: str | None = None
    requests: int = 0
    failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens: int = 0
    characters: int = 0
    audio_seconds: float = 0.0
    price_usd: Decimal = field(default_factory=lambda: Decimal(0).quantize(MONEY_QUANTUM))

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def key(self, by: GroupBy) -> tuple[str, ...]:
        """The grouping's values as text (for display)."""
        if by == "day":
            return (self.day.isoformat() if self.day is not None else "",)
        return tuple(str(getattr(self, name) or "") for name in _KEYS[by])

    def to_json(self) -> dict[str, Any]:
        """Exact values, JSON-safe: money as a string, the day as an ISO date, unset keys left out."""
        body: dict[str, Any] = {}
        for name in ("tenant_id", "provider", "model", "route", "model_type"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.day is not None:
            body["day"] = self.day.isoformat()
        body.update(
            requests=self.requests,
            failed=self.failed,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cached_tokens=self.cached_tokens,
            characters=self.characters,
            audio_seconds=self.audio_seconds,
            price_usd=money_text(self.price_usd),
        )
        return body


@dataclass(slots=True, kw_only=True)
class DayTotals:
    """One UTC day's totals, for the console's chart (days without calls are zeros)."""

    day: date
    requests: int = 0
    failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens: int = 0
    price_usd: Decimal = field(default_factory=lambda: Decimal(0).quantize(MONEY_QUANTUM))


# --- time windows -----------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"m": timedelta(minutes=1), "min": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
_UNITS["w"] = timedelta(weeks=1)
MAX_LOOKBACK = timedelta(days=36_500)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A window's start: ``30m``, ``24h``, ``7d``, ``2w`` (that long before ``now``), a date
    (``2026-11-01``: its midnight UTC) or an ISO datetime (UTC unless it names its offset)."""
    now = now or datetime.now(UTC)
    raw = text.strip()
    relative = _RELATIVE.match(raw)
    if relative is not None:
        amount = int(relative.group(1))
        span = _UNITS[relative.group(2).lower()] * amount if amount <= 10_000_000 else MAX_LOOKBACK * 2
        if span > MAX_LOOKBACK:
            raise ReportError(f"{text!r} reaches back more than {MAX_LOOKBACK.days} days")
        return now - span
    return parse_instant(text)


def parse_instant(text: str) -> datetime:
    """A date (its midnight UTC) or an ISO datetime (UTC unless it names its offset)."""
    raw = text.strip()
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), time(), UTC)
        instant = datetime.fromisoformat(raw)
    except ValueError:
        raise ReportError(
            f"{text!r} is not a time: use 30m, 24h, 7d or 2w (before now), a date (2026-11-01) "
            "or an ISO datetime (2026-11-01T08:00:00Z)"
        ) from None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _check_window(since: datetime, until: datetime | None) -> tuple[datetime, datetime | None]:
    since = _utc(since)
    until = _utc(until) if until is not None else None
    if until is not None and until <= since:
        raise ReportError(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    return since, until


def _utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _whole_days(since: datetime, until: datetime | None) -> tuple[date, date | None] | None:
    """The whole UTC days inside ``[since, until)`` as ``[first, end)`` (``end`` None: no end);
    None when there is none."""
    first = since.date() if since.time() == time() else since.date() + timedelta(days=1)
    if until is None:
        return first, None
    end = until.date()
    return (first, end) if first < end else None


# --- the queries ------------------------------------------------------------------------


def _raw_part(keys: Sequence[str], tenant: str | None, start: datetime, end: datetime | None) -> Select[Any]:
    """Sums over ``usage`` rows in ``[start, end)``, grouped by ``keys``."""
    c = usage.c
    columns: dict[str, ColumnElement[Any]] = {
        "tenant_key": c.tenant_key,
        "tenant_id": c.tenant_id,
        "provider": c.provider,
        "model": c.model,
        "route": func.coalesce(c.route, ""),
        "model_type": c.model_type,
    }
    conditions: list[ColumnElement[bool]] = [c.created_at >= start]
    if end is not None:
        conditions.append(c.created_at < end)
    if tenant is not None:
        conditions += [c.tenant_key == tenant_key(tenant), c.tenant_id == tenant]
    group = [columns[k] for k in keys]
    return (
        select(
            *[columns[k].label(k) for k in keys],
            func.count().label("requests"),
            func.sum(case((c.outcome != "ok", 1), else_=0)).label("failed"),
            func.sum(c.tokens_in).label("tokens_in"),
            func.sum(c.tokens_out).label("tokens_out"),
            func.sum(c.cached_tokens).label("cached_tokens"),
            func.sum(c.characters).label("characters"),
            func.sum(c.audio_seconds).label("audio_seconds"),
            func.sum(c.price_usd).label("price_usd"),
        )
        .where(and_(*conditions))
        .group_by(*group)
    )


def _daily_part(keys: Sequence[str], tenant: str | None, first: date, end: date | None) -> Select[Any]:
    """Sums over ``usage_daily`` for the days ``[first, end)``, grouped by ``keys``."""
    d = usage_daily.c
    conditions: list[ColumnElement[bool]] = [d.day >= first]
    if end is not None:
        conditions.append(d.day < end)
    if tenant is not None:
        conditions += [d.tenant_key == tenant_key(tenant), d.tenant_id == tenant]
    return (
        select(*[d[k].label(k) for k in keys], *[func.sum(d[s]).label(s) for s in _SUMS])
        .where(and_(*conditions))
        .group_by(*[d[k] for k in keys])
    )


def _parts(keys: Sequence[str], since: datetime, until: datetime | None, tenant: str | None) -> Subquery:
    """Every row of the window once: whole days from the rollup, the rest from ``usage``."""
    days = _whole_days(since, until)
    if days is None:
        parts = [_raw_part(keys, tenant, since, until)]
    else:
        first, end = days
        parts = [_daily_part(keys, tenant, first, end)]
        if since < _midnight(first):
            parts.append(_raw_part(keys, tenant, since, _midnight(first)))
        if end is not None and until is not None and _midnight(end) < until:
            parts.append(_raw_part(keys, tenant, _midnight(end), until))
    if len(parts) == 1:
        return parts[0].subquery("parts")
    return union_all(*parts).subquery("parts")


def usage_report(
    engine: Engine,
    *,
    since: datetime,
    until: datetime | None = None,
    by: GroupBy = "tenant",
    tenant_id: str | None = None,
    limit: int | None = None,
) -> list[ReportLine]:
    """Totals per group in ``[since, until)``, the biggest spend first (by day: oldest day first)."""
    if by not in GROUPINGS:
        raise ReportError(f"cannot group by {by!r}: use one of {', '.join(GROUPINGS)}")
    if limit is not None and limit < 1:
        raise ReportError(f"limit must be at least 1, not {limit}")
    since, until = _check_window(since, until)
    if by == "day":
        return _by_day(engine, since, until, tenant_id, limit)
    # By tenant the groups are the indexed key (a 10 KB id is not compared row by row); its
    # id is carried along (one id per key).
    group_keys = ("tenant_key", "tenant_id") if by == "tenant" else _KEYS[by]
    parts = _parts(group_keys, since, until, tenant_id)
    group_columns = [parts.c[k] for k in _KEYS[by]] if by != "tenant" else [parts.c.tenant_key]
    shown = [parts.c[k] for k in _KEYS[by]] if by != "tenant" else [func.min(parts.c.tenant_id).label("tenant_id")]
    spend = func.sum(parts.c.price_usd)
    query = (
        select(*shown, *[func.sum(parts.c[s]).label(s) for s in _SUMS])
        .group_by(*group_columns)
        .order_by(spend.desc(), func.sum(parts.c.requests).desc(), *group_columns)
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [_line(row, _KEYS[by]) for row in rows]


def usage_totals(
    engine: Engine, *, since: datetime, until: datetime | None = None, tenant_id: str | None = None
) -> ReportLine:
    """The window's grand total (every group)."""
    since, until = _check_window(since, until)
    parts = _parts((), since, until, tenant_id)
    query = select(*[func.sum(parts.c[s]).label(s) for s in _SUMS])
    with engine.connect() as connection:
        row = connection.execute(query).mappings().one()
    return _line(row, ())


def top(engine: Engine, since: datetime, by: GroupBy, n: int, tenant_id: str | None = None) -> list[ReportLine]:
    """The ``n`` groups that spent most since ``since``."""
    return usage_report(engine, since=since, by=by, tenant_id=tenant_id, limit=n)


def _by_day(
    engine: Engine, since: datetime, until: datetime | None, tenant: str | None, limit: int | None
) -> list[ReportLine]:
    """Per UTC day: whole days from the rollup; a partial first or last day from ``usage``,
    counted for its day."""
    lines: dict[date, ReportLine] = {}
    days = _whole_days(since, until)
    edges: list[tuple[datetime, datetime]] = []
    with engine.connect() as connection:
        if days is None:
            assert until is not None  # without an end every window has whole days
            edges.append((since, until))
        else:
            first, end = days
            for row in connection.execute(_daily_part(("day",), tenant, first, end)).mappings():
                lines[_as_date(row["day"])] = _line(row, ("day",))
            if since < _midnight(first):
                edges.append((since, _midnight(first)))
            if end is not None and until is not None and _midnight(end) < until:
                edges.append((_midnight(end), until))
        # Edges are shorter than two days: one small query per UTC day they touch.
        for start, stop in edges:
            for piece_start, piece_end in _day_pieces(start, stop):
                row = connection.execute(_raw_part((), tenant, piece_start, piece_end)).mappings().one()
                if row["requests"]:
                    line = _line(row, ())
                    line.day = piece_start.date()
                    lines[line.day] = _merge(lines.get(line.day), line)
    ordered = [lines[d] for d in sorted(lines)]
    return ordered[:limit] if limit is not None else ordered


def _day_pieces(start: datetime, stop: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, stop)`` cut at each UTC midnight."""
    pieces: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < stop:
        piece_end = min(stop, _midnight(cursor.date() + timedelta(days=1)))
        pieces.append((cursor, piece_end))
        cursor = piece_end
    return pieces


def daily_series(engine: Engine, *, since: datetime, tenant_id: str | None = None) -> list[DayTotals]:
    """Totals for each UTC day from ``since``'s day to today (whole days, from the rollup),
    zeros where nothing was called: the console's chart."""
    since = _utc(since)
    first = since.date()
    today = datetime.now(UTC).date()
    with engine.connect() as connection:
        rows = connection.execute(_daily_part(("day",), tenant_id, first, None)).mappings().all()
    found = {_as_date(row["day"]): row for row in rows}
    series = []
    day = first
    last = max([today, *found])
    while day <= last:
        row = found.get(day)
        if row is None:
            series.append(DayTotals(day=day))
        else:
            series.append(
                DayTotals(
                    day=day,
                    requests=int(row["requests"] or 0),
                    failed=int(row["failed"] or 0),
                    tokens_in=int(row["tokens_in"] or 0),
                    tokens_out=int(row["tokens_out"] or 0),
                    cached_tokens=int(row["cached_tokens"] or 0),
                    price_usd=_money(row["price_usd"]),
                )
            )
        day += timedelta(days=1)
    return series


# --- rows into lines --------------------------------------------------------------------


def money_text(value: Decimal) -> str:
    """Money as exact fixed-point text (never an exponent: ``0.000000000000``, not ``0E-12``)."""
    return format(value, "f")


def _money(value: object) -> Decimal:
    if value is None:
        return Decimal(0).quantize(MONEY_QUANTUM)
    # SQLite keeps NUMERIC as a double: its sums come back as floats (or Decimals made from
    # them); 12 places after the point is the ledger's precision, so round to exactly that.
    return (value if isinstance(value, Decimal) else Decimal(str(value))).quantize(MONEY_QUANTUM)


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _line(row: Any, keys: Sequence[str]) -> ReportLine:
    line = ReportLine(
        requests=int(row["requests"] or 0),
        failed=int(row["failed"] or 0),
        tokens_in=int(row["tokens_in"] or 0),
        tokens_out=int(row["tokens_out"] or 0),
        cached_tokens=int(row["cached_tokens"] or 0),
        characters=int(row["characters"] or 0),
        audio_seconds=float(row["audio_seconds"] or 0.0),
        price_usd=_money(row["price_usd"]),
    )
    for key in keys:
        value = row[key]
        setattr(line, key, _as_date(value) if key == "day" else value)
    return line


def _merge(into: ReportLine | None, more: ReportLine) -> ReportLine:
    if into is None:
        return more
    for name in _SUMS:
        setattr(into, name, getattr(into, name) + getattr(more, name))
    return into


__all__ = [
    "GROUPINGS",
    "DayTotals",
    "GroupBy",
    "ReportError",
    "ReportLine",
    "daily_series",
    "money_text",
    "parse_instant",
    "parse_since",
    "top",
    "usage_report",
    "usage_totals",
]
