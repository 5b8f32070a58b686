"""``dify-gateway usage``: the ledger's totals in a terminal (a table), or as CSV or JSON.

The database is opened for reading only (a SQLite file is never created, a PostgreSQL
session is read-only), so a report cannot disturb the gateway writing beside it. Every
problem is one line on stderr and an exit code: 2 for a wrong argument or configuration,
1 for a database that is missing or cannot be reached.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from gateway.config import CONFIG_ENV, ConfigError, GatewayConfig, load_config
from gateway.usage.database import DatabaseTarget, DatabaseUrlError, resolve_database_url
from gateway.usage.report import (
    GROUPINGS,
    GroupBy,
    ReportError,
    ReportLine,
    parse_instant,
    parse_since,
    usage_report,
    usage_totals,
)

FORMATS = ("table", "csv", "json")
MAX_CELL = 40  # a table cell longer than this is cut with an ellipsis (CSV and JSON are whole)
_HEADINGS: dict[GroupBy, tuple[str, ...]] = {
    "tenant": ("Tenant",),
    "model": ("Provider", "Model"),
    "route": ("Route",),
    "day": ("Day (UTC)",),
    "type": ("Type",),
}
_CSV_KEYS: dict[GroupBy, tuple[str, ...]] = {
    "tenant": ("tenant_id",),
    "model": ("provider", "model"),
    "route": ("route",),
    "day": ("day",),
    "type": ("model_type",),
}
_CSV_NUMBERS = (
    "requests",
    "failed",
    "tokens_in",
    "tokens_out",
    "cached_tokens",
    "characters",
    "audio_seconds",
    "price_usd",
)


class UsageCommandError(Exception):
    """One line for stderr, and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_usage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"configuration file (default: ${CONFIG_ENV}, else embedded defaults)")
    parser.add_argument(
        "--since", default="7d", help="start: 30m, 24h, 7d, 2w (before now), a date (2026-11-01) or an ISO datetime"
    )
    parser.add_argument("--until", help="end (exclusive): a date or an ISO datetime (default: now)")
    parser.add_argument("--by", choices=GROUPINGS, default="tenant", help="one line per ... (default: tenant)")
    parser.add_argument("--tenant", help="only this tenant (the Dify workspace id, exactly)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv or json")
    parser.add_argument("--limit", type=_positive, help="at most this many lines (the biggest spend first)")


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, not {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {value}")
    return value


def run_usage(args: argparse.Namespace, config: GatewayConfig) -> int:
    try:
        print(_report(args, config), end="")
    except UsageCommandError as exc:
        print(f"dify-gateway usage: {exc}", file=sys.stderr)
        return exc.code
    return 0


def _report(args: argparse.Namespace, config: GatewayConfig) -> str:
    now = datetime.now(UTC)
    try:
        since = parse_since(args.since, now)
        until = parse_instant(args.until) if args.until else None
    except ReportError as exc:
        raise UsageCommandError(str(exc), 2) from None
    if until is not None and until <= since:
        raise UsageCommandError(f"--until ({until.isoformat()}) must be after --since ({since.isoformat()})", 2)
    try:
        target = resolve_database_url(config.ledger)
    except DatabaseUrlError as exc:
        raise UsageCommandError(str(exc), 2) from None
    engine = open_report_engine(target, config.ledger.timeout_s)
    try:
        _check_tables(engine, target)
        by: GroupBy = args.by
        lines = usage_report(engine, since=since, until=until, by=by, tenant_id=args.tenant, limit=args.limit)
        total = usage_totals(engine, since=since, until=until, tenant_id=args.tenant)
    except SQLAlchemyError as exc:
        raise UsageCommandError(f"cannot read the ledger at {target.display}: {_reason(exc)}", 1) from None
    finally:
        engine.dispose()
    if args.format == "json":
        return _json(args, since, until, lines, total)
    if args.format == "csv":
        return _csv(args.by, lines)
    return _table(args, since, until, lines, total, target)


def open_report_engine(target: DatabaseTarget, timeout_s: float) -> Engine:
    """An engine that only reads: a SQLite file that must exist (never created), or a
    read-only PostgreSQL session; one connection, no pool."""
    if target.kind == "sqlite":
        assert target.path is not None
        if not target.path.is_file():
            raise UsageCommandError(
                f"no ledger database at {target.display} yet: the gateway creates it when it starts with the "
                "ledger on (or run dify-gateway migrate)",
                1,
            )
        uri = f"sqlite:///file:{target.path.resolve()}?mode=ro&uri=true"
        return create_engine(uri, poolclass=NullPool, connect_args={"timeout": timeout_s})
    options = f"-c default_transaction_read_only=on -c statement_timeout={int(timeout_s * 1000)}"
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, round(timeout_s)),
        "application_name": "dify-gateway usage",
        "options": options,
    }
    return create_engine(target.sqlalchemy_url, poolclass=NullPool, connect_args=connect_args)


