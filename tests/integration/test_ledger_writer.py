"""The ledger's writer on real databases: every row written once, through a database outage
(a private PostgreSQL stopped and started), a shutdown, a killed process's spill file and
an unwritable location."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from gateway.config import LedgerConfig
from gateway.usage.row import UsageRow
from gateway.usage.schema import usage, usage_daily
from gateway.usage.spill import SpillFile
from gateway.usage.writer import Ledger
from tests.support.postgres import PrivatePostgres, fresh_database


def row(i: int, tenant: str = "tenant-1") -> UsageRow:
    return UsageRow(
        created_at=datetime.now(UTC),
        request_id=f"req-{i}",
        tenant_id=tenant,
        user_id="user",
        model_type="llm",
        provider="openai",
        model="gpt-4o",
        route="chat",
        tokens_in=3,
        tokens_out=2,
        price_usd=Decimal("0.000001"),
    )


def config(url: str | None = None, **values: object) -> LedgerConfig:
    settings: dict[str, object] = {"flush_interval_ms": 50, "timeout_s": 3}
    if url is not None:
        settings["database_url"] = url
    settings.update(values)
    return LedgerConfig.model_validate(settings)


def stored(url: str) -> tuple[int, int, int]:
    """(usage rows, distinct request ids, usage_daily's request count)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(func.count()).select_from(usage)).scalar_one()
            distinct = connection.execute(select(func.count(func.distinct(usage.c.request_id)))).scalar_one()
            daily = connection.execute(select(func.coalesce(func.sum(usage_daily.c.requests), 0))).scalar_one()
    finally:
        engine.dispose()
    return int(rows), int(distinct), int(daily)


def spill_sizes(directory: Path) -> list[int]:
    return [path.stat().st_size for path in directory.glob("usage-spill-*.jsonl")]


def directory_entries(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def wait_for(predicate: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/usage.db"
    else:
        with fresh_database() as url:
            yield url


@pytest.mark.asyncio
async def test_ten_thousand_rows_added_quickly_are_all_written(database: str, tmp_path: Path) -> None:
    ledger = Ledger(config(database), data_dir=tmp_path)
    await ledger.start()
    assert ledger.state().status == "ok"
    started = time.perf_counter()
    for i in range(10_000):
        ledger.add(row(i))
    added = time.perf_counter() - started
    await wait_for(lambda: ledger.state().written == 10_000, 60)
    state = ledger.state()
    await ledger.aclose()
    assert added < 1.0  # add() is an append (~5 µs a row here)
    assert (state.queued, state.spilled, state.dropped, state.status) == (0, 0, 0, "ok")
    assert state.last_write_at is not None and state.last_error is None
    assert stored(database) == (10_000, 10_000, 10_000)


@pytest.mark.asyncio
async def test_aclose_writes_what_is_queued(database: str, tmp_path: Path) -> None:
    ledger = Ledger(config(database, flush_interval_ms=60_000), data_dir=tmp_path)
    await ledger.start()
    for i in range(2_500):
        ledger.add(row(i))
    await ledger.aclose()
    state = ledger.state()
    assert (state.written, state.spilled, state.dropped) == (2_500, 0, 0)
    assert stored(database) == (2_500, 2_500, 2_500)
    assert spill_sizes(tmp_path) == []  # an empty spill file is not left behind
    ledger.add(row(0))  # after close: harmless, counted
    assert ledger.state().dropped == 1


@pytest.mark.asyncio
async def test_postgresql_stopped_then_started_loses_no_row(private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    with fresh_database(private_postgres.url) as url:
        ledger = Ledger(config(url, buffer_rows=100, batch_rows=50, timeout_s=2), data_dir=tmp_path)
        await ledger.start()
        added = 0

        async def traffic(seconds: float) -> None:
            nonlocal added
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for _ in range(10):
                    ledger.add(row(added))
                    added += 1
                await asyncio.sleep(0.02)  # ~500 rows/s

        await traffic(1.0)
        await asyncio.to_thread(private_postgres.stop)
        await traffic(6.0)
        down = ledger.state()
        await asyncio.to_thread(private_postgres.start)
        await traffic(1.0)
        await wait_for(lambda: ledger.state().written + ledger.state().replayed == added, 60)
        state = ledger.state()
        await ledger.aclose()
        assert down.status == "degraded" and down.last_error
        assert down.spilled > 0 and down.queued <= 100 + 50
        assert state.status == "ok" and state.dropped == 0
        assert state.replayed == state.spilled
        assert state.written + state.replayed == added
        assert stored(url) == (added, added, added)
        assert not any(spill_sizes(tmp_path))


@pytest.mark.asyncio
async def test_postgresql_down_at_start_does_not_block_and_catches_up(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    with fresh_database(private_postgres.url) as url:
        await asyncio.to_thread(private_postgres.stop)
        ledger = Ledger(config(url, timeout_s=1), data_dir=tmp_path)
        started = time.monotonic()
        await ledger.start()
        assert time.monotonic() - started < 5.0
        assert ledger.state().status == "degraded" and ledger.store is None
        for i in range(300):
            ledger.add(row(i))
        await asyncio.to_thread(private_postgres.start)
        await wait_for(lambda: ledger.state().written == 300, 30)
        assert ledger.store is not None
        await ledger.aclose()
        assert stored(url) == (300, 300, 300)


@pytest.mark.asyncio
async def test_aclose_with_the_database_away_spills_and_the_next_start_replays(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    with fresh_database(private_postgres.url) as url:
        first = Ledger(config(url, timeout_s=1), data_dir=tmp_path)
        await first.start()
        await asyncio.to_thread(private_postgres.stop)
        for i in range(700):
            first.add(row(i))
        await first.aclose(timeout_s=3)
        assert first.state().spilled == 700 and first.state().dropped == 0
        assert sum(spill_sizes(tmp_path)) > 0
        await asyncio.to_thread(private_postgres.start)
        second = Ledger(config(url), data_dir=tmp_path)
        await second.start()
        await wait_for(lambda: second.state().replayed == 700, 30)
        await second.aclose()
        assert stored(url) == (700, 700, 700)
        assert spill_sizes(tmp_path) == []


def _spill_and_die(directory: str, count: int) -> None:
    spill = SpillFile(Path(directory) / "usage-spill.jsonl", 1 << 30)
    spill.append([row(i, tenant="killed") for i in range(count)])
    assert spill.path is not None
    with open(spill.path, "ab") as file:
        file.write(b'{"id": "torn-in-the-middle-of-a-wri')  # killed mid-write
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.asyncio
async def test_a_killed_process_spill_file_is_replayed_by_the_next(database: str, tmp_path: Path) -> None:
    child = multiprocessing.get_context("spawn").Process(target=_spill_and_die, args=(str(tmp_path), 120))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert len(spill_sizes(tmp_path)) == 1
    ledger = Ledger(config(database), data_dir=tmp_path)
    await ledger.start()
    await wait_for(lambda: ledger.state().replayed == 120, 30)
    await ledger.aclose()
    assert stored(database) == (120, 120, 120)
    assert spill_sizes(tmp_path) == []


@pytest.mark.asyncio
async def test_an_unwritable_sqlite_location_turns_the_ledger_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    ledger = Ledger(config(), data_dir=blocker / "data")
    with caplog.at_level(logging.WARNING, logger="dify_gateway"):
        await ledger.start()
        for i in range(10):
            ledger.add(row(i))
        await ledger.aclose()
    state = ledger.state()
    assert state.status == "off" and state.backend == "sqlite" and ledger.store is None
    assert state.dropped == 10 and state.queued == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert str(blocker / "data" / "usage.db") in warnings[0]
    assert "DIFY_GATEWAY_DATA_DIR" in warnings[0] and "ledger.enabled: false" in warnings[0]


@pytest.mark.asyncio
async def test_a_disabled_ledger_is_off_without_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(config(enabled=False), data_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="dify_gateway"):
        await ledger.start()
        ledger.add(row(0))
        await ledger.aclose()
    assert ledger.state().status == "off"
    assert not caplog.records and not directory_entries(tmp_path)


@pytest.mark.asyncio
async def test_retention_runs_shortly_after_start(tmp_path: Path) -> None:
    old = row(0)
    old.created_at = datetime(2020, 1, 1, tzinfo=UTC)
    first = Ledger(config(retention_days=0), data_dir=tmp_path)
    await first.start()
    first.add(old)
    first.add(row(1))
    await first.aclose()
    ledger = Ledger(config(retention_days=30), data_dir=tmp_path, retention_first_s=0.1)
    await ledger.start()
    url = f"sqlite:///{tmp_path}/usage.db"
    await wait_for(lambda: stored(url)[0] == 1, 10)
    await ledger.aclose()
    assert stored(url) == (1, 1, 1)
