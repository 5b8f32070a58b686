"""LedgerStore on real databases (a SQLite file, a real PostgreSQL): idempotent inserts and the
daily rollup, exact money, hostile identities, purge in batches, the budget rebuild's query."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Table, func, inspect, select

from gateway.config import LedgerConfig
from gateway.usage.database import resolve_database_url, sqlite_target
from gateway.usage.migrate import migrate
from gateway.usage.row import UsageRow, tenant_key
from gateway.usage.schema import usage, usage_daily
from gateway.usage.store import LedgerStore, group_key, money
from tests.support.postgres import fresh_database

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    if request.param == "sqlite":
        target = sqlite_target(tmp_path / "usage.db")
        migrate(target)
        opened = LedgerStore(target, 10.0)
        try:
            yield opened
        finally:
            opened.close()
        return
    with fresh_database() as url:
        target = resolve_database_url(LedgerConfig.model_validate({"database_url": url}))
        migrate(target)
        opened = LedgerStore(target, 10.0)
        try:
            yield opened
        finally:
            opened.close()


def row(tenant: str = "tenant-1", **values: object) -> UsageRow:
    fields: dict[str, object] = {
        "created_at": NOW,
        "request_id": "req",
        "tenant_id": tenant,
        "user_id": "user-1",
        "model_type": "llm",
        "provider": "openai",
        "model": "gpt-4o",
        "route": "chat",
        "tokens_in": 10,
        "tokens_out": 5,
        "price_usd": Decimal("0.000123456789"),
    }
    fields.update(values)
    return UsageRow(**fields)  # type: ignore[arg-type]


def count(store: LedgerStore, table: Table = usage) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def daily(store: LedgerStore) -> list[dict[str, object]]:
    with store.engine.connect() as connection:
        return [dict(found._mapping) for found in connection.execute(select(usage_daily))]


def test_the_same_rows_twice_count_once_in_both_tables(store: LedgerStore) -> None:
    rows = [row(request_id=f"r{i}") for i in range(300)]
    assert store.insert(rows) == 300
    assert store.insert(rows) == 0
    assert store.insert(rows[:10] + [row(request_id="new")]) == 1
    assert count(store) == 301
    (group,) = daily(store)
    assert group["requests"] == 301
    assert group["tokens_in"] == 3010 and group["tokens_out"] == 1505
    assert money(group["price_usd"]) == Decimal("0.000123456789") * 301


def test_a_batch_holding_one_row_twice_counts_it_once(store: LedgerStore) -> None:
    one = row()
    assert store.insert([one, one]) == 1
    assert daily(store)[0]["requests"] == 1


def test_exact_money_and_token_sums(store: LedgerStore) -> None:
    prices = [Decimal("0.1"), Decimal("0.2"), Decimal("0.000000000001"), Decimal("1.234567890123"), Decimal(0)]
    rows = [row(price_usd=price, tokens_in=2**40, tokens_out=i) for i, price in enumerate(prices)]
    store.insert(rows)
    store.insert([row(price_usd=Decimal("0.3"))])  # a second batch adds to the stored sums
    (group,) = daily(store)
    assert money(group["price_usd"]) == sum(prices) + Decimal("0.3") == Decimal("1.834567890124")
    assert group["tokens_in"] == 5 * 2**40 + 10
    with store.engine.connect() as connection:
        stored = sorted(money(value) for value in connection.execute(select(usage.c.price_usd)).scalars())
    assert stored == sorted([*prices, Decimal("0.3")])
    usd, tokens = store.spend("tenant-1", NOW - timedelta(hours=1))
    assert usd == Decimal("1.834567890124")
    assert tokens == 5 * 2**40 + 10 + 15


def test_groups_split_by_day_tenant_type_provider_model_and_route(store: LedgerStore) -> None:
    yesterday = NOW - timedelta(days=1)
    rows = [
        row(),
        row(created_at=yesterday),
        row(tenant="tenant-2"),
        row(model_type="text-embedding"),
        row(provider="azure"),
        row(model="other"),
        row(route=None),
        row(route=None, outcome="upstream_error", status=502),
    ]
    store.insert(rows)
    groups = {found["group_key"]: found for found in daily(store)}
    assert len(groups) == 7
    unrouted = groups[group_key(NOW.date(), "tenant-1", "llm", "openai", "gpt-4o", "")]
    assert (unrouted["requests"], unrouted["failed"], unrouted["route"]) == (2, 1, "")


def test_group_keys_cannot_be_forged_by_a_separator() -> None:
    day = NOW.date()
    assert group_key(day, "a|b", "llm", "p", "m", "") != group_key(day, "a", "b|llm", "p", "m", "")
    assert group_key(day, 'a","b', "llm", "p", "m", "") != group_key(day, "a", 'b","llm', "p", "m", "")


HOSTILE = [
    "t" * 10_240,
    "租户-ümlaut-😀-\u200b-\u202e",
    'it\'s "quoted" `back`',
    "'; DROP TABLE usage; --",
    "%_\\*?[glob]",
]


@pytest.mark.parametrize("tenant", HOSTILE, ids=["10kb", "unicode", "quotes", "injection", "metacharacters"])
def test_hostile_identities_are_stored_verbatim(store: LedgerStore, tenant: str) -> None:
    store.insert([row(tenant=tenant, user_id=tenant, request_id=tenant, model=tenant, route=tenant)])
    with store.engine.connect() as connection:
        found = connection.execute(select(usage)).one()
    assert (found.tenant_id, found.user_id, found.request_id, found.model, found.route) == (tenant,) * 5
    assert found.tenant_key == tenant_key(tenant)
    assert daily(store)[0]["tenant_id"] == tenant
    assert store.spend(tenant, NOW - timedelta(hours=1)) == (Decimal("0.000123456789"), 15)
    assert store.spend(tenant + "x", NOW - timedelta(hours=1)) == (Decimal(0), 0)
    assert set(inspect(store.engine).get_table_names()) >= {"usage", "usage_daily"}


def test_nul_and_lone_surrogates_become_replacement_characters(store: LedgerStore) -> None:
    tenant = "a\x00b\ud800c"
    store.insert([row(tenant=tenant, user_id="\x00", route="r\x00")])
    with store.engine.connect() as connection:
        found = connection.execute(select(usage)).one()
    assert (found.tenant_id, found.user_id, found.route) == ("a\ufffdb\ufffdc", "\ufffd", "r\ufffd")
    assert found.tenant_key == tenant_key(tenant)  # the key is the hash of the id as received
    assert store.spend(tenant, NOW - timedelta(hours=1))[1] == 15


def test_spend_filters_by_time_route_and_model_globs(store: LedgerStore) -> None:
    store.insert(
        [
            row(route="chat", model="gpt-4o", price_usd=Decimal("1"), tokens_in=1, tokens_out=0),
            row(route="chat-eu", model="gpt-4o-mini", price_usd=Decimal("2"), tokens_in=2, tokens_out=0),
            row(route="embed", model="e5", price_usd=Decimal("4"), tokens_in=4, tokens_out=0),
            row(route=None, model="gpt-4o", price_usd=Decimal("8"), tokens_in=8, tokens_out=0),
            row(route="chat", created_at=NOW - timedelta(days=2), price_usd=Decimal("16"), tokens_in=16),
            row(tenant="other", price_usd=Decimal("32"), tokens_in=32),
            row(route="100%_chat", model="[x]", price_usd=Decimal("64"), tokens_in=64, tokens_out=0),
        ]
    )
    since = NOW - timedelta(days=1)
    assert store.spend("tenant-1", since) == (Decimal(79), 79)
    assert store.spend("tenant-1", since, route="chat*") == (Decimal(3), 3)
    assert store.spend("tenant-1", since, model="gpt-4o") == (Decimal(9), 9)
    assert store.spend("tenant-1", since, route="chat", model="gpt-4o") == (Decimal(1), 1)
    assert store.spend("tenant-1", since, route="100%_*") == (Decimal(64), 64)
    assert store.spend("tenant-1", since, route="100__chat") == (Decimal(0), 0)  # _ is not a wildcard
    assert store.spend("tenant-1", since, model="[[]x]") == (Decimal(64), 64)
    assert store.spend("tenant-1", NOW - timedelta(days=3), route="chat") == (Decimal(17), 22)


def test_purge_deletes_old_rows_in_batches(store: LedgerStore) -> None:
    old = [row(created_at=NOW - timedelta(days=40, minutes=i), request_id=f"old{i}") for i in range(25)]
    new = [row(created_at=NOW - timedelta(days=1), request_id=f"new{i}") for i in range(5)]
    store.insert(old + new)
    assert len(daily(store)) > 1
    batches: list[int] = []

    def stop() -> bool:
        batches.append(1)
        return False

    assert store.purge(NOW - timedelta(days=30), batch=10, stop=stop) == 25
    assert len(batches) == 3  # 10 + 10 + 5
    assert count(store) == 5
    assert {found["day"] for found in daily(store)} == {(NOW - timedelta(days=1)).date()}
    assert store.purge(NOW - timedelta(days=30)) == 0


def test_purge_stops_when_asked(store: LedgerStore) -> None:
    store.insert([row(created_at=NOW - timedelta(days=40), request_id=f"old{i}") for i in range(30)])
    assert store.purge(NOW, batch=10, stop=lambda: count(store) <= 20) == 10
