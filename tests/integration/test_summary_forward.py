"""Summaries without a summary model go to Dify unchanged when ``dify.api_url`` is set."""

from __future__ import annotations

import json

from tests.fakes.dify import FakeDify, Json, dify_fixtures
from tests.support.client import post_unary
from tests.support.server import TEST_KEY, GatewayServer, gateway_config

SUMMARY = "/inner/api/invoke/summary"

dify_server, dify = dify_fixtures()

BODY = {"tenant_id": "t", "user_id": "u", "type": "system_summary", "text": "long text " * 200, "instruction": "brief"}


def test_summary_is_forwarded_unchanged(dify: FakeDify) -> None:
    dify.script(SUMMARY, Json({"data": {"summary": "summarised by dify"}, "error": ""}))
    with GatewayServer(gateway_config([], dify={"inner_api_key": TEST_KEY, "api_url": dify.url + "/"})) as gateway:
        reply = post_unary(gateway.url, "summary", BODY)
    assert reply.ok() == {"summary": "summarised by dify"}
    [received] = dify.requests
    assert (received.method, received.path) == ("POST", SUMMARY)
    assert received.headers["x-inner-api-key"] == TEST_KEY and json.loads(received.body) == BODY


def test_dify_down_is_a_clear_envelope_error() -> None:
    config = gateway_config([], dify={"inner_api_key": TEST_KEY, "api_url": "http://127.0.0.1:9"})
    with GatewayServer(config) as gateway:
        reply = post_unary(gateway.url, "summary", BODY)
    # The daemon reads only the envelope of unary replies; the status is for other clients.
    assert reply.status == 502 and reply.data is None
    assert reply.error is not None and "cannot reach Dify" in reply.error
