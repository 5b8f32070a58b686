"""Forwarded paths cannot leave ``/inner/api/``: the gateway (with ``dify.api_url`` set) in
front of a recording fake Dify, attacked with raw request targets no client library would
normalise first (sent over a plain socket with ``http.client``)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fakes.dify import FakeDify, Json, dify_fixtures
from tests.support.server import TEST_KEY, GatewayServer, gateway_config

UNARY = Json({"data": {"ok": True}, "error": ""})

# Each climbs out of /inner/api/ for some reader of the path (Dify, a proxy, a framework).
ESCAPES = [
    "/inner/api/../../admin/secret",
    "/inner/api/invoke/../../../console/api/setup",
    "/inner/api/%2e%2e/%2e%2e/admin/secret",
    "/inner/api/%2E%2E/%2E%2E/admin/secret",
    "/inner/api/.%2e/.%2e/admin/secret",
    "/inner/api/..%2f..%2fadmin%2fsecret",
    "/inner/api/..%2F..%2Fadmin",
    "/inner/api/%252e%252e/%252e%252e/admin",  # double encoding
    "/inner/api/..%5c..%5cadmin",  # encoded backslashes
    "/inner/api/..\\..\\admin",
    "/inner/api/a%2Fb%2Fc/../..%2F..%2F..%2Fadmin",  # ".." removing an encoded-slash segment
    "/inner/api//..//..//admin",
    "/inner/api/..;x/..;x/admin",
    "/inner/api/%c0%ae%c0%ae/%c0%ae%c0%ae/admin",  # overlong UTF-8 dots
    "/inner/api/%EF%BC%8E%EF%BC%8E/%EF%BC%8E%EF%BC%8E/admin",  # full-width dots
    "/inner/api/x%00/../../admin",
    "/dify/inner/api/../../admin",  # with a prefix in the gateway URL
    "/inner/api/..",
]


dify_server, dify = dify_fixtures()


@pytest.fixture(scope="module")
def gateway(dify_server: FakeDify) -> Iterator[GatewayServer]:
    config = gateway_config([], dify={"inner_api_key": TEST_KEY, "api_url": dify_server.url, "api_key": "dify-key"})
    with GatewayServer(config) as server:
        yield server


def raw_request(base: str, target: str, method: str = "POST", body: bytes = b"{}") -> tuple[int, bytes]:
    """``target`` sent exactly as written (http.client does not normalise paths)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.putheader("X-Inner-Api-Key", TEST_KEY)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def envelope(body: bytes) -> dict[str, Any]:
    value = json.loads(body)
    assert isinstance(value, dict) and set(value) == {"data", "error"}
    return value


@pytest.mark.parametrize("target", ESCAPES)
def test_a_path_leaving_the_inner_api_is_refused_and_never_forwarded(
    gateway: GatewayServer, dify: FakeDify, target: str
) -> None:
    status, body = raw_request(gateway.url, target)
    assert status == 400, body
    reply = envelope(body)
    assert reply["data"] is None and "leaves /inner/api/" in reply["error"]
    assert dify.requests == []


def test_a_traversal_is_refused_for_every_method_and_with_a_query(gateway: GatewayServer, dify: FakeDify) -> None:
    for method in ("GET", "DELETE", "PUT"):
        status, body = raw_request(gateway.url, "/inner/api/../../admin?x=1", method=method, body=b"")
        assert status == 400 and "leaves /inner/api/" in envelope(body)["error"]
    assert dify.requests == []


def test_the_inner_key_is_checked_before_the_path(gateway: GatewayServer, dify: FakeDify) -> None:
    parts = urlsplit(gateway.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    connection.putrequest("GET", "/inner/api/../../admin")
    connection.endheaders()
    assert connection.getresponse().status == 401
    connection.close()
    assert dify.requests == []


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/inner/api/invoke/./encrypt", "/inner/api/invoke/encrypt"),
        ("/inner/api/invoke/x/../encrypt", "/inner/api/invoke/encrypt"),
        ("/inner/api/invoke/%2e/encrypt", "/inner/api/invoke/encrypt"),
        ("/inner/api//invoke//encrypt", "/inner/api/invoke/encrypt"),
        ("/inner/api/invoke/encrypt?a=%2e%2e", "/inner/api/invoke/encrypt?a=%2e%2e"),  # the query is not a path
    ],
)
def test_a_path_that_stays_inside_is_forwarded_normalised(
    gateway: GatewayServer, dify: FakeDify, target: str, forwarded: str
) -> None:
    dify.script("/inner/api/invoke/encrypt", UNARY)
    status, body = raw_request(gateway.url, target)
    assert status == 200 and json.loads(body) == UNARY.payload
    [received] = dify.requests
    assert received.raw_path == forwarded
    assert received.headers["x-inner-api-key"] == "dify-key"
