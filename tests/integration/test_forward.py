"""Forwarding inner-API calls to Dify byte for byte, against a recording loopback fake Dify.

The forwarder runs behind a minimal app of its own (one catch-all route calling
``DifyForwarder.forward``) served by uvicorn on a real port, so streaming, timeouts and
disconnects go over real sockets. Replies through the forwarder are compared with the same
request sent straight to the fake.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.forward import DifyForwarder, _FrameTracker
from gateway.http_client import HttpClient
from gateway.protocol.envelope import data_frame, error_frame
from gateway.protocol.framing import FrameDecodeError, FrameDecoder, decode_frames
from tests.fakes.dify import NOT_FOUND_BODY, Behaviour, FakeDify, Frames, Json, Raw, Reset, dify_fixtures, frames
from tests.support.server import AppServer

DAEMON_KEY = "daemon-side-key"
DIFY_KEY = "dify-side-key"
TOOL = "/inner/api/invoke/tool"
ENCRYPT = "/inner/api/invoke/encrypt"
PRE_READ = "/pre-read"  # paths under it: the app reads the body first and passes it in
# A body as the daemon's Go encoder writes it (note the escapes: nothing may re-encode it).
BODY = b'{"tenant_id":"t1","user_id":"u1","type":"tool","tool_parameters":{"q":"\\u003cb\\u003e \xc3\xa9"}}'
# Reply headers that differ by hop or by server, whatever the forwarder does.
HOP_HEADERS = {"date", "server", "content-length", "transfer-encoding", "connection", "keep-alive"}


class ForwardServer(AppServer):
    """``DifyForwarder`` behind a catch-all starlette route, served by uvicorn in a thread."""

    def __init__(self, api_url: str, **options: Any) -> None:
        self.http = HttpClient()
        self.forwarder = DifyForwarder(api_url, self.http, **options)

        async def endpoint(request: Request) -> Response:
            if request.url.path.startswith(PRE_READ + "/"):
                return await self.forwarder.forward(request, await request.body())
            return await self.forwarder.forward(request)

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await self.http.aclose()

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        app = Starlette(routes=[Route("/{rest:path}", endpoint, methods=methods)], lifespan=lifespan)
        super().__init__(app)


dify_server, dify = dify_fixtures()


@pytest.fixture(scope="module")
def proxy(dify_server: FakeDify) -> Iterator[ForwardServer]:
    """Forwards with the daemon's key as received."""
    with ForwardServer(dify_server.url) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_proxy(dify_server: FakeDify) -> Iterator[ForwardServer]:
    """Forwards with Dify's own key in place of the daemon's."""
    with ForwardServer(dify_server.url + "/", api_key=DIFY_KEY) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def daemon_headers(**extra: str) -> dict[str, str]:
    """What the daemon's Go client sends, plus hop-by-hop headers a proxy must not pass on."""
    return {
        "User-Agent": "Go-http-client/1.1",
        "Content-Type": "application/json",
        "Accept-Encoding": "gzip",
        "X-Inner-Api-Key": DAEMON_KEY,
        "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Tracestate": "dd=s:1",
        "X-Request-Tag": "abc",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "named by Connection: hop-by-hop",
        **extra,
    }