def _check_tables(engine: Engine, target: DatabaseTarget) -> None:
    tables = set(inspect(engine).get_table_names())
    if not {"usage", "usage_daily"} <= tables:
        raise UsageCommandError(
            f"the ledger at {target.display} has no usage tables yet: run dify-gateway migrate "
            "(or start the gateway with ledger.migrate_on_start)",
            1,
        )


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own first line (never the URL: SQLAlchemy's message would add the SQL)."""
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --- formats ------------------------------------------------------------------------------


def _json(
    args: argparse.Namespace, since: datetime, until: datetime | None, lines: list[ReportLine], total: ReportLine
) -> str:
    body = {
        "since": since.isoformat(),
        "until": until.isoformat() if until is not None else None,
        "by": args.by,
        "tenant": args.tenant,
        "lines": [line.to_json() for line in lines],
        "total": total.to_json(),
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


def _csv(by: GroupBy, lines: list[ReportLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*_CSV_KEYS[by], *_CSV_NUMBERS])
    for line in lines:
        values = line.to_json()
        writer.writerow([values.get(key, "") for key in (*_CSV_KEYS[by], *_CSV_NUMBERS)])
    return out.getvalue()


def _table(
    args: argparse.Namespace,
    since: datetime,
    until: datetime | None,
    lines: list[ReportLine],
    total: ReportLine,
    target: DatabaseTarget,
) -> str:
    by: GroupBy = args.by
    window = f"{_when(since)} to {_when(until) if until is not None else 'now'}"
    scope = f" · tenant {terminal_text(args.tenant)}" if args.tenant is not None else ""
    header = f"Usage by {by}, {window}{scope} · {target.display}\n"
    if not lines:
        return header + "No usage recorded in this window.\n"
    extras = [
        (name, heading, fmt)
        for name, heading, fmt in (
            ("characters", "Chars", _count),
            ("audio_seconds", "Audio s", _seconds),
        )
        if getattr(total, name)
    ]
    headings = [*_HEADINGS[by], "Requests", "Failed", "Tokens in", "Tokens out", "Cached", *[e[1] for e in extras]]
    headings.append("Cost (USD)")

    def cells(line: ReportLine, key: Sequence[str]) -> list[str]:
        numbers = [_count(line.requests), _count(line.failed), _count(line.tokens_in), _count(line.tokens_out)]
        numbers.append(_count(line.cached_tokens))
        numbers += [fmt(getattr(line, name)) for name, _, fmt in extras]
        return [*key, *numbers, usd(line.price_usd)]

    rows = [cells(line, [terminal_text(k) for k in line.key(by)]) for line in lines]
    label = ["Total", *[""] * (len(_HEADINGS[by]) - 1)]
    totals = cells(total, label)
    keys = len(_HEADINGS[by])
    widths = [max(_width(row[i]) for row in [headings, *rows, totals]) for i in range(len(headings))]

    def render(row: list[str]) -> str:
        parts = [_pad(cell, widths[i], left=i < keys) for i, cell in enumerate(row)]
        return "  ".join(parts).rstrip() + "\n"

    rule = "  ".join("-" * w for w in widths) + "\n"
    text = header + render(headings) + rule + "".join(render(row) for row in rows) + rule + render(totals)
    if args.limit is not None and len(lines) == args.limit:
        text += f"(the first {args.limit} lines; the total counts every {by})\n"
    return text


def _when(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%d %H:%M UTC")


def _count(value: int) -> str:
    return f"{value:,}"


def _seconds(value: float) -> str:
    return f"{value:,.1f}"


def usd(value: Decimal) -> str:
    """Dollars for a reader: cents from $1 up, up to four places from a cent, else two significant digits."""
    if value == 0:
        return "0.00"
    magnitude = abs(value)
    if magnitude >= 1:
        return f"{value:,.2f}"
    if magnitude >= Decimal("0.01"):
        text = f"{value:.4f}".rstrip("0")  # 0.5000 -> 0.50, 0.0123 stays
        return text + "0" * (2 - len(text.partition(".")[2]))
    places = -magnitude.adjusted() + 1  # two significant digits
    return f"{value:.{min(places, 12)}f}"


def terminal_text(value: str, limit: int = MAX_CELL) -> str:
    """A value as it can be shown in one terminal cell: control characters escaped (an id may
    hold escape sequences), and cut with an ellipsis past ``limit`` columns."""
    shown = "".join(
        ch if unicodedata.category(ch)[0] != "C" else ch.encode("unicode_escape").decode("ascii") for ch in value
    )
    if _width(shown) <= limit:
        return shown
    cut = ""
    for ch in shown:
        if _width(cut + ch) > limit - 1:
            break
        cut += ch
    return cut + "…"


def _width(text: str) -> int:
    """Columns a string takes in a terminal (East Asian wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(cell: str, width: int, *, left: bool) -> str:
    space = " " * (width - _width(cell))
    return cell + space if left else space + cell


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (``python -m gateway.usage.report_cli``), the same as ``dify-gateway usage``."""
    parser = argparse.ArgumentParser(prog="dify-gateway usage", description="Usage totals from the ledger.")
    add_usage_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dify-gateway: {exc}", file=sys.stderr)
        return 2
    return run_usage(args, config)


if __name__ == "__main__":
    raise SystemExit(main())
