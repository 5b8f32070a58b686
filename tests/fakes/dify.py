"""A scripted, recording stand-in for Dify's API (its ``/inner/api/*`` side) for tests.

``FakeDify`` is a real HTTP server (``aiohttp.web``) on 127.0.0.1 with an ephemeral port,
running its own event loop in a daemon thread like ``tests.fakes.upstream.FakeUpstream``:
the same instance serves sync tests and async tests on any loop. Tests script replies per
request path (the path as sent, without the query)::

    with FakeDify() as dify:
        dify.script("/inner/api/invoke/tool", Frames(frames({"n": 1}, {"n": 2}), gap_s=0.2))
        dify.script("/inner/api/invoke/encrypt", Json({"data": {"ok": True}, "error": ""}))
        ...
        [request] = dify.requests  # method, path, query, headers, body, timings, outcome

Each request pops the next step of its path's queue (the last step is reused forever);
paths without a script get Dify's own answer to an unknown path, a Flask 404 JSON body.

Behaviours: ``Json`` and ``Raw`` replies (any status, extra headers, a delay before the
headers: "slow headers"), ``Frames`` (length-prefixed frames written one by one with a gap
between them, optionally reset after some of them), ``Reset`` (TCP RST before any reply) and
``Hang`` (no reply until the client leaves). Every request is recorded, including the ones
answered with a reset or abandoned by the client (``outcome == "disconnected"``), with
``time.monotonic()`` timings comparable with the test's clock.

A test module that wants one fake for all its tests, fresh for each, binds the pytest fixtures
``dify_server`` and ``dify`` with ``dify_server, dify = dify_fixtures()``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, TypeAlias

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.protocol.envelope import data_frame
from tests.fakes.loopback import LoopbackServer

__all__ = [
    "NOT_FOUND_BODY",
    "Behaviour",
    "DifyRequest",
    "FakeDify",
    "Frames",
    "Hang",
    "Json",
    "Raw",
    "Reset",
    "dify_fixtures",
    "frames",
]

Headers: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]]

STREAM_CONTENT_TYPE = "text/event-stream; charset=utf-8"  # what Flask sends for Dify's streams
# Flask-RESTX's body for an unknown path (and for a wrong X-Inner-Api-Key, spec 2.2).
NOT_FOUND_BODY: dict[str, Any] = {
    "code": "not_found",
    "message": "The requested URL was not found on the server. If you entered the URL manually please check "
    "your spelling and try again.",
    "status": 404,
}

# Before a reset the server waits this long so the client has read what was written: a
# receiver drops data still unread when the RST arrives.
RESET_GRACE_S = 0.05


# --------------------------------------------------------------------------
# Behaviours
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Json:
    """A JSON reply (compact encoding) with a Content-Length."""

    payload: Any
    status: int = 200
    headers: Headers = ()
    headers_delay_s: float = 0.0  # pause before the status line and headers


@dataclass(frozen=True)
class Raw:
    """These exact body bytes with a Content-Length."""

    body: bytes
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: Headers = ()
    headers_delay_s: float = 0.0


@dataclass(frozen=True)
class Frames:
    """A chunked reply written chunk by chunk, ``gap_s`` apart (build frames with ``frames``).

    ``reset_after=k`` sends a TCP reset after the first k chunks instead of the rest and the
    end of the body (k = len(chunks): after all of them, before the final empty chunk).
    """

    chunks: Sequence[bytes]
    gap_s: float = 0.0
    status: int = 200
    content_type: str = STREAM_CONTENT_TYPE
    headers: Headers = ()
    headers_delay_s: float = 0.0
    reset_after: int | None = None


@dataclass(frozen=True)
class Reset:
    """Abort the connection (RST) before sending anything."""

    delay_s: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Never answer; the handler waits until the client disconnects (or ``stop()``)."""


Behaviour: TypeAlias = Json | Raw | Frames | Reset | Hang


def frames(*data: Any) -> list[bytes]:
    """One length-prefixed frame ``{"data": d, "error": ""}`` per item, as Dify writes them."""
    return [data_frame(d) for d in data]