def send(
    base: str,
    path: str = TOOL,
    body: bytes | None = BODY,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> httpx.Response:
    return httpx.request(
        method, base + path, content=body, headers=daemon_headers() if headers is None else headers, timeout=timeout
    )


def reply_headers(response: httpx.Response) -> list[tuple[str, str]]:
    """The reply's headers that must survive forwarding, in order."""
    return [(k.lower(), v) for k, v in response.headers.multi_items() if k.lower() not in HOP_HEADERS]


def assert_same_reply(direct: httpx.Response, forwarded: httpx.Response) -> None:
    assert forwarded.status_code == direct.status_code
    assert reply_headers(forwarded) == reply_headers(direct)
    assert forwarded.content == direct.content
    assert "aiohttp" not in forwarded.headers.get("server", "")  # uvicorn's own, Dify's dropped


def envelope(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    reply: dict[str, Any] = response.json()
    assert set(reply) == {"data", "error"} and reply["data"] is None
    return reply


# --- every path the daemon forwards -----------------------------------------------------------

REPLY_HEADERS = [
    ("X-Dify-Trace", "trace-1"),
    ("Cache-Control", "no-store"),
    ("Content-Disposition", 'attachment; filename="a.json"'),
    ("Set-Cookie", "a=1; Path=/"),
    ("Set-Cookie", "b=2; Path=/"),
]
STREAM = Frames(frames({"n": 1}, {"n": 2}, {"n": 3}), headers=REPLY_HEADERS)
UNARY = Json({"data": {"ok": True, "text": "<é>"}, "error": ""}, headers=REPLY_HEADERS)

PATHS: list[tuple[str, Behaviour]] = [
    ("/inner/api/invoke/tool", STREAM),
    ("/inner/api/invoke/app", STREAM),
    ("/inner/api/invoke/parameter-extractor", UNARY),
    ("/inner/api/invoke/question-classifier", UNARY),
    ("/inner/api/invoke/encrypt", UNARY),
    ("/inner/api/upload/file/request", UNARY),
    ("/inner/api/fetch/app/info", UNARY),
    ("/inner/api/some/future/path", UNARY),
]


@pytest.mark.parametrize(("path", "behaviour"), PATHS, ids=[p for p, _ in PATHS])
def test_inner_paths_are_forwarded_byte_for_byte(
    dify: FakeDify, proxy: ForwardServer, path: str, behaviour: Behaviour
) -> None:
    dify.script(path, behaviour)
    direct = send(dify.url, path)
    sent = dify.last()
    forwarded = send(proxy.url, path)
    received = dify.last()

    assert_same_reply(direct, forwarded)
    assert forwarded.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert (received.method, received.raw_path, received.body) == ("POST", path, BODY)
    assert not received.chunked and received.headers["content-length"] == str(len(BODY))
    # Everything the daemon sent arrives, less the hop-by-hop headers; nothing is added.
    dropped = {"host", "keep-alive", "proxy-authorization", "connection", "x-hop"}
    expected = {k: v for k, v in sent.headers.items() if k not in dropped}
    assert {k: v for k, v in received.headers.items() if k not in dropped} == expected
    assert received.headers["host"] == f"127.0.0.1:{dify.port}"
    assert dropped - {"host"} & set(received.headers) == set()
    assert received.headers["x-inner-api-key"] == DAEMON_KEY
    assert received.headers["traceparent"] == daemon_headers()["Traceparent"]


def test_other_methods_query_strings_and_encoded_paths_are_kept(dify: FakeDify, proxy: ForwardServer) -> None:
    target = "/inner/api/fetch/app/info%2Fx?app_id=a%2Fb&q=%20+&q=2"
    dify.script("/inner/api/fetch/app/info/x", UNARY)
    reply = send(proxy.url, target, body=None, method="GET")
    received = dify.last()
    assert reply.status_code == 200 and reply.json() == UNARY.payload
    assert (received.method, received.raw_path, received.body) == ("GET", target, b"")
    assert "content-length" not in received.headers and not received.chunked

    reply = send(proxy.url, "/inner/api/some/resource?x=1", body=b"", method="DELETE")
    received = dify.last()
    assert reply.status_code == 404 and reply.json() == NOT_FOUND_BODY
    assert (received.method, received.raw_path, received.body) == ("DELETE", "/inner/api/some/resource?x=1", b"")


def test_a_prefix_in_the_gateway_url_is_dropped_one_in_the_dify_url_kept(dify: FakeDify, proxy: ForwardServer) -> None:
    dify.script(ENCRYPT, UNARY)
    assert send(proxy.url, "/dify" + ENCRYPT).json() == UNARY.payload
    assert dify.last().raw_path == ENCRYPT

    dify.script("/console/inner/api/invoke/encrypt", UNARY)
    with ForwardServer(dify.url + "/console/") as prefixed:
        assert send(prefixed.url, "/dify" + ENCRYPT + "?a=1").json() == UNARY.payload
    assert dify.last().raw_path == "/console" + ENCRYPT + "?a=1"


def test_the_inner_api_key_is_replaced_when_configured_else_forwarded(
    dify: FakeDify, proxy: ForwardServer, keyed_proxy: ForwardServer
) -> None:
    dify.script(ENCRYPT, UNARY)
    send(proxy.url, ENCRYPT)
    assert dify.last().headers["x-inner-api-key"] == DAEMON_KEY
    send(keyed_proxy.url, ENCRYPT)
    keys = [v for k, v in dify.last().header_list if k.lower() == "x-inner-api-key"]
    assert keys == [DIFY_KEY]


def test_request_bodies_stream_through_chunked_or_sized_or_pre_read(dify: FakeDify, proxy: ForwardServer) -> None:
    dify.script(ENCRYPT, UNARY)
    big = bytes(range(256)) * 12_000  # 3 MB with every byte value

    def pieces() -> Iterator[bytes]:
        for at in range(0, len(big), 100_000):
            yield big[at : at + 100_000]

    headers = daemon_headers()
    assert httpx.post(proxy.url + ENCRYPT, content=pieces(), headers=headers, timeout=10).status_code == 200
    received = dify.last()
    assert received.chunked and received.body == big and "content-length" not in received.headers

    assert send(proxy.url, ENCRYPT, body=big).status_code == 200
    received = dify.last()
    assert not received.chunked and received.body == big and received.headers["content-length"] == str(len(big))

    assert send(proxy.url, PRE_READ + ENCRYPT, body=BODY).status_code == 200
    received = dify.last()
    assert (received.raw_path, received.body, received.headers["content-length"]) == (ENCRYPT, BODY, str(len(BODY)))


# --- streams ----------------------------------------------------------------------------------


@dataclass
class TimedStream:
    first_byte_s: float
    frame_arrivals_s: list[float]
    body: bytes


def timed_stream(url: str) -> TimedStream:
    """POST and read the reply as it arrives, noting when each complete frame came in."""
    decoder = FrameDecoder()
    arrivals: list[float] = []
    first_byte = -1.0
    body = bytearray()
    with httpx.Client(timeout=10) as client:
        started = time.perf_counter()
        with client.stream("POST", url, content=BODY, headers=daemon_headers()) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                now = time.perf_counter() - started
                if first_byte < 0:
                    first_byte = now
                body += chunk
                arrivals.extend(now for _ in decoder.feed(chunk))
    decoder.close()
    return TimedStream(first_byte, arrivals, bytes(body))


def test_a_framed_stream_arrives_frame_by_frame(dify: FakeDify, proxy: ForwardServer) -> None:
    chunks = frames(*({"index": i, "text": "x" * 40} for i in range(5)))
    dify.script(TOOL, Frames(chunks, gap_s=0.2))
    direct = timed_stream(dify.url + TOOL)
    forwarded = timed_stream(proxy.url + TOOL)
    print(
        "\nfirst byte / first frame / last frame (s): "
        f"direct {direct.first_byte_s:.4f} / {direct.frame_arrivals_s[0]:.4f} / {direct.frame_arrivals_s[-1]:.4f}, "
        f"through the forwarder {forwarded.first_byte_s:.4f} / {forwarded.frame_arrivals_s[0]:.4f} / "
        f"{forwarded.frame_arrivals_s[-1]:.4f}"
    )
    assert forwarded.body == direct.body == b"".join(chunks)
    assert forwarded.frame_arrivals_s[0] < 0.15
    assert forwarded.frame_arrivals_s[-1] > 0.7  # the stream itself takes 0.8 s
    gaps = [b - a for a, b in zip(forwarded.frame_arrivals_s, forwarded.frame_arrivals_s[1:], strict=False)]
    assert min(gaps) > 0.1, gaps  # one by one, not in a burst


def test_a_client_disconnect_mid_stream_releases_dify(dify: FakeDify, proxy: ForwardServer) -> None:
    dify.script(TOOL, Frames(frames(*range(25)), gap_s=0.2))  # 5 s if read to the end
    decoder = FrameDecoder()
    with httpx.Client(timeout=10) as client, client.stream("POST", proxy.url + TOOL, content=BODY) as response:
        for chunk in response.iter_raw():
            if decoder.feed(chunk):
                break
    left_at = time.monotonic()
    dify.wait_until(lambda: dify.last(TOOL).outcome == "disconnected", within=2)
    ended_at = dify.last(TOOL).ended_at
    assert ended_at is not None and ended_at - left_at < 0.5


# --- errors -----------------------------------------------------------------------------------

ERRORS: list[tuple[str, Behaviour | None]] = [
    ("unscripted-404", None),
    ("invalid-param-400", Json({"code": "invalid_param", "message": "tenant not found", "status": 400}, status=400)),
    ("html-502", Raw(b"<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html")),
    ("quota-429", Json({"code": "too_many_requests", "message": "quota", "status": 429}, status=429)),
    ("stream-with-error-frame", Frames([data_frame({"n": 1}), error_frame("tool failed: boom")], gap_s=0.05)),
]


@pytest.mark.parametrize(("case", "behaviour"), ERRORS, ids=[c for c, _ in ERRORS])
def test_error_statuses_and_bodies_pass_through_unchanged(
    dify: FakeDify, proxy: ForwardServer, case: str, behaviour: Behaviour | None
) -> None:
    if behaviour is not None:
        dify.script(TOOL, behaviour)
    assert_same_reply(send(dify.url), send(proxy.url))


def test_dify_down_is_a_quick_502_envelope(dify: FakeDify) -> None:
    port = closed_port()
    with ForwardServer(f"http://127.0.0.1:{port}") as server:
        started = time.monotonic()
        reply = send(server.url, "/dify" + TOOL)
        elapsed = time.monotonic() - started
    assert reply.status_code == 502 and elapsed < 2
    error = envelope(reply)["error"]
    assert error.startswith(f"cannot reach Dify at http://127.0.0.1:{port} to forward {TOOL}: ClientConnectorError")


def test_a_reset_before_the_headers_is_a_502_envelope(dify: FakeDify, proxy: ForwardServer) -> None:
    dify.script(TOOL, Reset())
    reply = send(proxy.url)
    assert reply.status_code == 502
    assert envelope(reply)["error"].startswith(f"cannot reach Dify at {dify.url} to forward {TOOL}: ")


def test_slow_headers_beyond_the_timeout_are_a_504_envelope(dify: FakeDify) -> None:
    dify.script(TOOL, Json(UNARY.payload, headers_delay_s=3))
    with ForwardServer(dify.url, timeout_s=0.4) as server:
        started = time.monotonic()
        reply = send(server.url)
        elapsed = time.monotonic() - started
    assert reply.status_code == 504 and 0.35 < elapsed < 1.5
    assert envelope(reply)["error"] == f"cannot reach Dify at {dify.url} to forward {TOOL}: no reply within 0.4 s"
    dify.wait_until(lambda: dify.last(TOOL).outcome == "disconnected")


def test_a_stream_broken_at_a_frame_boundary_ends_with_an_error_frame(dify: FakeDify, proxy: ForwardServer) -> None:
    chunks = frames({"n": 1}, {"n": 2}, {"n": 3})
    dify.script(TOOL, Frames(chunks, reset_after=2))
    reply = send(proxy.url)
    assert reply.status_code == 200
    assert reply.content.startswith(chunks[0] + chunks[1])
    payloads = decode_frames(reply.content)
    assert len(payloads) == 3
    last = json.loads(payloads[-1])
    assert last["data"] is None
    assert last["error"].startswith(f"Dify's reply to {TOOL} broke off: ")


def test_a_stream_broken_inside_a_frame_just_ends(dify: FakeDify, proxy: ForwardServer) -> None:
    first, second = frames({"n": 1}, {"n": 2})
    dify.script(TOOL, Frames([first, second[:20]], reset_after=2))
    reply = send(proxy.url)
    assert reply.status_code == 200 and reply.content == first + second[:20]
    with pytest.raises(FrameDecodeError):
        decode_frames(reply.content)  # the daemon fails on the short read


def test_a_broken_unframed_reply_just_ends(dify: FakeDify, proxy: ForwardServer) -> None:
    dify.script(ENCRYPT, Frames([b'{"data":', b'{"a":1}'], content_type="application/json", reset_after=2))
    reply = send(proxy.url, ENCRYPT)
    assert reply.status_code == 200 and reply.content == b'{"data":{"a":1}'


def test_the_deadline_covers_the_whole_stream(dify: FakeDify) -> None:
    dify.script(TOOL, Frames(frames(*range(5)), gap_s=0.3))
    with ForwardServer(dify.url, timeout_s=0.5) as server:
        reply = send(server.url)
    payloads = [json.loads(p) for p in decode_frames(reply.content)]
    assert [p["data"] for p in payloads] == [0, 1, None]
    assert payloads[-1]["error"] == f"Dify's reply to {TOOL} broke off: no complete reply within 0.5 s"


def test_secrets_never_appear_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    caplog.set_level(logging.DEBUG, logger="dify_gateway")
    with ForwardServer(f"http://gw-user:pa55word@127.0.0.1:{port}/", api_key="s3cret-dify-key") as server:
        reply = send(server.url, ENCRYPT)
    error = envelope(reply)["error"]
    assert error.startswith(f"cannot reach Dify at http://127.0.0.1:{port} to forward {ENCRYPT}: ")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot reach Dify" in logged
    for secret in ("pa55word", "s3cret-dify-key", "gw-user"):
        assert secret not in error and secret not in logged


def test_a_path_outside_the_inner_api_is_not_forwarded(dify: FakeDify, proxy: ForwardServer) -> None:
    reply = send(proxy.url, "/healthz", body=None, method="GET")
    assert reply.status_code == 404
    assert envelope(reply)["error"] == "cannot forward /healthz to Dify: not an inner-API path"
    assert dify.requests == []


def test_the_frame_tracker_finds_boundaries_across_any_split() -> None:
    first, second = frames({"n": 1}, {"text": "é" * 30})
    stream = first + second
    boundaries = {0, len(first), len(stream)}
    for split in range(len(stream) + 1):
        tracker = _FrameTracker()
        tracker.feed(stream[:split])
        assert tracker.at_boundary == (split in boundaries), split
        tracker.feed(stream[split:])
        assert tracker.at_boundary
    tracker = _FrameTracker()
    tracker.feed(b'{"data": null, "error": ""}')
    assert not tracker.framed and not tracker.at_boundary


def test_a_client_leaving_during_its_upload_is_not_reported_as_dify_down(
    dify: FakeDify, proxy: ForwardServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dify_gateway")
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = (
            f"POST {ENCRYPT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        sock.sendall(head.encode() + b" " * 5000)
        time.sleep(0.1)
    deadline = time.monotonic() + 2
    while "the client disconnected" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.01)
    assert "cannot reach Dify" not in caplog.text
    assert send(proxy.url, ENCRYPT).status_code == 404  # and the forwarder carries on
