"""The direct HTTP client's proxies: HTTP(S)_PROXY and NO_PROXY read once, honoured per URL.

A loopback server plays the proxy: a request sent through it arrives in absolute form
(``POST http://host/path``), which is how the test tells it was proxied.
"""

from __future__ import annotations

import pytest
from aiohttp import web

from gateway.errors import UpstreamUnavailable
from gateway.http_client import EnvProxies, HttpClient
from tests.fakes.loopback import LoopbackServer


class RecordingProxy(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.url}")
        return web.json_response({"via": "proxy"})


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_proxies_follow_scheme_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, HTTP_PROXY="http://proxy.example:3128", NO_PROXY="internal.example,.corp.example")
    proxies = EnvProxies()
    assert proxies("http://api.example/v1/chat/completions") == "http://proxy.example:3128"
    assert proxies("http://internal.example:8000/v1/embeddings") is None
    assert proxies("http://vllm.corp.example/v1/chat/completions") is None
    assert proxies("https://api.example/v1/chat/completions") is None  # no HTTPS_PROXY set


def test_proxies_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, HTTPS_PROXY="http://proxy.example:3128")
    proxies = EnvProxies()
    monkeypatch.setenv("NO_PROXY", "*")
    assert proxies("https://api.example/v1") == "http://proxy.example:3128"
    assert EnvProxies()("https://api.example/v1") is None  # a new client reads the new value


@pytest.mark.asyncio
async def test_requests_go_through_the_proxy_unless_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async with RecordingProxy() as proxy:
        _env(monkeypatch, HTTP_PROXY=f"http://127.0.0.1:{proxy.port}", NO_PROXY="direct.invalid")
        client = HttpClient(connect_timeout_s=2)
        try:
            reply = await client.post_json(
                "http://upstream.invalid/v1/embeddings", {"input": "x"}, timeout_s=5, where="test"
            )
            assert reply.data == {"via": "proxy"}
            assert proxy.seen == ["POST http://upstream.invalid/v1/embeddings"]
            # NO_PROXY: straight to a host that does not resolve, so the call fails.
            with pytest.raises(UpstreamUnavailable):
                await client.post_json("http://direct.invalid/v1/embeddings", {}, timeout_s=5, where="test")
            assert len(proxy.seen) == 1
        finally:
            await client.aclose()
