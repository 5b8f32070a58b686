"""The operator console in a real headless Chromium, against ``dify-gateway serve`` in its own
process (embedded models, plus an LLM route to the scripted loopback upstream).

Screenshots and the page's measured size and load time are written to
``test-artifacts/console/`` at the repository root (git-ignored): ``status.png``,
``try-embedding.png``, ``try-llm-stream.png``, ``mobile.png`` and ``metrics.json``.

Chromium comes from the system (``/usr/bin/chromium``, Debian's ``chromium`` package;
``scripts/test`` installs it when it can), driven by the ``playwright`` package's own driver;
no browser is downloaded. Without Chromium these tests fail with the command to run.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

from gateway.config import default_routes
from tests.fakes.upstream import Chat, FakeUpstream, HttpError
from tests.support.client import llm_request, post_stream
from tests.support.server import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = os.environ.get("DIFY_GATEWAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN = "e2e-admin-key-4711"
KEY_NAME = "dify-gateway-console-key"  # the page's sessionStorage entry
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
LOAD_RUNS = 3


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    target = {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-e2e-upstream", "native": True}
    routes = [{"name": "fake-llm", "match": {"type": "llm", "provider": "openai"}, "targets": [target]}]
    config = {
        "routes": [*routes, *default_routes()],
        "console": {"enabled": True, "admin_key": ADMIN},
        "server": {"drain_grace_s": 0},
    }
    with GatewayProcess(config, tmp_path_factory.mktemp("console-e2e")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the console's browser tests need Chromium at {CHROMIUM}: install it with "
            "`apt-get install -y chromium` (scripts/test does this itself when run as root), "
            "or point DIFY_GATEWAY_CHROMIUM at a Chromium binary"
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        yield _launch(playwright)


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


class Watched:
    """A page whose console errors and uncaught exceptions are collected."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.page: Page = context.new_page()
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")


@pytest.fixture
def desktop(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport=DESKTOP)
    try:
        yield Watched(context)
    finally:
        context.close()


def signed_in(browser: Browser, **options: Any) -> Watched:
    """A fresh context whose tab already holds the key (as after signing in once)."""
    context = browser.new_context(**options)
    context.add_init_script(f"sessionStorage.setItem({json.dumps(KEY_NAME)}, {json.dumps(ADMIN)})")
    return Watched(context)


def open_console(watched: Watched, gateway: GatewayProcess) -> Page:
    page = watched.page
    page.goto(f"{gateway.url}/console/")
    page.wait_for_selector("html[data-status-rendered]")
    return page


