"""A cheap loopback fake of an OpenAI-compatible upstream, for load tests.

Run as its own process: ``python -m bench.upstream --port 0 --latency-ms 20 --chunks 50 --gap-ms 10``;
it prints ``ready <port>`` once it listens. Endpoints:

- ``POST /v1/chat/completions``: a JSON reply, or with ``"stream": true`` an SSE stream of
  ``--chunks`` content deltas ``--gap-ms`` apart (plus a finish chunk, a usage chunk when
  ``stream_options.include_usage`` is set, and ``[DONE]``);
- ``POST /v1/embeddings``: ``--dims``-dimensional vectors, float lists or base64 float32
  (``encoding_format``) as OpenAI sends them;
- ``POST /v1/rerank``, ``/v2/rerank``, ``/rerank``: Cohere/Jina-shaped results, ``top_n`` honoured;
- ``GET /_bench/times``: the service time of every request since the last call, by request
  id, then forgets them (``{"times": {id: [seconds, ...]}, "untagged": n}``);
- ``GET /_bench/faults``: how many faults were injected so far (``{"500": n, "reset": n}``).

``--fault-rate P`` (0..1) injects faults: a request is answered 500 or has its connection reset
before any reply (alternately), with probability P. A tagged request is faulted at most once:
its retry (the same ``bid:<id>``) is always answered, so a client that retries once must see
every request succeed. Untagged requests are faulted with probability P every time.

Every reply waits ``--latency-ms`` before its headers. The service time runs from the
handler's start to the last byte written. A request is tagged by the first ``bid:<id>``
token in its last user message, first embedding input or rerank query (what the client put
there passes through every system under test unchanged); bodies are precomputed per shape
so the fake's own cost stays small (its CPU is reported beside the results).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from bench import aio

TAG = "bid:"
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Settings:
    latency_s: float = 0.0
    chunks: int = 50
    gap_s: float = 0.01
    dims: int = 384
    fault_rate: float = 0.0
    fault_seed: int = 0


def request_id(text: Any) -> str | None:
    """The id in a ``bid:<id> ...`` text, or None."""
    if isinstance(text, list):  # content parts
        text = next((p.get("text") for p in text if isinstance(p, dict) and p.get("type") == "text"), None)
    if not isinstance(text, str) or not text.startswith(TAG):
        return None
    end = text.find(" ", len(TAG))
    return text[len(TAG) : end if end > 0 else None]


class Upstream:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.times: dict[str, list[float]] = {}
        self.untagged = 0
        self.faults = {"500": 0, "reset": 0}
        self._faulted: set[str] = set()  # tags already faulted once: their retries are answered
        self._dice = random.Random(settings.fault_seed)
        self._bodies: dict[tuple[Any, ...], bytes] = {}
        self._routes = {
            "/v1/chat/completions": self._chat,
            "/v1/embeddings": self._embeddings,
            "/v1/rerank": self._rerank,
            "/v2/rerank": self._rerank,
            "/rerank": self._rerank,
        }

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        if request.method == "GET" and request.path == "/_bench/times":
            reply = orjson.dumps({"times": self.times, "untagged": self.untagged})
            self.times, self.untagged = {}, 0
            return web.Response(body=reply, headers=JSON_HEADERS)
        if request.method == "GET" and request.path == "/_bench/health":
            return web.Response(text="ok")
        if request.method == "GET" and request.path == "/_bench/faults":
            return web.Response(body=orjson.dumps(self.faults), headers=JSON_HEADERS)
        route = self._routes.get(request.path)
        if route is None or request.method != "POST":
            return web.Response(status=404, body=b'{"error":{"message":"not found"}}', headers=JSON_HEADERS)
        body = orjson.loads(await request.read())
        if self.settings.fault_rate > 0 and (fault := self._fault(body)) is not None:
            return fault
        rid, response = await route(request, body)
        if rid is None:
            self.untagged += 1
        else:
            self.times.setdefault(rid, []).append(time.perf_counter() - started)
        return response

    def _fault(self, body: dict[str, Any]) -> web.StreamResponse | None:
        tag = _tag(body)
        if tag in self._faulted or self._dice.random() >= self.settings.fault_rate:
            return None
        if tag is not None:
            self._faulted.add(tag)
        kind = "reset" if (self.faults["500"] + self.faults["reset"]) % 2 else "500"
        self.faults[kind] += 1
        if kind == "500":
            return web.Response(status=500, body=b'{"error":{"message":"injected fault"}}', headers=JSON_HEADERS)
        raise _Reset

    async def _wait(self) -> None:
        if self.settings.latency_s > 0:
            await asyncio.sleep(self.settings.latency_s)

    # -- chat ----------------------------------------------------------------------------
    async def _chat(self, request: web.BaseRequest, body: dict[str, Any]) -> tuple[str | None, web.StreamResponse]:
        messages = body.get("messages") or []
        rid = next((r for m in reversed(messages) if (r := request_id(m.get("content"))) is not None), None)
        model = str(body.get("model", "m"))
        await self._wait()
        if not body.get("stream"):
            return rid, web.Response(
                body=self._cached(("chat", model), lambda: _chat_body(model)), headers=JSON_HEADERS
            )
        options = body.get("stream_options") or {}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delta = self._cached(("delta", model), lambda: _chunk(model, {"content": "tok "}, None))
        first = self._cached(("first", model), lambda: _chunk(model, {"role": "assistant", "content": "tok "}, None))
        for i in range(self.settings.chunks):
            if i and self.settings.gap_s > 0:
                await asyncio.sleep(self.settings.gap_s)
            await response.write(first if i == 0 else delta)
        tail = _chunk(model, {}, "stop")
        if options.get("include_usage"):
            tail += _usage_chunk(model, self.settings.chunks)
        await response.write(tail + b"data: [DONE]\n\n")
        await response.write_eof()
        return rid, response

    # -- embeddings ----------------------------------------------------------------------
    async def _embeddings(
        self, request: web.BaseRequest, body: dict[str, Any]
    ) -> tuple[str | None, web.StreamResponse]:
        inputs = body.get("input") or []
        if isinstance(inputs, str):
            inputs = [inputs]
        rid = request_id(inputs[0]) if inputs else None
        fmt = "base64" if body.get("encoding_format") == "base64" else "float"
        dims = int(body.get("dimensions") or self.settings.dims)
        model = str(body.get("model", "m"))
        key = ("emb", model, len(inputs), fmt, dims)
        await self._wait()
        return rid, web.Response(
            body=self._cached(key, lambda: _embedding_body(model, len(inputs), fmt, dims)), headers=JSON_HEADERS
        )

    # -- rerank --------------------------------------------------------------------------
    async def _rerank(self, request: web.BaseRequest, body: dict[str, Any]) -> tuple[str | None, web.StreamResponse]:
        rid = request_id(body.get("query"))
        count = len(body.get("documents") or body.get("texts") or [])
        top_n = body.get("top_n") or body.get("top_k")
        shown = min(count, top_n) if isinstance(top_n, int) and top_n > 0 else count
        tei = request.path == "/rerank" and "texts" in body
        await self._wait()
        reply = self._cached(("rerank", count, shown, tei), lambda: _rerank_body(shown, tei))
        return rid, web.Response(body=reply, headers=JSON_HEADERS)

    def _cached(self, key: tuple[Any, ...], build: Any) -> bytes:
        body = self._bodies.get(key)
        if body is None:
            body = self._bodies[key] = build()
        return body


class _Reset(Exception):
    """Raised by a handler to reset its connection (see ``_reset_on``)."""


def _tag(body: dict[str, Any]) -> str | None:
    """The request id the chat, embedding and rerank handlers read from a body."""
    if isinstance(body.get("messages"), list):
        return next((r for m in reversed(body["messages"]) if (r := request_id(m.get("content"))) is not None), None)
    inputs = body.get("input")
    if inputs:
        return request_id(inputs if isinstance(inputs, str) else inputs[0])
    return request_id(body.get("query"))


def _reset_on(handler: Any) -> Any:
    """Wrap the handler: a ``_Reset`` aborts the connection with a TCP RST (linger 0), as a
    crashed upstream or a load balancer does, instead of a reply."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except _Reset:
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            raise asyncio.CancelledError from None  # nothing more to write on this connection

    return handle


