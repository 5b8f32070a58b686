"""/healthz, /readyz, /metrics and /status/targets, through the app's ASGI entry."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.app import Gateway, create_app
from gateway.config import parse_config

KEY = "probe-key"


def _app(**server: Any) -> Gateway:
    config = {"dify": {"inner_api_key": KEY}, "routes": [], "server": server}
    return create_app(parse_config(config, "<test>", env={}))


async def _get(app: Gateway, path: str, method: str = "GET", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        return await client.request(method, path, headers=headers)


@pytest.mark.asyncio
async def test_readiness_follows_start_up_drain_and_the_in_flight_cap() -> None:
    app = _app(max_in_flight=1)
    starting = await _get(app, "/readyz")
    assert (starting.status_code, starting.json()) == (503, {"status": "starting"})
    app.ready = True
    ready = await _get(app, "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    app.admission.admit({"type": "http"})
    full = await _get(app, "/readyz")
    assert full.status_code == 503
    assert full.json() == {"status": "overloaded", "in_flight": 1, "max_in_flight": 1}
    app.services.drain.draining = True
    draining = await _get(app, "/readyz")
    assert (draining.status_code, draining.json()) == (503, {"status": "draining"})


@pytest.mark.asyncio
async def test_healthz_and_metrics_serve_get_and_head_only() -> None:
    app = _app()
    assert (await _get(app, "/healthz")).status_code == 200
    assert (await _get(app, "/metrics", "HEAD")).status_code == 200
    metrics = await _get(app, "/metrics")
    assert "dify_gateway_in_flight 0.0" in metrics.text
    refused = await _get(app, "/metrics", "POST")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    assert "only GET and HEAD" in refused.json()["error"]


@pytest.mark.asyncio
async def test_status_targets_needs_the_inner_key() -> None:
    app = _app()
    missing = await _get(app, "/status/targets")
    assert missing.status_code == 401
    wrong = await _get(app, "/status/targets", **{"x-inner-api-key": "nope"})
    assert wrong.status_code == 401
    ok = await _get(app, "/status/targets", **{"x-inner-api-key": KEY})
    assert ok.status_code == 200
    assert ok.json() == {"in_flight": 0, "draining": False, "shared_breakers": False, "targets": []}
