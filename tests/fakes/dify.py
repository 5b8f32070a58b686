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
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.protocol.envelope import data_frame
from tests.fakes.loopback import RESET_GRACE_S, Hang, Outcome, RecordingServer, Reset, wait_for_disconnect

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


Behaviour: TypeAlias = Json | Raw | Frames | Reset | Hang


def frames(*data: Any) -> list[bytes]:
    """One length-prefixed frame ``{"data": d, "error": ""}`` per item, as Dify writes them."""
    return [data_frame(d) for d in data]


# --------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------


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


class FakeDify(RecordingServer[DifyRequest, Behaviour]):
    """Scripted Dify API on 127.0.0.1 (see the module docstring); ``script(path, *steps)``,
    ``requests``, ``reset()``, ``wait_until`` and ``await_until`` come from ``RecordingServer``."""

    client_max_size = 256 * 1024 * 1024

    # -- addresses ---------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: what Dify's API URL would be (the daemon appends ``/inner/api/...``)."""
        return f"http://127.0.0.1:{self.port}"

    # -- inspection --------------------------------------------------------

    def last(self, path: str | None = None) -> DifyRequest:
        """The latest request (to ``path``, if given)."""
        matching = [r for r in self.requests if path is None or r.path == path]
        if not matching:
            raise LookupError(f"FakeDify received no request{'' if path is None else ' for ' + path}")
        return matching[-1]

    def _next_behaviour(self, path: str) -> Behaviour | None:
        with self._lock:
            return self._next_step(self._scripts.get(path))

    # -- request handling --------------------------------------------------

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
        return self._keep(rec)

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
        await wait_for_disconnect()  # Hang

    async def _send(
        self, request: web.Request, rec: DifyRequest, body: bytes, status: int, content_type: str, headers: Headers
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers=CIMultiDict(headers))
        resp.headers["Content-Type"] = content_type
        return await self._send_whole(request, rec, resp, body)

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
            await self._write(rec, resp, chunk)
        if spec.reset_after is not None:
            await asyncio.sleep(RESET_GRACE_S)
            await self._abort(request, rec)
        return await self._finish(rec, resp)


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


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
