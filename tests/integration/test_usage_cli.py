"""``dify-gateway usage`` in its own process against SQLite files and a real PostgreSQL database:
the three formats, and each error as one line with its exit code."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.usage.report import usage_report
from tests.unit.usage.test_report_ledger import (
    HOSTILE_TENANT,
    LONG_TENANT,
    postgres_database,
    row,
    sqlite_engine,
    write_rows,
)

COMMAND = [sys.executable, "-m", "gateway", "usage"]
WINDOW = ["--since", "2026-11-01", "--until", "2026-11-05"]


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def rows() -> list[object]:
    return [
        row(at(1, 10), "acme", tokens_in=1_200_000, tokens_out=50, price_usd=Decimal("12.345678")),
        row(at(2, 9), "acme", tokens_in=10, tokens_out=5, price_usd=Decimal("0.000012"), outcome="timeout"),
        row(at(2, 12), HOSTILE_TENANT, model_type="text-embedding", model="e5", tokens_in=1000, cached_tokens=400),
        row(at(3), LONG_TENANT, model_type="tts", model="tts-1", route=None, characters=120, price_usd=Decimal("0.5")),
        row(at(3, 5), "tab\there\x1b[2J", price_usd=Decimal("0.0123")),
    ]


def run(*args: str, data_dir: Path, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFY_")}
    env["DIFY_GATEWAY_DATA_DIR"] = str(data_dir)
    command = [*COMMAND, *(["--config", str(config)] if config else []), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The default ledger (``<data dir>/usage.db``) holding the known rows."""
    engine = sqlite_engine(tmp_path / "usage.db")
    try:
        write_rows(engine, rows())  # type: ignore[arg-type]
    finally:
        engine.dispose()
    yield tmp_path


def test_table_is_aligned_with_a_totals_line_and_safe_cells(data_dir: Path) -> None:
    done = run(*WINDOW, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Usage by tenant, 2026-11-01 00:00 UTC to 2026-11-05 00:00 UTC · sqlite:")
    heading, rule, *body = lines[1:]
    assert heading.split()[:3] == ["Tenant", "Requests", "Failed"] and heading.rstrip().endswith("Cost (USD)")
    assert set(rule.replace(" ", "")) == {"-"}
    table, total = body[:-2], body[-1]
    assert body[-2] == rule
    firsts = [line.split()[0] for line in table]
    assert firsts == ["acme", "t" * 39 + "…", "tab\\there\\x1b[2J", "<script>alert('x')</script>"]  # by spend
    acme = table[0]
    assert "1,200,010" in acme and "12.35" in acme and " 1 " in acme  # separators, cents, one failed
    assert any(line.startswith("t" * 39 + "…") for line in table)  # 10 KB id cut for the terminal
    assert any("tab\\there\\x1b[2J" in line for line in table)  # control characters shown escaped
    assert "\x1b" not in done.stdout
    assert any(line.startswith("<script>alert('x')</script> \"quoted\"") for line in table)
    assert total.startswith("Total") and "1,201,010" in total and "12.86" in total
    # Cost column right-aligned: every row ends at the same column
    assert len({len(line.rstrip()) for line in [heading, *table, total] if "…" not in line and "租" not in line}) == 1
    assert done.stderr == ""


def test_csv_and_json_hold_exact_values_and_whole_ids(data_dir: Path) -> None:
    done = run(*WINDOW, "--format", "csv", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    by_tenant = {r["tenant_id"]: r for r in table}
    assert set(by_tenant) == {"acme", HOSTILE_TENANT, LONG_TENANT, "tab\there\x1b[2J"}
    assert by_tenant["acme"]["price_usd"] == "12.345690000000" and by_tenant["acme"]["failed"] == "1"
    assert by_tenant[LONG_TENANT]["characters"] == "120"
    done = run(*WINDOW, "--format", "json", "--by", "model", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["by"] == "model" and body["since"] == "2026-11-01T00:00:00+00:00"
    assert [(line["model"], line["price_usd"]) for line in body["lines"]] == [
        ("gpt-4o-mini", "12.357990000000"),
        ("tts-1", "0.500000000000"),
        ("e5", "0.000000000000"),
    ]
    assert body["total"]["requests"] == 5 and body["total"]["price_usd"] == "12.857990000000"
    engine = sqlite_engine(data_dir / "usage.db")
    try:
        expected = usage_report(engine, since=at(1), until=at(5), by="model")
    finally:
        engine.dispose()
    assert body["lines"] == [line.to_json() for line in expected]


def test_tenant_filter_limit_and_group_by_day(data_dir: Path) -> None:
    done = run(*WINDOW, "--tenant", HOSTILE_TENANT, "--format", "json", data_dir=data_dir)
    assert [line["tenant_id"] for line in json.loads(done.stdout)["lines"]] == [HOSTILE_TENANT]
    done = run(*WINDOW, "--limit", "1", data_dir=data_dir)
    assert done.returncode == 0 and "(the first 1 lines; the total counts every tenant)" in done.stdout
    done = run(*WINDOW, "--by", "day", "--format", "csv", data_dir=data_dir)
    assert [r["day"] for r in csv.DictReader(io.StringIO(done.stdout))] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    empty = run("--since", "2020-01-01", "--until", "2020-02-01", data_dir=data_dir)
    assert empty.returncode == 0 and "No usage recorded in this window." in empty.stdout


def test_a_configured_sqlite_url_and_a_postgresql_ledger(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.db"
    engine = sqlite_engine(path)
    try:
        write_rows(engine, rows()[:1])  # type: ignore[arg-type]
    finally:
        engine.dispose()
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"ledger": {"database_url": f"sqlite:///{path}"}}))
    done = run(*WINDOW, "--format", "json", data_dir=tmp_path / "unused", config=config)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"]["requests"] == 1
    with postgres_database() as url:
        from sqlalchemy import create_engine

        from gateway.usage import schema

        pg = create_engine(url)
        try:
            schema.metadata.create_all(pg)
            write_rows(pg, rows())  # type: ignore[arg-type]
        finally:
            pg.dispose()
        config.write_text(json.dumps({"ledger": {"database_url": url.replace("postgresql+psycopg", "postgresql")}}))
        done = run(*WINDOW, "--format", "json", data_dir=tmp_path, config=config)
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["total"]["requests"] == 5 and LONG_TENANT in [line["tenant_id"] for line in body["lines"]]
        assert body["total"]["price_usd"] == "12.857990000000"


def _one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr


def test_errors_are_one_line_with_an_exit_code(tmp_path: Path, data_dir: Path) -> None:
    _one_line_error(run(data_dir=tmp_path / "nothing"), 1, "no ledger database at", "usage.db")
    assert not (tmp_path / "nothing" / "usage.db").exists()  # a report never creates the file
    _one_line_error(run("--since", "last week", data_dir=data_dir), 2, "'last week' is not a time")
    _one_line_error(run("--since", "2026-11-02", "--until", "2026-11-01", data_dir=data_dir), 2, "must be after")
    done = run("--limit", "0", data_dir=data_dir)
    assert done.returncode == 2 and "at least 1" in done.stderr and "Traceback" not in done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "usage.db").write_bytes(b"")
    _one_line_error(run(data_dir=empty), 1, "no usage tables yet", "dify-gateway migrate")
    config = tmp_path / "pg.yaml"
    config.write_text(json.dumps({"ledger": {"database_url": "postgresql://u:s3cret@127.0.0.1:9/ledger"}}))
    done = run(data_dir=data_dir, config=config)
    _one_line_error(done, 1, "cannot read the ledger at postgresql://127.0.0.1:9/ledger")
    assert "s3cret" not in done.stderr
