"""The console's Usage tab in a real headless Chromium against ``dify-gateway serve`` in its own
process (the management API mounted at /admin): the chart drawn, the top tenants and models
equal to ``dify-gateway usage --format json`` over the same ledger, a budgeted tenant's state,
hostile tenant ids shown as text, and a clear message when the ledger is off or empty.

Screenshots go to ``test-artifacts/console/usage.png`` and ``usage-off.png``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page

from gateway.usage.database import sqlite_target
from gateway.usage.migrate import migrate
from tests.e2e.test_console import ADMIN, ARTIFACTS, DESKTOP, Watched, browser, signed_in
from tests.fakes.upstream import FakeUpstream
from tests.support.client import llm_request
from tests.support.server import TEST_KEY, GatewayProcess
from tests.unit.usage.test_report_ledger import HOSTILE_TENANT, LONG_TENANT, row, sqlite_engine, write_rows

__all__ = ["browser"]  # the console tests' Chromium fixture, shared

SCRIPT_TENANT = "<script>window.__pwned = 1</script><img src=x onerror=window.__pwned=2>"


def ledger_rows() -> list[Any]:
    now = datetime.now(UTC)
    rows = [
        row(now - timedelta(seconds=5), SCRIPT_TENANT, tokens_in=1200, tokens_out=300, price_usd=Decimal("12.5")),
        row(now - timedelta(days=1), "acme", tokens_in=5000, tokens_out=900, price_usd=Decimal("3.141592653589")),
        row(now - timedelta(days=1), "acme", model="gpt-4o", outcome="timeout", price_usd=Decimal("0.000042")),
        row(now - timedelta(days=4), HOSTILE_TENANT, model_type="text-embedding", model="e5", tokens_in=800),
        row(
            now - timedelta(days=9),
            LONG_TENANT,
            model_type="tts",
            model="tts-1",
            characters=64,
            price_usd=Decimal("0.75"),
        ),
    ]
    rows += [row(now - timedelta(days=d), f"tenant-{d:02d}", price_usd=Decimal(d) / 100) for d in range(2, 14)]
    return rows


def prepared_ledger(path: Path) -> None:
    """A ledger database as the gateway makes it (migrated), holding the known rows."""
    migrate(sqlite_target(path))
    engine = sqlite_engine(path)
    try:
        write_rows(engine, ledger_rows())
    finally:
        engine.dispose()


def gateway_config(ledger: dict[str, Any], upstream: FakeUpstream) -> dict[str, Any]:
    target = {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-e2e-upstream", "native": True}
    return {
        "routes": [{"name": "fake-llm", "match": {"type": "llm", "provider": "openai"}, "targets": [target]}],
        "console": {"enabled": True, "admin_key": ADMIN},
        "server": {"drain_grace_s": 0},
        "ledger": {"flush_interval_ms": 50, **ledger},
        # Every tenant may spend 10 USD a month: the script tenant has spent 12.50 already.
        "budgets": {"default": [{"period": "month", "usd": "10"}]},
    }


@pytest.fixture(scope="module")
def ledger_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("usage-e2e") / "usage.db"
    prepared_ledger(path)
    return path


@pytest.fixture(scope="module")
def server(
    ledger_path: Path, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = gateway_config({"database_url": f"sqlite:///{ledger_path}"}, upstream)
    with GatewayProcess(config, tmp_path_factory.mktemp("gateway")) as running:
        # The budgets show the tenants they have seen since start-up: the script tenant calls
        # once, and is refused before any upstream call (it is over its budget).
        refused = httpx.post(
            f"{running.url}/inner/api/invoke/llm",
            json=llm_request("gpt-4o-mini", stream=False, tenant_id=SCRIPT_TENANT),
            headers={"X-Inner-Api-Key": TEST_KEY},
            timeout=30,
        )
        assert refused.status_code != 200 and "budget" in refused.text, refused.text
        yield running


def settled_cli_json(path: Path, *args: str) -> dict[str, Any]:
    """The usage command's JSON once the gateway's writer has flushed what it recorded."""
    previous = cli_json(path, *args)
    deadline = time.monotonic() + 20
    while True:
        time.sleep(0.5)
        current = cli_json(path, *args)
        if current["total"] == previous["total"] or time.monotonic() > deadline:
            return current
        previous = current


def cli_json(path: Path, *args: str) -> dict[str, Any]:
    config = path.parent / "cli.yaml"
    config.write_text(json.dumps({"ledger": {"database_url": f"sqlite:///{path}"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFY_")}
    command = [sys.executable, "-m", "gateway", "usage", "--config", str(config), "--format", "json", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def open_usage(watched: Watched, url: str) -> Page:
    page = watched.page
    page.goto(f"{url}/console/")
    page.wait_for_selector("html[data-status-rendered]")
    page.click("button[data-tab=usage]")
    page.wait_for_selector("html[data-usage-rendered]")
    return page


def test_the_usage_tab_shows_the_cli_numbers_a_chart_and_budgets(
    browser: Browser, server: GatewayProcess, ledger_path: Path
) -> None:
    tenants = settled_cli_json(ledger_path, "--since", "30d", "--by", "tenant", "--limit", "10")
    models = cli_json(ledger_path, "--since", "30d", "--by", "model", "--limit", "10")
    watched = signed_in(browser, viewport=DESKTOP)
    dialogs: list[str] = []
    watched.page.on("dialog", lambda dialog: _dismiss(dialog, dialogs))
    try:
        page = open_usage(watched, server.url)
        assert page.is_visible("#usage-body") and not page.is_visible("#usage-message")
        shown = page.locator("#usage-tenants tbody tr")
        assert shown.count() == len(tenants["lines"]) == 10
        for i, line in enumerate(tenants["lines"]):
            cells = shown.nth(i).locator("td")
            assert cells.nth(0).text_content() == line["tenant_id"]  # verbatim, as text
            assert cells.nth(1).inner_text() == f"{line['requests']:,}"
            assert cells.nth(2).inner_text() == f"{line['failed']:,}"
            assert cells.nth(3).inner_text() == f"{line['tokens_in'] + line['tokens_out']:,}"
            assert cells.nth(4).get_attribute("title") == line["price_usd"]
        assert shown.nth(0).locator("td").nth(4).inner_text() == "12.50"
        model_rows = page.locator("#usage-models tbody tr")
        assert [model_rows.nth(i).locator("strong").inner_text() for i in range(model_rows.count())] == [
            line["model"] for line in models["lines"]
        ]
        assert [model_rows.nth(i).locator("td.cost").get_attribute("title") for i in range(model_rows.count())] == [
            line["price_usd"] for line in models["lines"]
        ]
        ledger = page.inner_text("#usage-ledger")  # the writer's state: the refused call's row was written
        assert page.get_attribute("#usage-ledger", "data-status") == "ok"
        assert f"sqlite:{ledger_path}" in ledger and "0 dropped" in ledger and "1 written" in ledger
        spend = page.inner_text("#usage-spend")
        assert f"exactly {tenants['total']['price_usd']}" in spend
        # The chart: one bar per day of the window, the spent days with height, and a tokens line
        bars = page.locator("#usage-chart rect.spend")
        assert bars.count() == 31
        heights = [float(bars.nth(i).get_attribute("height") or 0) for i in range(bars.count())]
        assert sum(1 for h in heights if h > 0) >= 10 and max(heights) > 100
        box = page.locator("#usage-chart").bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100
        assert page.locator("#usage-chart polyline.tokens").count() == 1
        # Budgets: the hostile tenant as text, over budget
        budget = page.locator("#usage-budgets tbody tr").first
        assert budget.locator("td").first.text_content() == SCRIPT_TENANT
        assert "monthly budget" in budget.inner_text() and "over budget" in budget.inner_text()
        assert "12.50 USD" in budget.inner_text() and "10.00 USD" in budget.inner_text()
        # Nothing a tenant id held ran or became an element
        assert page.evaluate("window.__pwned === undefined")
        assert page.locator("script").count() == 1 and page.locator("main img").count() == 0
        assert dialogs == []
        page.screenshot(path=ARTIFACTS / "usage.png", full_page=True)
        assert watched.errors == []
    finally:
        watched.context.close()


def _dismiss(dialog: Dialog, seen: list[str]) -> None:
    seen.append(dialog.message)
    dialog.dismiss()


def test_the_usage_tab_explains_an_empty_or_switched_off_ledger(
    browser: Browser, upstream: FakeUpstream, tmp_path: Path
) -> None:
    for ledger, expected in (
        ({"database_url": f"sqlite:///{tmp_path / 'empty.db'}"}, "No usage recorded in the last 30 days yet"),
        ({"enabled": False}, "No usage to show: the usage ledger is off"),
    ):
        with GatewayProcess(gateway_config(ledger, upstream), tmp_path) as running:
            watched = signed_in(browser, viewport=DESKTOP)
            try:
                page = open_usage(watched, running.url)
                assert page.is_visible("#usage-message") and not page.is_visible("#usage-body")
                assert expected in page.inner_text("#usage-message")
                if ledger.get("enabled") is False:
                    assert page.inner_text("#usage-ledger") == "Ledger: off (ledger.enabled: false)."
                assert "No budgeted tenant has called yet." in page.inner_text("#usage-budgets")
                if ledger.get("enabled") is False:
                    page.screenshot(path=ARTIFACTS / "usage-off.png", full_page=True)
                # A 503 from the management API is the one console message the browser may log.
                assert all("503" in e for e in watched.errors), watched.errors
            finally:
                watched.context.close()
