"""gateway.http_client: the one mapping of outbound HTTP failures to gateway errors, and proxies."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.http_client import (
    MAX_DETAIL,
    EnvProxies,
    connect_timed_out,
    error_detail,
    request_timeout,
    status_error,
    transport_error,
    transport_reason,
    upstream_errors,
)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"error": {"message": "model not found", "type": "invalid"}}', "model not found"),
        (b'{"error": "quota exceeded"}', "quota exceeded"),
        (b'{"message": "bad input"}', "bad input"),
        (b'{"detail": "no such route"}', "no such route"),
        (b'{"error": {"code": 3}, "message": "fallback"}', "fallback"),
        (b"<html>\n  <body>Bad   Gateway</body>\n</html>", "<html> <body>Bad Gateway</body> </html>"),
        (b"\xff\xfe broken", "\ufffd\ufffd broken"),
        (b"[1, 2]", "[1, 2]"),
    ],
)
def test_error_detail_prefers_the_error_message(body: bytes, detail: str) -> None:
    assert error_detail(body) == detail


def test_error_detail_is_cut_to_a_short_line() -> None:
    detail = error_detail(b'{"error": {"message": "' + b"x" * 5000 + b'"}}')
    assert detail == "x" * MAX_DETAIL + "..."


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, UpstreamBadRequest),
        (401, UpstreamAuthError),
        (403, UpstreamAuthError),
        (404, UpstreamBadRequest),
        (408, UpstreamTimeout),
        (429, UpstreamRateLimited),
        (500, UpstreamUnavailable),
        (503, UpstreamUnavailable),
        (504, UpstreamTimeout),
    ],
)
def test_status_error_class_follows_the_status(status: int, cls: type[UpstreamError]) -> None:
    error = status_error(status, b'{"error": "nope"}', {}, "route r, target t", None)
    assert type(error) is cls
    assert error.upstream_status == status
    assert str(error) == f"upstream error HTTP {status} (route r, target t): nope"


def test_status_error_masks_the_secret_and_keeps_retry_after() -> None:
    body = b'{"error": {"message": "Incorrect API key provided: sk-live-123"}}'
    error = status_error(429, body, {"Retry-After": "7"}, "here", "sk-live-123")
    assert "sk-live-123" not in str(error)
    assert "Incorrect API key provided: ***" in str(error)
    assert error.retry_after_s == 7.0


def test_transport_reason_masks_secrets_and_cuts_connection_reprs() -> None:
    exc = aiohttp.ClientConnectionError(
        "Cannot connect to host up:443 ssl:default [token=hunter2] Connection<ConnectionKey(host='up', "
        "proxy_auth=BasicAuth(login='u', password='p4ss'))>"
    )
    reason = transport_reason(exc, secrets=("hunter2", None, ""))
    assert reason == "ClientConnectionError: Cannot connect to host up:443 ssl:default [token=***]"
    assert "p4ss" not in reason


def test_transport_reason_is_one_short_line() -> None:
    reason = transport_reason(ConnectionResetError("reset\n\n by   peer " + "y" * 1000))
    assert "\n" not in reason
    assert reason.startswith("ConnectionResetError: reset by peer y")
    assert len(reason) == MAX_DETAIL + len("...")


def test_transport_error_names_the_timeout_when_given() -> None:
    timed_out = transport_error(TimeoutError(), "route r", timeout_s=2.5)
    assert isinstance(timed_out, UpstreamTimeout)
    assert str(timed_out) == "upstream timed out after 2.5 s (route r)"
    assert str(transport_error(TimeoutError(), "route r")) == "upstream timed out (route r)"


def test_transport_error_for_a_failed_exchange_is_unavailable() -> None:
    error = transport_error(aiohttp.ServerDisconnectedError(), "route r")
    assert isinstance(error, UpstreamUnavailable)
    assert str(error).startswith("upstream unreachable or failed (route r): ServerDisconnectedError")


def test_upstream_errors_maps_transport_failures_only() -> None:
    with pytest.raises(UpstreamUnavailable) as caught, upstream_errors("route r", secrets=("k3y",)):
        raise ConnectionRefusedError("refused with k3y")
    assert "k3y" not in str(caught.value)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)

    with pytest.raises(UpstreamTimeout, match=r"after 1 s"), upstream_errors("route r", timeout_s=1.0):
        raise aiohttp.ServerTimeoutError("read timed out")

    already = UpstreamRateLimited("upstream error HTTP 429 (route r): slow down", 429)
    with pytest.raises(UpstreamRateLimited) as passed, upstream_errors("route r"):
        raise already
    assert passed.value is already  # gateway errors pass through unchanged

    with pytest.raises(ValueError), upstream_errors("route r"):
        raise ValueError("a bug is not an upstream failure")


def test_connect_timeout_is_told_from_a_read_timeout() -> None:
    assert connect_timed_out(aiohttp.ConnectionTimeoutError())
    assert not connect_timed_out(aiohttp.SocketTimeoutError())
    assert not connect_timed_out(TimeoutError())


def test_request_timeout_bounds_the_whole_exchange_and_the_connect() -> None:
    timeout = request_timeout(30.0, connect_s=2.0)
    assert (timeout.total, timeout.sock_connect) == (30.0, 2.0)
    assert request_timeout(5.0, connect_s=None).sock_connect is None


def test_env_proxies_follow_the_environment_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "internal.example,127.0.0.1")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    proxies = EnvProxies()
    assert proxies("https://api.example/v1/chat") == "http://proxy.example:3128"
    assert proxies("http://api.example/v1/chat") is None  # no proxy for plain http
    assert proxies("https://internal.example/v1") is None  # NO_PROXY
    assert proxies("https://127.0.0.1:8080/v1") is None
    monkeypatch.setenv("https_proxy", "http://other.example:1")
    assert proxies("https://api.example/v1/chat") == "http://proxy.example:3128"  # read once


def test_env_proxies_all_proxy_covers_every_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("all_proxy", "socks5://s.example:1080")
    proxies = EnvProxies()
    assert proxies("http://a.example/") == "socks5://s.example:1080"
    assert proxies("https://a.example/") == "socks5://s.example:1080"
