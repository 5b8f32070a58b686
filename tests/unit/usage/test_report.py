"""Usage reports over known ledgers, on a SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import Engine, delete

from gateway.usage import schema
from gateway.usage.database import DatabaseTarget, sqlite_target
from gateway.usage.report import (
    ReportError,
    daily_series,
    parse_instant,
    parse_since,
    top,
    usage_report,
    usage_totals,
)
from gateway.usage.row import UsageRow
from gateway.usage.store import LedgerStore
from tests.unit.usage.test_report_ledger import (
    HOSTILE_TENANT,
    LONG_TENANT,
    postgres_database,
    postgres_engine,
    row,
    sqlite_engine,
    write_rows,
)


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = sqlite_engine(tmp_path / "ledger.db")
        try:
            yield engine
        finally:
            engine.dispose()
    else:
        with postgres_engine() as engine:
            yield engine


def known_rows() -> list[UsageRow]:
    return [
        row(at(1, 10), "acme", tokens_in=100, tokens_out=50, price_usd=Decimal("1.000000000001")),
        row(at(2, 9), "acme", tokens_in=10, tokens_out=5, price_usd=Decimal("0.5")),
        row(at(3, 23, 59, 59), "acme", tokens_in=1, outcome="upstream_error", status=502, price_usd=Decimal("0.25")),
        row(
            at(2, 12),
            HOSTILE_TENANT,
            model_type="text-embedding",
            provider="langgenius/openai/openai",
            model="text-embedding-3-small",
            route="local-text-embedding",
            tokens_in=1000,
            cached_tokens=400,
            price_usd=Decimal("2"),
        ),
        row(
            at(3),
            LONG_TENANT,
            model_type="tts",
            provider="langgenius/openai/openai",
            model="tts-1",
            route=None,
            characters=120,
            price_usd=Decimal("0.000000000001"),
        ),
        row(at(4, 1), "acme", model_type="speech2text", model="whisper-1", audio_seconds=12.5),
        row(datetime(2026, 10, 31, 23, 59, tzinfo=UTC), "early", price_usd=Decimal("9")),
    ]


def test_by_tenant_over_whole_days_biggest_spend_first_ids_verbatim(engine: Engine) -> None:
    write_rows(engine, known_rows())
    lines = usage_report(engine, since=at(1), until=at(4), by="tenant")
    assert [line.tenant_id for line in lines] == [HOSTILE_TENANT, "acme", LONG_TENANT]
    hostile, acme, long = lines
    assert (acme.requests, acme.failed, acme.tokens_in, acme.tokens_out) == (3, 1, 111, 55)
    assert acme.price_usd == Decimal("1.750000000001")
    assert (hostile.tokens_in, hostile.cached_tokens, hostile.price_usd) == (1000, 400, Decimal("2"))
    assert long.tenant_id == LONG_TENANT and len(long.tenant_id.encode()) == 10_000
    assert (long.characters, long.price_usd) == (120, Decimal("0.000000000001"))
    assert all(line.provider is None and line.day is None for line in lines)  # only the grouping's fields


def test_partial_days_at_both_ends_count_only_their_rows(engine: Engine) -> None:
    write_rows(engine, known_rows())
    lines = usage_report(engine, since=at(1, 12), until=at(3, 12), by="tenant")
    by_tenant = {line.tenant_id: line for line in lines}
    assert by_tenant["acme"].requests == 1 and by_tenant["acme"].price_usd == Decimal("0.5")  # 11-02 09:00 only
    assert by_tenant[LONG_TENANT].requests == 1  # 11-03 00:00:00: since is inclusive
    assert by_tenant[HOSTILE_TENANT].requests == 1
    # until is exclusive; a window inside one day reads the rows only
    assert usage_report(engine, since=at(3), until=at(3, 0, 0, 1), by="tenant")[0].tenant_id == LONG_TENANT
    assert usage_report(engine, since=at(3, 0, 0, 1), until=at(3, 23, 59, 59), by="tenant") == []


def test_whole_days_come_from_the_rollup_so_reports_outlive_the_rows(engine: Engine) -> None:
    write_rows(engine, known_rows())
    with engine.begin() as connection:  # retention deleted the rows; the rollup stays
        connection.execute(delete(schema.usage))
    whole = usage_report(engine, since=at(1), until=at(4), by="tenant")
    assert sum(line.requests for line in whole) == 5
    assert usage_report(engine, since=at(1, 0, 0, 1), until=at(4), by="tenant")[0].requests == 1  # 11-02 and 11-03


def test_by_model_route_and_type(engine: Engine) -> None:
    write_rows(engine, known_rows())
    models = usage_report(engine, since=at(1), by="model")
    assert [(m.provider, m.model) for m in models] == [
        ("langgenius/openai/openai", "text-embedding-3-small"),
        ("langgenius/openai/openai", "gpt-4o-mini"),
        ("langgenius/openai/openai", "tts-1"),
        ("langgenius/openai/openai", "whisper-1"),
    ]
    assert models[1].requests == 3 and models[3].audio_seconds == 12.5
    routes = {line.route: line.requests for line in usage_report(engine, since=at(1), by="route")}
    assert routes == {"openai": 4, "local-text-embedding": 1, "": 1}  # no route: ""
    types = {line.model_type: line.price_usd for line in usage_report(engine, since=at(1), by="type")}
    assert types == {
        "text-embedding": Decimal(2),
        "llm": Decimal("1.750000000001"),
        "tts": Decimal("0.000000000001"),
        "speech2text": Decimal(0),
    }


def test_by_day_oldest_first_with_partial_edge_days(engine: Engine) -> None:
    write_rows(engine, known_rows())
    days = usage_report(engine, since=at(1, 12), until=at(4, 12), by="day")
    assert [(d.day, d.requests) for d in days] == [
        (date(2026, 11, 2), 2),
        (date(2026, 11, 3), 2),
        (date(2026, 11, 4), 1),
    ]
    assert days[0].price_usd == Decimal("2.5")
    # A window with no whole day, across midnight
    short = usage_report(engine, since=at(2, 10), until=at(3, 1), by="day")
    assert [(d.day, d.requests) for d in short] == [(date(2026, 11, 2), 1), (date(2026, 11, 3), 1)]
    assert [d.day for d in usage_report(engine, since=at(1), by="day", limit=2)] == [
        date(2026, 11, 1),
        date(2026, 11, 2),
    ]


def test_the_tenant_filter_matches_hostile_and_long_ids_exactly(engine: Engine) -> None:
    write_rows(engine, [*known_rows(), row(at(2, 8), HOSTILE_TENANT + " ", price_usd=Decimal(1))])
    hostile = usage_report(engine, since=at(1), by="model", tenant_id=HOSTILE_TENANT)
    assert [(line.model, line.requests) for line in hostile] == [("text-embedding-3-small", 1)]
    assert usage_report(engine, since=at(1), tenant_id=LONG_TENANT)[0].tenant_id == LONG_TENANT
    assert usage_report(engine, since=at(1), tenant_id="' OR 1=1 --") == []
    assert usage_totals(engine, since=at(1), tenant_id="acme").requests == 4


def test_limit_totals_and_top(engine: Engine) -> None:
    write_rows(engine, known_rows())
    assert [line.tenant_id for line in usage_report(engine, since=at(1), limit=1)] == [HOSTILE_TENANT]
    assert [line.model for line in top(engine, at(1), "model", 2)] == ["text-embedding-3-small", "gpt-4o-mini"]
    total = usage_totals(engine, since=at(1))
    assert (total.requests, total.failed, total.tokens_in, total.characters) == (6, 1, 1111, 120)
    assert total.price_usd == Decimal("3.750000000002")
    empty = usage_totals(engine, since=at(20))
    assert (empty.requests, empty.price_usd) == (0, Decimal(0))


def test_the_daily_series_has_every_day_up_to_today(engine: Engine) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    write_rows(
        engine,
        [
            row(today - timedelta(days=2), "a", tokens_in=7, tokens_out=3, price_usd=Decimal("0.1")),
            row(today - timedelta(days=2, hours=-5), "b", tokens_in=1, price_usd=Decimal("0.2")),
            row(today + timedelta(hours=1), "a", outcome="timeout"),
        ],
    )
    series = daily_series(engine, since=today - timedelta(days=3))
    assert [d.day for d in series] == [(today - timedelta(days=n)).date() for n in (3, 2, 1, 0)]
    assert [d.requests for d in series] == [0, 2, 0, 1]
    assert (series[1].tokens_in, series[1].tokens_out, series[1].price_usd) == (8, 3, Decimal("0.3"))
    assert series[3].failed == 1
    assert [d.requests for d in daily_series(engine, since=today - timedelta(days=3), tenant_id="b")] == [0, 1, 0, 0]


def test_parse_since() -> None:
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since(" 24h", now) == now - timedelta(hours=24)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T08:30:00+02:00", now) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert parse_since("2026-11-01T08:30:00", now) == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    assert parse_instant("2026-11-01T08:30:00Z") == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    for bad in ("yesterday", "7", "-7d", "7y", "", "2026-13-01", "99999999999d"):
        with pytest.raises(ReportError) as caught:
            parse_since(bad, now)
        assert repr(bad) in str(caught.value)


def test_bad_parameters_are_report_errors(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "ledger.db")
    try:
        with pytest.raises(ReportError, match="must be after since"):
            usage_report(engine, since=at(2), until=at(1))
        with pytest.raises(ReportError, match="cannot group by"):
            usage_report(engine, since=at(1), by="user")  # type: ignore[arg-type]
        with pytest.raises(ReportError, match="at least 1"):
            usage_report(engine, since=at(1), limit=0)
    finally:
        engine.dispose()


_instants = st.integers(min_value=0, max_value=5 * 24 * 3600 - 1).map(lambda s: at(1) + timedelta(seconds=s))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(_instants, st.sampled_from(["a", "b", HOSTILE_TENANT]), st.integers(0, 10**6)), max_size=25
    ),
    window=st.tuples(_instants, st.one_of(st.none(), _instants)),
)
def test_any_window_sums_exactly_the_rows_inside_it(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[datetime, str, int]],
    window: tuple[datetime, datetime | None],
) -> None:
    engine = _property_engine(tmp_path_factory)
    with engine.begin() as connection:
        connection.execute(delete(schema.usage))
        connection.execute(delete(schema.usage_daily))
    write_rows(engine, [row(t, tenant, tokens_in=n, price_usd=Decimal(n) / 10**9) for t, tenant, n in rows])
    since, until = window
    if until is not None and until <= since:
        until = None
    inside = [(t, tenant, n) for t, tenant, n in rows if t >= since and (until is None or t < until)]
    expected: dict[str, tuple[int, int]] = {}
    for _, tenant, n in inside:
        count, tokens = expected.get(tenant, (0, 0))
        expected[tenant] = (count + 1, tokens + n)
    got = {line.tenant_id: (line.requests, line.tokens_in) for line in usage_report(engine, since=since, until=until)}
    assert got == expected
    days = usage_report(engine, since=since, until=until, by="day")
    assert sum(d.requests for d in days) == len(inside)
    assert all(d.day is not None for d in days) and [d.day for d in days] == sorted({t.date() for t, _, _ in inside})


_PROPERTY_ENGINES: dict[str, Engine] = {}


def _property_engine(factory: pytest.TempPathFactory) -> Engine:
    if "sqlite" not in _PROPERTY_ENGINES:
        _PROPERTY_ENGINES["sqlite"] = sqlite_engine(factory.mktemp("property") / "ledger.db")
    return _PROPERTY_ENGINES["sqlite"]


@pytest.fixture(autouse=True, scope="module")
def _dispose_property_engine() -> Iterator[None]:
    yield
    for engine in _PROPERTY_ENGINES.values():
        engine.dispose()
    _PROPERTY_ENGINES.clear()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_rows_written_by_the_ledger_store_report_exactly(kind: str, tmp_path: Path) -> None:
    def check(target: DatabaseTarget) -> None:
        store = LedgerStore(target, timeout_s=10)
        try:
            schema.metadata.create_all(store.engine)
            rows = known_rows()
            assert store.insert(rows) == len(rows)
            assert store.insert(rows[:2]) == 0  # a replay counts once
            lines = {line.tenant_id: line for line in usage_report(store.engine, since=at(1, 12), until=at(4, 12))}
            assert set(lines) == {"acme", HOSTILE_TENANT, LONG_TENANT}
            assert (lines["acme"].requests, lines["acme"].price_usd) == (3, Decimal("0.75"))
            assert lines[LONG_TENANT].tenant_id == LONG_TENANT
            whole = usage_totals(store.engine, since=at(1), until=at(5))
            assert (whole.requests, whole.price_usd) == (6, Decimal("3.750000000002"))
        finally:
            store.close()

    if kind == "sqlite":
        check(sqlite_target(tmp_path / "usage.db"))
    else:
        with postgres_database() as url:
            check(DatabaseTarget(sqlalchemy_url=url, kind="postgresql", display="postgresql://test"))