# --------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------

Outcome: TypeAlias = Literal["pending", "completed", "reset", "disconnected"]


@dataclass
class DifyRequest:
    """One request as the fake saw it (recorded once its body has been read)."""

    seq: int  # 1-based arrival order
    method: str
    path: str  # decoded path, without the query
    raw_path: str  # the request target as sent, query included
    query_string: str  # as sent, without the "?"
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names; for repeated headers, the last value
    header_list: list[tuple[str, str]]  # as sent: names' case and order, repeats kept
    body: bytes
    chunked: bool  # the body came with Transfer-Encoding: chunked
    arrived_at: float
    behaviour: Behaviour | None = None  # what answered it (None: unscripted 404)
    status: int | None = None  # the status sent, once the headers went out
    headers_sent_at: float | None = None
    last_byte_at: float | None = None
    ended_at: float | None = None
    # "reset": the fake aborted the connection; "disconnected": the client left (or stop()
    # ran) before the reply was complete.
    outcome: Outcome = "pending"

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[DifyRequest] = field(default_factory=list)
    scripts: dict[str, deque[Behaviour]] = field(default_factory=dict)


class FakeDify(LoopbackServer):
    """Scripted Dify API on 127.0.0.1 (see the module docstring)."""

    client_max_size = 256 * 1024 * 1024

    def __init__(self) -> None:
        super().__init__()
        self._state = _State()
        self._seq = itertools.count(1)

    # -- addresses ---------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: what Dify's API URL would be (the daemon appends ``/inner/api/...``)."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting and inspection (thread-safe) ----------------------------

    def script(self, path: str, *steps: Behaviour) -> None:
        """Replace the queue of replies for ``path``; no steps clears it."""
        with self._state.lock:
            if steps:
                self._state.scripts[path] = deque(steps)
            else:
                self._state.scripts.pop(path, None)

    @property
    def requests(self) -> list[DifyRequest]:
        """A snapshot of every recorded request, in arrival order."""
        with self._state.lock:
            return list(self._state.requests)

    def last(self, path: str | None = None) -> DifyRequest:
        """The latest request (to ``path``, if given)."""
        matching = [r for r in self.requests if path is None or r.path == path]
        if not matching:
            raise LookupError(f"FakeDify received no request{'' if path is None else ' for ' + path}")
        return matching[-1]

    def reset(self) -> None:
        """Forget recorded requests and scripts."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.scripts.clear()

    def wait_until(self, predicate: Callable[[], bool], within: float = 2.0) -> None:
        """Poll ``predicate`` until it holds (records are updated by the server thread)."""
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("FakeDify.wait_until: condition not met")
            time.sleep(0.005)

    async def await_until(self, predicate: Callable[[], bool], within: float = 2.0) -> None:
        """``wait_until`` for async tests (the caller's loop keeps running)."""
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - the state lives in another thread
                await asyncio.sleep(0.005)

    def _next_behaviour(self, path: str) -> Behaviour | None:
        with self._state.lock:
            queue = self._state.scripts.get(path)
            if not queue:
                return None
            return queue.popleft() if len(queue) > 1 else queue[0]

    # -- request handling --------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived_at = time.monotonic()
        task = asyncio.current_task()
        assert task is not None
        self._inflight[task] = request.transport
        try:
            rec = await self._record(request, arrived_at)
            try:
                resp = await self._dispatch(request, rec)
            except asyncio.CancelledError:
                if rec.outcome == "pending":
                    rec.outcome = "disconnected"
                raise
            finally:
                rec.ended_at = time.monotonic()
            if rec.outcome == "pending":
                rec.outcome = "completed"
            return resp
        finally:
            del self._inflight[task]

    async def _record(self, request: web.Request, arrived_at: float) -> DifyRequest:
        body = await request.read()
        raw_path = request.raw_path
        rec = DifyRequest(
            seq=next(self._seq),
            method=request.method,
            path=request.path,
            raw_path=raw_path,
            query_string=raw_path.partition("?")[2],
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            header_list=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            body=body,
            chunked="chunked" in request.headers.get("Transfer-Encoding", "").lower(),
            arrived_at=arrived_at,
        )
        with self._state.lock:
            self._state.requests.append(rec)
        return rec

    async def _dispatch(self, request: web.Request, rec: DifyRequest) -> web.StreamResponse:
        behaviour = self._next_behaviour(rec.path)
        rec.behaviour = behaviour
        if behaviour is None:
            return await self._send(request, rec, _dumps(NOT_FOUND_BODY), 404, "application/json", ())
        if isinstance(behaviour, Json):
            await asyncio.sleep(behaviour.headers_delay_s)
            body = _dumps(behaviour.payload)
            return await self._send(request, rec, body, behaviour.status, "application/json", behaviour.headers)
        if isinstance(behaviour, Raw):
            await asyncio.sleep(behaviour.headers_delay_s)
            b = behaviour
            return await self._send(request, rec, b.body, b.status, b.content_type, b.headers)
        if isinstance(behaviour, Frames):
            return await self._stream(request, rec, behaviour)
        if isinstance(behaviour, Reset):
            await asyncio.sleep(behaviour.delay_s)
            await self._abort(request, rec)
        await _wait_for_disconnect()  # Hang

    async def _prepare(self, request: web.Request, rec: DifyRequest, resp: web.StreamResponse) -> None:
        await resp.prepare(request)
        rec.status = resp.status
        rec.headers_sent_at = time.monotonic()

    async def _send(
        self, request: web.Request, rec: DifyRequest, body: bytes, status: int, content_type: str, headers: Headers
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers=CIMultiDict(headers))
        resp.headers["Content-Type"] = content_type
        resp.content_length = len(body)
        await self._prepare(request, rec, resp)
        await resp.write(body)
        await resp.write_eof()
        rec.last_byte_at = time.monotonic()
        return resp

    async def _stream(self, request: web.Request, rec: DifyRequest, spec: Frames) -> web.StreamResponse:
        await asyncio.sleep(spec.headers_delay_s)
        resp = web.StreamResponse(status=spec.status, headers=CIMultiDict(spec.headers))
        resp.headers["Content-Type"] = spec.content_type
        resp.enable_chunked_encoding()
        await self._prepare(request, rec, resp)
        for i, chunk in enumerate(spec.chunks):
            if spec.reset_after is not None and i == spec.reset_after:
                break
            if i:
                await asyncio.sleep(spec.gap_s)
            await resp.write(chunk)
            rec.last_byte_at = time.monotonic()
        if spec.reset_after is not None:
            await asyncio.sleep(RESET_GRACE_S)
            await self._abort(request, rec)
        await resp.write_eof()
        rec.last_byte_at = time.monotonic()
        return resp

    async def _abort(self, request: web.Request, rec: DifyRequest) -> NoReturn:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0 turns the close into a TCP RST, as a crashed server's would be.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            rec.outcome = "reset"
            transport.abort()
        await _wait_for_disconnect()  # connection_lost cancels this handler


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


async def _wait_for_disconnect() -> NoReturn:
    """Park the handler; it is cancelled when the client goes away or on stop()."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable: the parking future is never resolved")


# --------------------------------------------------------------------------
# Pytest fixtures
# --------------------------------------------------------------------------


def dify_fixtures() -> tuple[Any, Any]:
    """The fixtures ``dify_server`` (one ``FakeDify`` for the test module: starting a server per
    test would dominate the module's run time) and ``dify`` (that fake, its records and scripts
    cleared before each test). Bind both at module level: pytest finds fixtures by attribute."""

    @pytest.fixture(scope="module", name="dify_server")
    def server() -> Iterator[FakeDify]:
        with FakeDify() as fake:
            yield fake

    @pytest.fixture(name="dify")
    def fresh(dify_server: FakeDify) -> FakeDify:
        dify_server.reset()
        return dify_server

    return server, fresh
