"""The usage ledger's write rate: rows/s into SQLite and PostgreSQL, through LedgerStore.insert
(one batch at a time) and through Ledger.add end to end (add N rows, time until all written).

    python -m bench.ledger                      # SQLite in a temp dir, PostgreSQL from tests.support.postgres
    python -m bench.ledger --rows 50000 --batch 1000
    DATABASE_URL=postgresql://... python -m bench.ledger

The issue's goal: at least 5,000 rows/s into PostgreSQL on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from gateway.config import LedgerConfig
from gateway.usage.database import DatabaseTarget, resolve_database_url
from gateway.usage.migrate import migrate
from gateway.usage.row import UsageRow
from gateway.usage.store import LedgerStore
from gateway.usage.writer import Ledger
from tests.support.postgres import fresh_database


def rows(count: int, tenants: int = 50) -> list[UsageRow]:
    now = datetime.now(UTC)
    return [
        UsageRow(
            created_at=now,
            request_id=f"bench-{i}",
            tenant_id=f"tenant-{i % tenants}",
            user_id=f"user-{i % 500}",
            model_type="llm" if i % 3 else "text-embedding",
            provider="openai",
            model="gpt-4o-mini" if i % 3 else "text-embedding-3-small",
            route="chat" if i % 3 else "embed",
            target="openai/{model}",
            target_model="gpt-4o-mini",
            attempts=1,
            tokens_in=120 + i % 50,
            tokens_out=40,
            price_usd=Decimal("0.000042"),
            duration_ms=312.5,
            first_byte_ms=80.25,
            overhead_ms=0.4,
        )
        for i in range(count)
    ]


def store_rate(target: DatabaseTarget, count: int, batch: int) -> float:
    migrate(target)
    store = LedgerStore(target, 30.0)
    data = rows(count)
    try:
        started = time.perf_counter()
        for start in range(0, count, batch):
            store.insert(data[start : start + batch])
        return count / (time.perf_counter() - started)
    finally:
        store.close()


async def ledger_rate(config: LedgerConfig, data_dir: Path, count: int) -> tuple[float, float]:
    """(rows/s from the first add to the last row written, µs per add)."""
    ledger = Ledger(config, data_dir=data_dir)
    await ledger.start()
    data = rows(count)
    try:
        started = time.perf_counter()
        for row in data:
            ledger.add(row)
        added = time.perf_counter() - started
        while ledger.state().written < count:
            if ledger.state().status != "ok":
                raise RuntimeError(f"ledger not ok: {ledger.state()}")
            await asyncio.sleep(0.005)
        return count / (time.perf_counter() - started), added / count * 1e6
    finally:
        await ledger.aclose()


@contextmanager
def databases() -> Iterator[list[tuple[str, str, Path]]]:
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as directory, fresh_database() as pg_url:
        base = Path(directory)
        yield [("sqlite", f"sqlite:///{base}/usage.db", base / "sqlite"), ("postgresql", pg_url, base / "pg")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="rows per insert (ledger.batch_rows)")
    args = parser.parse_args()
    print(f"{'database':<11} {'path':<22} {'rows/s':>9}  note")
    with databases() as targets:
        for kind, url, data_dir in targets:
            data_dir.mkdir()
            config = LedgerConfig.model_validate({"database_url": url, "batch_rows": args.batch, "timeout_s": 30})
            rate = store_rate(resolve_database_url(config), args.rows, args.batch)
            print(f"{kind:<11} {'LedgerStore.insert':<22} {rate:>9,.0f}  {args.rows} rows, batches of {args.batch}")
            # A second run over the same tables: the end-to-end path on a database that already holds rows.
            end_to_end, per_add = asyncio.run(ledger_rate(config, data_dir, args.rows))
            print(f"{kind:<11} {'Ledger.add -> written':<22} {end_to_end:>9,.0f}  add() {per_add:.2f} µs a row")


if __name__ == "__main__":
    main()
