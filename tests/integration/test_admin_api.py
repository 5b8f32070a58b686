"""The management API (FastAPI at /admin) against real ledgers: schemathesis against its own
OpenAPI document (no 5xx, every response as documented), then the key, the parameters, the
ledger switched off, budgets, and reads kept off the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from gateway.admin import AdminSource, build_admin_app
from gateway.admin.app import UNAUTHORIZED
from gateway.key_guard import KeyGuard
from gateway.usage.report import usage_report, usage_totals
from tests.unit.usage.test_report_ledger import (
    HOSTILE_TENANT,
    LONG_TENANT,
    postgres_engine,
    row,
    sqlite_engine,
    write_rows,
)

KEY = "admin-key-for-tests"
HEADERS = {"X-Admin-Key": KEY}
TARGETS = {
    "in_flight": 2,
    "draining": False,
    "shared_breakers": True,
    "targets": [{"target": "openai/gpt-4o@https://api.openai.com", "state": "closed", "in_flight": 2}],
}


def recent_rows() -> list[Any]:
    now = datetime.now(UTC)
    return [
        row(now - timedelta(hours=1), HOSTILE_TENANT, tokens_in=10, tokens_out=5, price_usd=Decimal("0.000123")),
        row(now - timedelta(days=2), "acme", tokens_in=1000, price_usd=Decimal("1.5"), outcome="timeout"),
        row(now - timedelta(days=3), LONG_TENANT, model_type="tts", model="tts-1", characters=42),
    ]


class Budgets:
    """The budget callable as the governor fills it: an awaitable of states, or None (off)."""

    def __init__(self, states: Sequence[dict[str, Any]] | None, fail: bool = False) -> None:
        self.states = states
        self.fail = fail
        self.asked: list[str | None] = []

    def __call__(self, tenant: str | None) -> Awaitable[Sequence[Any]] | None:
        self.asked.append(tenant)
        if self.states is None:
            return None
        return self._answer(tenant)

    async def _answer(self, tenant: str | None) -> Sequence[Any]:
        if self.fail:
            raise ConnectionError("redis is away")
        return [s for s in self.states or () if tenant is None or s["tenant_id"] == tenant]


BUDGET_STATES = [
    {
        "tenant_id": HOSTILE_TENANT,
        "name": "default",
        "period": "month",
        "route": None,
        "model": None,
        "spent_usd": Decimal("12.500000000001"),
        "limit_usd": Decimal("10"),
        "spent_tokens": 1500,
        "limit_tokens": None,
        "resets_at": datetime(2026, 12, 1, tzinfo=UTC),
        "over": True,
    }
]


def source(engine: Engine | None, budgets: Budgets | None = None, guard: KeyGuard | None = None) -> AdminSource:
    return AdminSource(
        admin_key=lambda: KEY.encode(),
        key_guard=guard if guard is not None else KeyGuard(),  # (an empty guard is falsy: it has a len)
        engine=lambda: engine,
        ledger_state=lambda: {"queued": 3, "written": 10, "database": "sqlite:data/usage.db", "at": datetime.now(UTC)},
        budget_state=budgets or Budgets(BUDGET_STATES),
        targets=lambda: TARGETS,
    )


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path / "usage.db")
    try:
        write_rows(engine, recent_rows())
        yield engine
    finally:
        engine.dispose()


def test_every_operation_conforms_to_its_document_and_never_answers_5xx(sqlite: Engine) -> None:
    # Its auth checks send wrong keys on purpose: a guard that never throttles keeps every answer real.
    unthrottled = KeyGuard(burst=10**9)
    schema = schemathesis.openapi.from_asgi("/admin/openapi.json", build_admin_app(source(sqlite, guard=unthrottled)))
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.path for op in operations} == {"/usage", "/usage/daily", "/budgets", "/ledger", "/targets"}
    seen: dict[str, set[int]] = {}

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def conforms(case: Any) -> None:
            # Positive data may still be refused: "since" is any string in the schema, and a 400 says why.
            response = case.call_and_validate(headers=HEADERS, excluded_checks=[positive_data_acceptance])
            seen.setdefault(case.operation.path, set()).add(response.status_code)

        conforms()
    assert seen["/usage"] >= {200, 400} and seen["/ledger"] == {200}, seen


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.mark.asyncio
async def test_the_key_is_required_and_wrong_keys_are_throttled(sqlite: Engine) -> None:
    guard = KeyGuard(burst=3, refill_s=60)
    async with client(build_admin_app(source(sqlite, guard=guard))) as http:
        for path in ("/admin/usage", "/admin/usage/daily", "/admin/budgets", "/admin/ledger", "/admin/targets"):
            refused = await http.get(path)
            assert refused.status_code == 401 and refused.json() == {"data": None, "error": UNAUTHORIZED}
            assert refused.headers["www-authenticate"] == 'Bearer realm="dify-gateway admin"'
            assert refused.headers["cache-control"] == "no-store"
        assert len(guard) == 0  # a missing key is not a guess
        assert (await http.get("/admin/ledger", headers={"Authorization": f"Bearer {KEY}"})).status_code == 200
        assert (await http.get("/admin/usage?since=nonsense")).status_code == 401  # the key before the parameters
        for _ in range(3):
            assert (await http.get("/admin/ledger", headers={"X-Admin-Key": "guess"})).status_code == 401
        throttled = await http.get("/admin/ledger", headers=HEADERS)  # even the right key, now
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
        assert "too many wrong keys" in throttled.json()["error"]


@pytest.mark.asyncio
async def test_usage_equals_the_report_functions_with_ids_verbatim(sqlite: Engine) -> None:
    async with client(build_admin_app(source(sqlite))) as http:
        reply = await http.get("/admin/usage", params={"since": "7d", "by": "tenant"}, headers=HEADERS)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        since = datetime.fromisoformat(body["since"])
        expected = usage_report(sqlite, since=since, by="tenant")
        assert [line["tenant_id"] for line in body["lines"]] == ["acme", HOSTILE_TENANT, LONG_TENANT]
        for got, want in zip(body["lines"], expected, strict=True):
            assert {k: v for k, v in got.items() if v is not None} == want.to_json()
        assert body["total"]["price_usd"] == "1.500123000000" == str(usage_totals(sqlite, since=since).price_usd)
        one = await http.get("/admin/usage", params={"tenant": HOSTILE_TENANT, "by": "model"}, headers=HEADERS)
        assert [(line["model"], line["requests"]) for line in one.json()["lines"]] == [("gpt-4o-mini", 1)]
        assert one.json()["tenant"] == HOSTILE_TENANT
        blank = await http.get("/admin/usage?since=7d&until=&by=tenant&tenant=&limit=", headers=HEADERS)
        assert blank.status_code == 200 and len(blank.json()["lines"]) == 3
        limited = await http.get("/admin/usage", params={"limit": 1}, headers=HEADERS)
        assert len(limited.json()["lines"]) == 1 and limited.json()["total"]["requests"] == 3
        daily = (await http.get("/admin/usage/daily", params={"since": "7d"}, headers=HEADERS)).json()
        assert len(daily["days"]) == 8 and sum(d["requests"] for d in daily["days"]) == 3
        assert daily["days"][-1]["day"] == datetime.now(UTC).date().isoformat()


@pytest.mark.asyncio
async def test_bad_parameters_are_400_with_a_message(sqlite: Engine) -> None:
    async with client(build_admin_app(source(sqlite))) as http:
        cases = {
            "/admin/usage?since=yesterday": "'yesterday' is not a time",
            "/admin/usage?since=2026-11-02&until=2026-11-01": "must be after",
            "/admin/usage?until=soon": "'soon' is not a time",
            "/admin/usage?by=user": "by: Input should be 'tenant', 'model', 'route', 'day' or 'type'",
            "/admin/usage?limit=0": "limit: Input should be greater than or equal to 1",
            "/admin/usage?limit=ten": "limit:",
            "/admin/usage/daily?since=99999999d": "reaches back more than",
        }
        for path, message in cases.items():
            reply = await http.get(path, headers=HEADERS)
            assert reply.status_code == 400, (path, reply.text)
            assert reply.json()["data"] is None and message in reply.json()["error"], (path, reply.text)
        missing = await http.get("/admin/nothing-here", headers=HEADERS)
        assert missing.status_code == 404 and missing.json()["error"] == "no such path: /admin/nothing-here"
        post = await http.post("/admin/usage", headers=HEADERS)
        assert post.status_code == 405 and post.json()["data"] is None


@pytest.mark.asyncio
async def test_ledger_off_answers_503_as_documented() -> None:
    async with client(build_admin_app(source(None))) as http:
        for path in ("/admin/usage", "/admin/usage/daily"):
            reply = await http.get(path, headers=HEADERS)
            assert reply.status_code == 503 and "ledger is off" in reply.json()["error"]
        ledger = (await http.get("/admin/ledger", headers=HEADERS)).json()
        assert ledger["enabled"] is False and ledger["state"]["queued"] == 3
        document = (await http.get("/admin/openapi.json")).json()
        for path in ("/usage", "/usage/daily"):
            assert "503" in document["paths"][path]["get"]["responses"]


@pytest.mark.asyncio
async def test_budgets_targets_and_ledger_state(sqlite: Engine) -> None:
    budgets = Budgets(BUDGET_STATES)
    async with client(build_admin_app(source(sqlite, budgets))) as http:
        body = (await http.get("/admin/budgets", headers=HEADERS)).json()
        assert body["enabled"] is True and budgets.asked == [None]
        (state,) = body["budgets"]
        assert state["tenant_id"] == HOSTILE_TENANT and state["spent_usd"] == "12.500000000001"
        assert state["limit_usd"] == "10" and state["over"] is True and state["resets_at"].startswith("2026-12-01")
        other = (await http.get("/admin/budgets", params={"tenant": "acme"}, headers=HEADERS)).json()
        assert other["budgets"] == [] and budgets.asked[-1] == "acme"
        targets = (await http.get("/admin/targets", headers=HEADERS)).json()
        assert targets == TARGETS
    async with client(build_admin_app(source(sqlite, Budgets(None)))) as http:
        assert (await http.get("/admin/budgets", headers=HEADERS)).json() == {
            "enabled": False,
            "tenant": None,
            "budgets": [],
        }
    async with client(build_admin_app(source(sqlite, Budgets(BUDGET_STATES, fail=True)))) as http:
        away = await http.get("/admin/budgets", headers=HEADERS)
        assert away.status_code == 503 and "cannot read the budget state" in away.json()["error"]


@pytest.mark.asyncio
async def test_openapi_document_and_docs_page_under_the_prefix(sqlite: Engine) -> None:
    app = build_admin_app(source(sqlite))
    for mounted in (app, Starlette(routes=[Mount("/admin", app=app)])):
        async with client(mounted) as http:
            document = (await http.get("/admin/openapi.json")).json()
            assert document["servers"] == [{"url": "/admin"}]
            assert set(document["paths"]) == {"/usage", "/usage/daily", "/budgets", "/ledger", "/targets"}
            schemes = document["components"]["securitySchemes"]
            assert {s["type"] for s in schemes.values()} == {"apiKey", "http"}
            assert (await http.get("/admin/usage", headers=HEADERS)).status_code == 200
            page = await http.get("/admin/docs")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert "http" not in page.text.replace('href="openapi.json"', "")  # nothing from elsewhere
            script = await http.get("/admin/docs/docs.js")
            assert script.status_code == 200 and "openapi.json" in script.text
            assert (await http.get("/admin/")).headers["location"] == "docs"


@pytest.fixture
def locked_postgres() -> Iterator[Engine]:
    with postgres_engine() as engine:
        write_rows(engine, recent_rows())
        yield engine


@pytest.mark.asyncio
async def test_a_slow_database_read_never_blocks_the_event_loop(locked_postgres: Engine) -> None:
    engine = locked_postgres
    async with client(build_admin_app(source(engine))) as http:
        with engine.connect() as locker:
            locker.execute(text("LOCK TABLE usage_daily IN ACCESS EXCLUSIVE MODE"))
            report = asyncio.create_task(http.get("/admin/usage", headers=HEADERS))
            await asyncio.sleep(0.5)
            assert not report.done()  # waiting for the lock, in its thread
            started = time.perf_counter()
            assert (await http.get("/admin/ledger", headers=HEADERS)).status_code == 200
            assert time.perf_counter() - started < 0.5
            locker.rollback()  # releases the lock
        reply = await asyncio.wait_for(report, 30)
        assert reply.status_code == 200 and reply.json()["total"]["requests"] == 3
