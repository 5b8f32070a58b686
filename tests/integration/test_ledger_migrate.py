"""Migrations on real databases: from empty, idempotent, concurrent start-ups, the schema
exactly schema.py's, and ``run_migrate``'s one-line output and errors."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from gateway.config import GatewayConfig, LedgerConfig
from gateway.usage import migrate as migrate_module
from gateway.usage.database import DatabaseTarget, resolve_database_url, sqlite_target
from gateway.usage.migrate import head_revision, migrate, run_migrate, upgrade
from gateway.usage.migrations import VERSION_TABLE
from gateway.usage.schema import metadata
from tests.support.postgres import fresh_database


def pg_target(url: str) -> DatabaseTarget:
    return resolve_database_url(LedgerConfig.model_validate({"database_url": url}))


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseTarget]:
    migrate_module._migrated.clear()
    if request.param == "sqlite":
        yield sqlite_target(tmp_path / "nested" / "usage.db")
    else:
        with fresh_database() as url:
            yield pg_target(url)
    migrate_module._migrated.clear()


def schema_differences(target: DatabaseTarget) -> list[object]:
    engine = create_engine(target.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_from_empty_to_head_creates_exactly_the_schema(target: DatabaseTarget) -> None:
    assert upgrade(target) == (head_revision(), None)
    assert schema_differences(target) == []
    engine = create_engine(target.sqlalchemy_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == {"usage", "usage_daily", VERSION_TABLE}


def test_twice_is_idempotent_and_fast(target: DatabaseTarget) -> None:
    assert migrate(target) == head_revision()
    migrate_module._migrated.clear()  # as in a new process: the database is asked
    started = time.perf_counter()
    assert upgrade(target) == (head_revision(), head_revision())
    asked = time.perf_counter() - started
    started = time.perf_counter()
    assert migrate(target) == head_revision()
    cached = time.perf_counter() - started
    assert asked < 2.0  # one connection and one query (~4 ms SQLite, ~20 ms PostgreSQL here)
    assert cached < 0.01  # nothing at all: already migrated by this process
    assert schema_differences(target) == []


def test_concurrent_threads_upgrade_once(target: DatabaseTarget) -> None:
    results: list[tuple[str, str | None]] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            results.append(upgrade(target))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert {revision for revision, _ in results} == {head_revision()}
    assert schema_differences(target) == []


def _upgrade_in_child(target: DatabaseTarget, start_at: float, out: multiprocessing.Queue[object]) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    try:
        out.put(upgrade(target))
    except BaseException as exc:
        out.put(repr(exc))


def test_concurrent_processes_upgrade_once(target: DatabaseTarget) -> None:
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[object] = context.Queue()
    start_at = time.time() + 3.0  # both children past their imports, then at once
    children = [context.Process(target=_upgrade_in_child, args=(target, start_at, out)) for _ in range(2)]
    for child in children:
        child.start()
    results = [out.get(timeout=60) for _ in children]
    for child in children:
        child.join(10)
    out.close()
    out.join_thread()
    assert all(isinstance(result, tuple) and result[0] == head_revision() for result in results), results
    befores = sorted(str(result[1]) for result in results if isinstance(result, tuple))
    # One upgraded from nothing; the other found head (before or after waiting for the lock).
    assert befores == [head_revision(), "None"]
    assert schema_differences(target) == []


def gateway_config(ledger: dict[str, object]) -> GatewayConfig:
    return GatewayConfig.model_validate({"ledger": ledger})


def test_run_migrate_prints_what_it_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    migrate_module._migrated.clear()
    config = gateway_config({"database_url": f"sqlite:///{tmp_path}/usage.db"})
    assert run_migrate(config) == 0
    assert capsys.readouterr().out == f"ledger: sqlite:{tmp_path}/usage.db at revision 0001 (upgraded from none)\n"
    migrate_module._migrated.clear()
    assert run_migrate(config) == 0
    assert capsys.readouterr().out == f"ledger: sqlite:{tmp_path}/usage.db at revision 0001 (already at head)\n"


def test_run_migrate_on_postgresql(capsys: pytest.CaptureFixture[str]) -> None:
    with fresh_database() as url:
        assert run_migrate(gateway_config({"database_url": url})) == 0
    out = capsys.readouterr().out
    assert out.startswith("ledger: postgresql://") and out.endswith("at revision 0001 (upgraded from none)\n")


def test_run_migrate_unreachable_postgresql_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.redis import free_port

    port = free_port()
    config = gateway_config({"database_url": f"postgresql://gw:pa55word-x@127.0.0.1:{port}/ledger", "timeout_s": 2})
    assert run_migrate(config) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"dify-gateway: ledger: cannot migrate postgresql://127.0.0.1:{port}/ledger: ")
    assert "pa55word" not in captured.err and "Traceback" not in captured.err


def test_run_migrate_unwritable_sqlite_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = gateway_config({"database_url": f"sqlite:///{blocker}/sub/usage.db"})
    assert run_migrate(config) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"dify-gateway: ledger: cannot write sqlite:{blocker}/sub/usage.db: ")
    assert "DIFY_GATEWAY_DATA_DIR" in err


def test_run_migrate_with_the_ledger_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_migrate(gateway_config({"enabled": False})) == 0
    assert "disabled" in capsys.readouterr().out
