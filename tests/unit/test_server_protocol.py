"""The connection limits of ``gateway.server_protocol``: uvicorn on uvloop with the protocol,
a small ASGI app behind it, raw sockets in front (byte-exact limits, what the app sees)."""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import uvicorn

from gateway.server_protocol import ConnectionLimits, GatewayHttpProtocol, _HeadersWithBody

LIMITS = ConnectionLimits(max_header_bytes=4096, max_headers=20, header_timeout_s=0.5, body_timeout_s=0.5)


class Recorder:
    """An ASGI app that reads the whole body and answers its length; remembers each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.disconnects: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls.append(f"{scope['method']} {scope['path']}")
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects.append(scope)
                return
            size += len(message["body"])
            if not message["more_body"]:
                break
        body = orjson.dumps({"size": size})
        if scope["path"] == "/late":  # a stream whose first piece comes a while after its headers
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await asyncio.sleep(0.3)
            await send({"type": "http.response.body", "body": body})
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Served:
    def __init__(self, app: Recorder, port: int) -> None:
        self.app = app
        self.port = port

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.settimeout(5)
        return sock

    def exchange(self, data: bytes, wait_s: float = 5) -> tuple[bytes, float]:
        """Send ``data``, read until the server closes (or ``wait_s``); the reply and the time it took."""
        started = time.monotonic()
        with self.connect() as sock:
            sock.settimeout(wait_s)
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return read_all(sock), time.monotonic() - started


def read_all(sock: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def status_of(reply: bytes) -> int:
    return int(reply[9:12])


def body_of(reply: bytes) -> Any:
    return orjson.loads(reply.split(b"\r\n\r\n", 1)[1])


@pytest.fixture
def served() -> Iterator[Served]:
    app = Recorder()
    protocol = functools.partial(GatewayHttpProtocol, limits=LIMITS)
    # uvicorn calls ``http`` with keyword arguments: a partial of the class does as well as the class.
    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="uvloop", lifespan="off", log_level="error")
    config.http = protocol  # type: ignore[assignment]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.005)
    yield Served(app, server.servers[0].sockets[0].getsockname()[1])
    server.should_exit = True
    thread.join(timeout=10)


def request(path: str = "/x", headers: bytes = b"", body: bytes = b"") -> bytes:
    length = b"content-length: %d\r\n" % len(body) if body else b""
    return b"POST " + path.encode() + b" HTTP/1.1\r\nhost: t\r\n" + length + headers + b"\r\n" + body


def test_a_request_at_the_header_limit_passes_and_one_byte_over_is_refused(served: Served) -> None:
    # The limit counts the request target and each "name: value\r\n" field.
    counted = len(b"/x") + len(b"host") + len(b"t") + 4 + len(b"x-pad") + 4
    fits = b"x-pad: " + b"a" * (LIMITS.max_header_bytes - counted) + b"\r\n"
    reply, _ = served.exchange(request(headers=fits) + request(path="/end"), wait_s=1)
    assert status_of(reply) == 200, reply[:200]
    over = b"x-pad: " + b"a" * (LIMITS.max_header_bytes - counted + 1) + b"\r\n"
    reply, _ = served.exchange(request(headers=over))
    assert status_of(reply) == 431
    assert body_of(reply) == {
        "data": None,
        "error": "request headers too large: over 4096 bytes (server.max_header_bytes)",
    }
    assert served.app.calls == ["POST /x", "POST /end"]


def test_a_header_that_never_ends_is_refused_after_one_read_past_the_limit(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nx-big: ")
        started = time.monotonic()
        reply = b""
        try:
            for _ in range(64):  # 64 x 64 KiB: the server answers long before the end
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_all(sock)
    assert status_of(reply) == 431, reply[:200]
    assert time.monotonic() - started < 2.5  # within the linger time, not after the whole header
    assert served.app.calls == []


def test_too_many_headers_are_refused(served: Served) -> None:
    fields = b"".join(b"x-h%d: v\r\n" % i for i in range(LIMITS.max_headers))  # with host: one too many
    reply, _ = served.exchange(request(headers=fields))
    assert status_of(reply) == 431
    assert body_of(reply)["error"] == "too many request headers: over 20 (server.max_headers)"
    reply, _ = served.exchange(request(headers=fields[fields.index(b"\r\n") + 2 :]), wait_s=1)
    assert status_of(reply) == 200


def test_slow_headers_get_408_and_a_silent_connection_is_closed(served: Served) -> None:
    reply, took = served.exchange(b"GET / HTTP/1.1\r\nhost", wait_s=3)
    assert status_of(reply) == 408
    assert body_of(reply) == {"data": None, "error": "request headers not received within 0.5 s"}
    assert 0.4 < took < 2
    reply, took = served.exchange(b"", wait_s=3)
    assert reply == b""
    assert 0.4 < took < 2
    assert served.app.calls == []


def test_the_header_deadline_applies_to_each_keep_alive_request(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(request())
        time.sleep(0.2)
        first = sock.recv(65536)
        assert status_of(first) == 200
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
        started = time.monotonic()
        second = read_all(sock)
    assert status_of(second) == 408
    assert 0.4 < time.monotonic() - started < 2


@pytest.mark.parametrize(
    "head",
    [
        b"POST /slow HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n{",
        b"POST /slow HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_a_body_that_does_not_end_in_time_gets_408_and_the_app_sees_the_client_gone(
    served: Served, head: bytes
) -> None:
    with served.connect() as sock:
        sock.sendall(head)
        started = time.monotonic()
        for _ in range(3):  # still sending, slowly: the deadline is for the whole body
            time.sleep(0.2)
            try:
                sock.sendall(b"a" if b"content-length" in head else b"1\r\na\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        reply = read_all(sock)
    assert status_of(reply) == 408
    assert body_of(reply) == {"data": None, "error": "request body not received within 0.5 s"}
    assert 0.4 < time.monotonic() - started < 2
    deadline = time.monotonic() + 2
    while not served.app.disconnects and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [scope["dify_gateway.body_timed_out"] for scope in served.app.disconnects] == [True]


def test_healthz_is_answered_without_the_app_and_other_methods_reach_it(served: Served) -> None:
    reply, _ = served.exchange(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\nHEAD /healthz?x=1 HTTP/1.1\r\n\r\n", 0.5)
    first, second = reply.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200") and first.endswith(b'{"status":"ok"}')
    assert second.startswith(b"200") and b"content-length: 15" in second and second.endswith(b"\r\n\r\n")
    reply, _ = served.exchange(b"GET /healthz HTTP/1.0\r\n\r\n")  # closed after the reply, as HTTP/1.0 asks
    assert reply.endswith(b'{"status":"ok"}')
    served.exchange(request(path="/healthz"), 0.5)
    assert served.app.calls == ["POST /healthz"]


def test_malformed_http_gets_a_json_envelope(served: Served) -> None:
    reply, _ = served.exchange(b"NOT HTTP AT ALL\r\n\r\n")
    assert status_of(reply) == 400
    error = body_of(reply)
    assert error["data"] is None and error["error"].startswith("invalid HTTP request")


def test_every_request_is_served_when_more_arrive_than_start_per_iteration(served: Served) -> None:
    """Pacing delays task starts, it never drops one: 40 connections at once, each answered."""
    socks = [served.connect() for _ in range(40)]
    for sock in socks:
        sock.sendall(request(body=b"abc"))
    for sock in socks:
        assert status_of(sock.recv(65536)) == 200
        sock.close()
    assert len(served.app.calls) == 40


class Writes(asyncio.Transport):
    """A transport that records its writes (what the kernel would get, one call each)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_a_reply_goes_out_in_one_write_with_its_headers_and_nothing_waits_past_the_iteration() -> None:
    async def scenario() -> list[list[bytes]]:
        loop = asyncio.get_running_loop()
        seen = []
        short = Writes()
        held = _HeadersWithBody(short, loop)
        held.write(b"HTTP/1.1 200 OK\r\n\r\n")
        held.write(b"body")
        held.write(b"more")
        seen.append(short.writes)
        alone = Writes()  # headers, then nothing this iteration: written at the next one
        held = _HeadersWithBody(alone, loop)
        held.write(b"HTTP/1.1 200 OK\r\n\r\n")
        seen.append(list(alone.writes))
        await asyncio.sleep(0)
        seen.append(alone.writes)
        closing = Writes()  # a close writes what is held first
        held = _HeadersWithBody(closing, loop)
        held.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # not the response: straight through
        held.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        held.close()
        seen.append(closing.writes + [b"closed" if closing.closed else b"open"])
        return seen

    short, before, after, closed = asyncio.run(scenario())
    assert short == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]
    assert before == [] and after == [b"HTTP/1.1 200 OK\r\n\r\n"]
    assert closed == [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n", b"closed"]


def test_headers_are_not_held_back_for_a_body_that_comes_later(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(request("/late", body=b"ab"))
        first = sock.recv(65536)  # well before the body's 0.3 s
        assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"\r\n\r\n")
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
        assert b'{"size":2}' in rest


def test_a_head_reply_without_body_bytes_still_gets_its_headers(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n")
        first = sock.recv(65536)
        assert status_of(first) == 200 and first.endswith(b"\r\n\r\n")
        sock.sendall(request(body=b"abc"))  # and the connection goes on
        assert body_of(sock.recv(65536)) == {"size": 3}
