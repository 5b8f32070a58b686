"""Every inner-API request observed once: reply headers, outcome, in-flight count, log line."""

from __future__ import annotations

import logging

import httpx
import pytest

from gateway.app import Gateway, create_app
from gateway.config import parse_config
from gateway.logs import REQUEST_LOGGER
from gateway.observe import outcome_of
from gateway.trace import Trace

KEY = "observe-key"


def _app() -> Gateway:
    return create_app(parse_config({"dify": {"inner_api_key": KEY}, "routes": []}, "<test>", env={}))


async def _post(app: Gateway, path: str, body: bytes, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        return await client.post(path, content=body, headers={"x-inner-api-key": KEY, **headers})


@pytest.mark.asyncio
async def test_a_request_is_stamped_logged_and_released(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    body = b'{"tenant_id":"t","user_id":"u","provider":"openai","model":"m","texts":["a"],"input_type":"query"}'
    reply = await _post(app, "/prefix/inner/api/invoke/text-embedding", body, **{"x-request-id": "req-42"})
    assert reply.status_code == 404  # no route: the daemon gets a clear envelope
    assert "no route" in reply.json()["error"]
    assert reply.headers["x-request-id"] == "req-42"
    assert float(reply.headers["x-dify-gateway-overhead-ms"]) >= 0
    assert "x-dify-gateway-attempts" not in reply.headers  # no upstream was tried
    assert app.in_flight == 0
    (line,) = [r for r in caplog.records if r.name == REQUEST_LOGGER]
    fields = line.__dict__
    assert fields["request_id"] == "req-42"
    assert fields["type"] == "text-embedding"
    assert fields["outcome"] == "no_route"
    assert fields["status"] == 404
    assert fields["request_bytes"] == len(body)
    assert fields["response_bytes"] == len(reply.content)


@pytest.mark.asyncio
async def test_an_unknown_inner_path_without_dify_is_counted_as_other(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    reply = await _post(app, "/inner/api/fetch/app/info", b"{}")
    assert reply.status_code == 404 and "set dify.api_url to forward it" in reply.json()["error"]
    (line,) = [r for r in caplog.records if r.name == REQUEST_LOGGER]
    assert line.__dict__["type"] == "other"
    assert line.__dict__["outcome"] == "client_error"
    assert len(reply.headers["x-request-id"]) == 16  # made up when the caller sent none


def test_outcomes_from_status() -> None:
    trace = Trace(request_id="r", model_type="llm")
    assert outcome_of(200, trace) == "ok"
    assert outcome_of(499, trace) == "cancelled"
    assert outcome_of(404, trace) == "client_error"
    assert outcome_of(502, trace) == "error"
    trace.attempts = 1
    assert outcome_of(502, trace) == "upstream_error"
    assert outcome_of(429, trace) == "upstream_error"
    trace.stream_error = True
    assert outcome_of(200, trace) == "upstream_error"