def _chat_body(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
        }
    )


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _usage_chunk(model: str, completion: int) -> bytes:
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": 20, "completion_tokens": completion, "total_tokens": 20 + completion},
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _vector(index: int, dims: int) -> list[float]:
    # Multiples of 1/128: exact in float32, so both encodings decode to the same numbers.
    return [((index * 31 + d * 7) % 256 - 128) / 128 for d in range(dims)]


def _embedding_body(model: str, count: int, fmt: str, dims: int) -> bytes:
    data = []
    for i in range(count):
        vector = _vector(i, dims)
        encoded: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if fmt == "base64" else vector
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    tokens = 12 * count
    return orjson.dumps(
        {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    )


def _rerank_body(shown: int, tei: bool) -> bytes:
    results = [{"index": i, "relevance_score": round(1 / (i + 1), 6)} for i in range(shown)]
    if tei:
        return orjson.dumps([{"index": r["index"], "score": r["relevance_score"]} for r in results])
    return orjson.dumps(
        {
            "id": "rerank-bench",
            "model": "rerank-bench",
            "results": results,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
            "usage": {"total_tokens": 10 * shown},
        }
    )


async def serve(settings: Settings, host: str, port: int) -> None:
    upstream = Upstream(settings)
    server = web.Server(_reset_on(upstream.handle), access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, host, port, backlog=4096)
    print(f"ready {listener.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()  # until the process is terminated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every reply's headers")
    parser.add_argument("--chunks", type=int, default=50, help="content deltas per streamed chat reply")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="pause between streamed deltas")
    parser.add_argument("--dims", type=int, default=384, help="embedding dimensions")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of requests answered 500 or reset")
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of the fault dice")
    args = parser.parse_args()
    settings = Settings(
        args.latency_ms / 1000, args.chunks, args.gap_ms / 1000, args.dims, args.fault_rate, args.fault_seed
    )
    try:
        aio.run(serve(settings, args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
