"""Summaries without a summary model go to Dify unchanged when ``dify.api_url`` is set."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.client import post_unary
from tests.support.server import TEST_KEY, GatewayServer, gateway_config


class FakeDify(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _DifyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _DifyHandler(BaseHTTPRequestHandler):
    server: FakeDify

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        reply = json.dumps({"data": {"summary": "summarised by dify"}, "error": ""}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def dify() -> Iterator[FakeDify]:
    server = FakeDify()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


BODY = {"tenant_id": "t", "user_id": "u", "type": "system_summary", "text": "long text " * 200, "instruction": "brief"}


def test_summary_is_forwarded_unchanged(dify: FakeDify) -> None:
    with GatewayServer(gateway_config([], dify={"inner_api_key": TEST_KEY, "api_url": dify.url + "/"})) as gateway:
        reply = post_unary(gateway.url, "summary", BODY)
    assert reply.ok() == {"summary": "summarised by dify"}
    path, headers, body = dify.received[0]
    assert path == "/inner/api/invoke/summary"
    assert headers["x-inner-api-key"] == TEST_KEY and json.loads(body) == BODY


def test_dify_down_is_a_clear_envelope_error() -> None:
    config = gateway_config([], dify={"inner_api_key": TEST_KEY, "api_url": "http://127.0.0.1:9"})
    with GatewayServer(config) as gateway:
        reply = post_unary(gateway.url, "summary", BODY)
    assert reply.status == 200 and reply.data is None
    assert reply.error is not None and "cannot reach Dify" in reply.error