def test_sign_in_then_the_status_shows_routes_and_their_state(
    desktop: Watched, gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    fake.script("gpt-warm", Chat(deltas=["warm", " up"]))
    assert post_stream(gateway.url, "/inner/api/invoke/llm", llm_request("gpt-warm")).outcome.error is None
    fake.script("gpt-broken", HttpError(400, body={"error": {"message": "this model does not exist"}}))
    assert post_stream(gateway.url, "/inner/api/invoke/llm", llm_request("gpt-broken")).outcome.error is not None
    page = desktop.page
    page.goto(f"{gateway.url}/console/")
    assert page.is_visible("#signin") and not page.is_visible("#app")
    page.fill("#key", ADMIN)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("html[data-status-rendered]")
    assert page.is_visible("#app") and not page.is_visible("#signin")
    assert page.inner_text("#version").startswith("v")
    assert page.inner_text("#health") == "ready"
    llm = page.locator(".route", has_text="fake-llm")
    assert llm.locator(".route-head").inner_text().startswith("fake-llm")
    assert llm.locator(".badge").first.inner_text() == "closed"
    assert "calls" in llm.locator(".numbers").first.inner_text()
    embedding = page.locator(".route", has_text="local-text-embedding")
    assert "local/multilingual-e5-small" in embedding.inner_text()
    errors = page.locator("#errors tbody tr", has_text="this model does not exist")
    assert errors.count() >= 1 and "fake-llm" in errors.first.inner_text()
    assert "llm" in page.locator("#traffic tbody").inner_text()
    page.screenshot(path=ARTIFACTS / "status.png", full_page=True)
    assert desktop.errors == []


def test_try_it_embedding_shows_a_vector(browser: Browser, gateway: GatewayProcess) -> None:
    watched = signed_in(browser, viewport=DESKTOP)
    try:
        page = open_console(watched, gateway)
        page.click("button[data-tab=try]")
        page.select_option("#try-type", "text-embedding")
        page.select_option("#try-route", "local-text-embedding")
        page.fill("#try-text", "How do I bake bread?")
        page.click("#try-run")
        page.wait_for_selector("#try-vector-summary")
        assert page.inner_text("#try-vector-summary") == "1 vector × 384 dimensions"
        assert page.inner_text(".vector-values").startswith("[")
        meta = page.inner_text("#try-meta")
        assert "HTTP 200" in meta and "local/multilingual-e5-small" in meta and "total" in meta
        page.click("#try-raw-box summary")  # the envelope as Dify gets it
        assert '"embeddings"' in page.inner_text("#try-raw")
        page.screenshot(path=ARTIFACTS / "try-embedding.png", full_page=True)
        assert watched.errors == []
    finally:
        watched.context.close()


def test_try_it_llm_streams_text_into_the_page(browser: Browser, gateway: GatewayProcess, fake: FakeUpstream) -> None:
    words = ["The ", "sea ", "is ", "calm ", "and ", "silver ", "under ", "a ", "pale ", "morning ", "sky."]
    fake.script("gpt-stream", Chat(deltas=words, gap_s=0.15, usage=(14, 11)))
    watched = signed_in(browser, viewport=DESKTOP)
    try:
        page = open_console(watched, gateway)
        page.click("button[data-tab=try]")
        page.select_option("#try-type", "llm")
        page.select_option("#try-route", "fake-llm")
        page.fill("#try-model", "gpt-stream")
        page.fill("#try-text", "Describe the sea in one sentence.")
        # Record the streamed text each time the page changes it.
        page.evaluate(
            """() => {
                window.__seen = [];
                new MutationObserver(() => {
                    const text = document.getElementById("try-llm-text");
                    if (text) window.__seen.push([performance.now(), text.textContent]);
                }).observe(document.getElementById("try-output"),
                           {childList: true, subtree: true, characterData: true});
            }"""
        )
        page.click("#try-run")
        page.wait_for_selector("#try-llm-text.streaming")
        page.wait_for_selector("#try-llm-text:not(:empty)")  # (the page's CSP forbids wait_for_function's eval)
        page.wait_for_selector("#try-llm-text:not(.streaming)", timeout=20_000)
        final = "".join(words)
        assert page.inner_text("#try-llm-text") == final
        seen: list[list[Any]] = page.evaluate("window.__seen")
        partial = [(at, text) for at, text in seen if text and text != final]
        assert len({text for _, text in partial}) >= 5, seen
        assert all(final.startswith(text) for _, text in partial)  # always a growing prefix
        first_at = partial[0][0]
        last_at = next(at for at, text in seen if text == final)
        assert last_at - first_at >= 1000, seen  # 10 gaps of 150 ms: the text grew over time
        meta = page.inner_text("#try-meta")
        assert "HTTP 200" in meta and "first frame" in meta and "frames" in meta and "fake-llm" in meta
        assert "14 prompt + 11 completion tokens" in page.inner_text("#try-output")
        page.click("#try-raw-box summary")  # the frames as Dify decodes them, with their arrival times
        raw = page.inner_text("#try-raw").splitlines()
        assert len(raw) == len(words) + 1 and '"finish_reason":"stop"' in raw[-1]
        page.screenshot(path=ARTIFACTS / "try-llm-stream.png", full_page=True)
        assert watched.errors == []
        sent = fake.requests[-1].json
        assert sent["messages"][-1] == {"role": "user", "content": "Describe the sea in one sentence."}
    finally:
        watched.context.close()


def test_unauthenticated_requests_are_refused(browser: Browser, gateway: GatewayProcess) -> None:
    context = browser.new_context(viewport=DESKTOP)
    try:
        watched = Watched(context)
        page = watched.page
        refused = context.request.get(f"{gateway.url}/console/api/status")
        assert refused.status == 401 and "unauthorized" in refused.json()["error"]
        assert context.request.get(f"{gateway.url}/console/api/errors", headers={"X-Admin-Key": "nope"}).status == 401
        page.goto(f"{gateway.url}/console/")
        page.fill("#key", "not-the-admin-key")
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("#signin-error:not(:empty)")
        assert "refused" in page.inner_text("#signin-error")
        assert page.is_visible("#signin") and not page.is_visible("#app")
        assert page.evaluate(f"sessionStorage.getItem({json.dumps(KEY_NAME)})") is None
        assert not page.locator("#routes .route").count()  # nothing was shown
        # The only console messages allowed: the browser's notes on the refused (401) requests.
        assert all("401" in e for e in watched.errors), watched.errors
    finally:
        context.close()


def test_phone_width_has_no_sideways_scrolling(browser: Browser, gateway: GatewayProcess) -> None:
    watched = signed_in(browser, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        page = open_console(watched, gateway)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than the screen"
        assert page.locator(".route").count() >= 8
        page.screenshot(path=ARTIFACTS / "mobile.png", full_page=True)
        page.click("button[data-tab=try]")
        assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
        assert watched.errors == []
    finally:
        watched.context.close()


def test_page_size_and_load_time(browser: Browser, gateway: GatewayProcess) -> None:
    """Measured on a fresh (cold-cache) context each run; written to metrics.json."""
    sizes = {}
    for name, path in [
        ("html", "/console/"),
        ("css", "/console/static/console.css"),
        ("js", "/console/static/console.js"),
    ]:
        sizes[name] = len(httpx.get(f"{gateway.url}{path}", timeout=5).content)
    icon = len(httpx.get(f"{gateway.url}/console/static/favicon.svg", timeout=5).content)
    runs = []
    for _ in range(LOAD_RUNS):
        watched = signed_in(browser, viewport=DESKTOP)
        try:
            started = time.perf_counter()
            open_console(watched, gateway)
            wall_ms = (time.perf_counter() - started) * 1000
            timing = watched.page.evaluate(
                """() => {
                    const nav = performance.getEntriesByType("navigation")[0];
                    const mark = performance.getEntriesByName("console-status-rendered")[0];
                    const assets = performance.getEntriesByType("resource")
                        .filter((r) => r.name.includes("/console/static/"))
                        .map((r) => [r.name.split("/").pop(), r.encodedBodySize]);
                    return {dom_content_loaded_ms: nav.domContentLoadedEventEnd,
                            load_event_ms: nav.loadEventEnd,
                            first_status_render_ms: mark.startTime,
                            html_transfer_bytes: nav.encodedBodySize,
                            assets: Object.fromEntries(assets)};
                }"""
            )
            timing["wall_ms"] = wall_ms
            runs.append(timing)
            assert watched.errors == []
        finally:
            watched.context.close()
    assert runs[0]["assets"].get("console.js") == sizes["js"]  # what the browser fetched
    median = {
        key: round(statistics.median(run[key] for run in runs), 1)
        for key in ("dom_content_loaded_ms", "load_event_ms", "first_status_render_ms", "wall_ms")
    }
    total = sum(sizes.values())
    gzipped = sum(
        len(gzip.compress(httpx.get(f"{gateway.url}{p}", timeout=5).content))
        for p in ("/console/", "/console/static/console.css", "/console/static/console.js")
    )
    metrics = {
        "page_bytes": {**sizes, "total": total, "total_gzip": gzipped, "favicon_svg": icon},
        "load_ms_median": median,
        "runs": runs,
        "chromium": browser.version,
        "viewport": DESKTOP,
        "note": "cold cache per run; dify-gateway serve on loopback; times from navigation start",
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    assert total < 64 * 1024, f"the console page grew to {total} bytes"
    assert median["first_status_render_ms"] < 3000, median


def test_the_status_shows_the_last_reload_and_why_one_failed(
    browser: Browser, upstream: FakeUpstream, tmp_path: Path
) -> None:
    target = {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-e2e-upstream"}
    config: dict[str, Any] = {
        "routes": [{"name": "fake-llm", "match": {"type": "llm"}, "targets": [target]}],
        "console": {"enabled": True, "admin_key": ADMIN},
        "server": {"drain_grace_s": 0},
    }
    with GatewayProcess(config, tmp_path) as server:
        assert server.process is not None
        watched = signed_in(browser, viewport=DESKTOP)
        try:
            page = open_console(watched, server)
            card = page.locator(".stat", has_text="Configuration")
            assert "not reloaded since start" in card.inner_text()
            (tmp_path / "gateway.yaml").write_text("routes: [{match: {type: llm}, targets: [{model: x, typo: 1}]}]\n")
            server.process.send_signal(signal.SIGHUP)
            page.wait_for_selector(".stat[data-reload=invalid]", timeout=30_000)
            text = card.inner_text()
            assert "reload failed" in text and "typo" in text and "SIGHUP" in text
            renamed = {**config, "routes": [{**config["routes"][0], "name": "renamed-llm"}]}
            (tmp_path / "gateway.yaml").write_text(json.dumps({**renamed, "server": {"drain_grace_s": 0, "port": 1}}))
            server.process.send_signal(signal.SIGHUP)
            page.wait_for_selector(".stat[data-reload=applied]", timeout=30_000)
            text = card.inner_text()
            assert "reload applied" in text and "needs a restart: server.port" in text
            page.wait_for_selector(".route:has-text('renamed-llm')")
            page.screenshot(path=ARTIFACTS / "reload.png", full_page=True)
            assert watched.errors == []
        finally:
            watched.context.close()
