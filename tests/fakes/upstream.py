"""A scripted, fault-injecting OpenAI-compatible upstream for tests.

``FakeUpstream`` is a real HTTP server (``aiohttp.web``) bound to 127.0.0.1 on an
ephemeral port.  It runs its own event loop in a daemon thread, so the same
instance works from plain sync tests and from async tests running on another
loop (the test's client never shares a loop with the server, which is what a
real upstream looks like as well).

Tests script what the upstream does per request *model*::

    with FakeUpstream() as fake:
        fake.script("gpt-x", HttpError(429, headers={"Retry-After": "1"}), Chat(["Hi"]))
        ...  # first call to model "gpt-x" gets a 429, every later one streams "Hi"
        assert fake.count("/v1/chat/completions", model="gpt-x") == 2

Every request that reaches the server is recorded (``fake.requests``), including
those that were answered with an error, reset or left hanging, so retry logic
can be asserted through the attempt counters.

Everything is deterministic: ids derive from the request sequence number,
``created`` is a constant, embeddings/audio/rerank scores derive from the input.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import re
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from aiohttp import web

from tests.fakes.loopback import RESET_GRACE_S, Hang, Outcome, RecordingServer, Reset, wait_for_disconnect

__all__ = [
    "Behaviour",
    "Chat",
    "Completion",
    "Embeddings",
    "FakeUpstream",
    "Faults",
    "Hang",
    "HttpError",
    "Moderation",
    "RecordedFile",
    "RecordedRequest",
    "Rerank",
    "Reset",
    "Speech",
    "ToolCallSpec",
    "Transcription",
    "fake_audio",
    "fake_embedding",
    "rerank_score",
]

JSON: TypeAlias = dict[str, Any]

# A fixed ``created`` keeps responses byte-for-byte reproducible across runs.
CREATED = 1_700_000_000


_MALFORMED_LINE = b"data: {this is not json\n\n"


# --------------------------------------------------------------------------
# Behaviours
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCallSpec:
    """One tool call the fake model "decides" to make."""

    name: str
    arguments: str = "{}"  # the JSON-encoded arguments string, as OpenAI sends it
    id: str | None = None  # None -> deterministic "call_<index>"


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Timing and fault knobs shared by ``Chat`` and ``Completion``.

    Streaming: *k* counts ``data:`` JSON chunks (role/content, tool-call,
    finish and usage chunks alike); a *k* beyond the last chunk means "just
    before ``data: [DONE]``".  Faults are checked in the order reset, stall,
    truncate, malformed.

    Non-streaming there is one JSON body, so *k* is ignored and each fault
    applies to the body: reset/stall after half of it (with a full
    Content-Length, so the client waits for the rest), truncate sends half of
    it and ends cleanly, malformed replaces it with non-JSON.
    """

    gap_s: float = 0.0  # pause between consecutive stream writes
    headers_delay_s: float = 0.0  # pause before the status line/headers
    reset_after: int | None = None  # TCP reset (RST) after k chunks
    stall_after: int | None = None  # stop after k chunks, hang until the client leaves
    malformed_after: int | None = None  # insert a non-JSON data: line after k chunks
    truncate_after: int | None = None  # end the body cleanly after k chunks, no [DONE]
    one_write: bool = False  # the whole stream in one write, as a fast upstream read late arrives


@dataclass(frozen=True)
class Chat(Faults):
    """``POST /v1/chat/completions``; streams when the request has ``"stream": true``."""

    deltas: Sequence[str] = ("Hello", " world")
    tool_calls: Sequence[ToolCallSpec] = ()
    tool_call_split: int = 1  # deltas per tool call's arguments; name/id only in the first
    finish_reason: str | None = None  # None -> "tool_calls" if tool_calls else "stop"
    usage: tuple[int, int] | None = (
        10,
        5,
    )  # (prompt, completion); None -> no usage at all
    content_text: str | None = None  # non-stream message.content override
    system_fingerprint: str | None = None


@dataclass(frozen=True)
class Completion(Faults):
    """Legacy ``POST /v1/completions`` (``text_completion`` objects)."""

    deltas: Sequence[str] = ("Hello", " world")
    finish_reason: str = "stop"
    usage: tuple[int, int] | None = (10, 5)
    content_text: str | None = None  # non-stream choices[0].text override


@dataclass(frozen=True)
class HttpError:
    """An error status sent before any body byte.

    ``body=None`` produces an OpenAI-style ``{"error": {...}}`` JSON body; a
    ``str`` is sent verbatim as text/plain (e.g. a proxy's HTML page).
    """

    status: int
    body: Mapping[str, Any] | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Embeddings:
    """``POST /v1/embeddings`` with vectors from :func:`fake_embedding`.

    A ``dimensions`` field in the request overrides ``dims`` (as OpenAI's
    ``text-embedding-3-*`` models honour it).

    The same behaviour answers other vendors' embedding routes, each vector keyed by the
    text (or image) it embeds: Cohere v2 ``POST /v2/embed`` (``texts`` or ``images``,
    ``{"embeddings": {"float": [...]}}``), Voyage ``POST /v1/multimodalembeddings`` (one
    vector per input, keyed by its content parts joined with newlines: the text, the
    ``image_base64`` or the ``image_url``), Gemini ``POST .../models/M:batchEmbedContents``,
    Bedrock ``POST /model/M/invoke`` (Titan ``inputText``/``inputImage``, Cohere ``texts``)
    and Hugging Face text-embeddings-inference ``POST /embed`` (a bare list of vectors; the
    token count goes into the ``x-compute-tokens`` header as TEI does).
    """

    dims: int = 8
    usage_tokens: int | None = None  # None -> whitespace word count, at least 1 per input
    fail: HttpError | None = None  # answer with this error instead
    delay_s: float = 0.0
    # /v1/embeddings only: list ``data`` items last-first (their ``index`` fields stay
    # right), and leave the last ``missing`` vectors out, as misbehaving servers do.
    reverse: bool = False
    missing: int = 0


@dataclass(frozen=True)
class Speech:
    """``POST /v1/audio/speech``: ``size`` bytes of :func:`fake_audio`."""

    size: int = 4096
    chunk_size: int | None = None  # None -> one body with Content-Length; else chunked
    gap_s: float = 0.0  # pause between chunks
    content_type: str = "audio/mpeg"


@dataclass(frozen=True)
class Transcription:
    """``POST /v1/audio/transcriptions`` (multipart; the upload is recorded)."""

    text: str = "hello world"
    language: str = "en"
    duration_s: float = 1.0


@dataclass(frozen=True)
class Moderation:
    """``POST /v1/moderations``: flagged when an input contains one of ``flag_words``."""

    flag_words: Sequence[str] = ("forbidden",)
    category: str = "violence"


@dataclass(frozen=True)
class Rerank:
    """``POST /v1/rerank`` (Jina/Cohere v1 shape), ``POST /v2/rerank`` (Cohere v2) and
    ``POST /rerank`` (Hugging Face text-embeddings-inference: ``[{"index", "score"}]``).

    Scores are :func:`rerank_score` unless ``scores`` (by document index) is set.
    ``style`` picks another vendor's body for ``/v1/rerank``: ``"voyage"`` answers
    ``{"data": [...]}`` (and honours ``top_k``), ``"xinference"`` sends ``"document": null``
    when documents were not asked for, plus Xinference's ``meta``.
    """

    scores: Sequence[float] | None = None
    style: Literal["jina", "voyage", "xinference"] = "jina"


Behaviour: TypeAlias = (
    Chat | Completion | HttpError | Reset | Hang | Embeddings | Speech | Transcription | Moderation | Rerank
)


# --------------------------------------------------------------------------
# Deterministic payload helpers (public so tests can compute expectations)
# --------------------------------------------------------------------------


def _hash_stream(seed: str, size: int) -> bytes:
    """``size`` bytes of sha256(f"{i}:{seed}") for i = 0, 1, ... concatenated."""
    out = bytearray()
    for i in itertools.count():
        if len(out) >= size:
            break
        out += hashlib.sha256(f"{i}:{seed}".encode()).digest()
    return bytes(out[:size])


def fake_embedding(text: str, dims: int) -> list[float]:
    """The vector the fake returns for ``text``.

    Each component is ``(byte - 128) / 128`` for a sha256-derived byte, i.e. a
    multiple of 1/128 in [-1, 1): exactly representable as float32, so the
    base64 (float32) and the JSON float encodings decode to identical lists.
    """
    return [(b - 128) / 128 for b in _hash_stream(text, dims)]


def fake_audio(size: int) -> bytes:
    """The deterministic "audio" bytes returned by ``Speech(size=...)``."""
    return _hash_stream("fake-audio", size)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rerank_score(query: str, document: str) -> float:
    """Share of the query's distinct words that occur in the document (0..1)."""
    query_words = set(_words(query))
    if not query_words:
        return 0.0
    return len(query_words & set(_words(document))) / len(query_words)


# --------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedFile:
    """A file part of a multipart upload."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One request as the fake saw it.

    Times are ``time.monotonic()`` values (comparable with the test's own
    clock).  The record is created when the request body has been read and is
    updated while the response is written, so look at the timing fields once
    the client is done.
    """

    seq: int  # 1-based arrival order, also used in response ids
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # keys lower-cased
    body: bytes  # raw body (empty for multipart, see form/files)
    json: Any  # parsed JSON body, or None if absent/not JSON
    model: str | None  # "model" from the JSON body or multipart form
    arrived_at: float
    form: dict[str, str] = field(default_factory=dict)
    files: list[RecordedFile] = field(default_factory=list)
    client_port: int | None = None  # the client's TCP port: one per connection, so reuse shows
    behaviour: Behaviour | None = None  # what answered it (None for unknown paths)
    status: int | None = None  # status sent, if headers were sent
    headers_sent_at: float | None = None
    last_byte_at: float | None = None
    ended_at: float | None = None
    # "reset": the fake aborted the connection; "disconnected": the client left
    # (or stop() ran) before the response was complete.
    outcome: Outcome = "pending"


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------

_Serve: TypeAlias = Callable[[web.Request, RecordedRequest, Any], Awaitable[web.StreamResponse]]


class FakeUpstream(RecordingServer[RecordedRequest, Behaviour]):
    """Scripted OpenAI-compatible HTTP server on 127.0.0.1 (see module docstring);
    ``script(model, *steps)``, ``requests``, ``wait_until`` and ``await_until`` come from
    ``RecordingServer``."""

    def __init__(self) -> None:
        super().__init__()
        self._default: deque[Behaviour] = deque()
        # path -> (behaviour used when nothing is scripted, handler)
        self._routes: dict[str, tuple[Behaviour, _Serve]] = {
            "/v1/chat/completions": (Chat(), self._serve_chat),
            "/v1/completions": (Completion(), self._serve_completion),
            "/v1/embeddings": (Embeddings(), self._serve_embeddings),
            "/v1/audio/speech": (Speech(), self._serve_speech),
            "/v1/audio/transcriptions": (Transcription(), self._serve_transcription),
            "/v1/moderations": (Moderation(), self._serve_moderation),
            "/v1/rerank": (Rerank(), self._serve_rerank),
            "/v2/rerank": (Rerank(), self._serve_rerank),
            "/v2/embed": (Embeddings(), self._serve_cohere_embed),
            "/v1/multimodalembeddings": (Embeddings(), self._serve_voyage_multimodal),
            "/embed": (Embeddings(), self._serve_tei_embed),
            "/rerank": (Rerank(), self._serve_tei_rerank),
        }
        # Routes whose path carries the model: (pattern, fallback behaviour, handler).
        self._pattern_routes: list[tuple[re.Pattern[str], Behaviour, _Serve]] = [
            (re.compile(r"^(/v1beta|/v1)?/models/[^/]+:batchEmbedContents$"), Embeddings(), self._serve_gemini_embed),
            (re.compile(r"^/model/[^/]+/invoke$"), Embeddings(), self._serve_bedrock_embed),
        ]

    # -- addresses ---------------------------------------------------------

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` (Cohere v2 rerank lives at ``/v2/rerank``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.root_url}/v1"

    # -- scripting and inspection (thread-safe) ----------------------------

    def default(self, *steps: Behaviour) -> None:
        """Queue used for models without a script (same popping rule).

        With no default either, each endpoint answers with its behaviour's
        defaults (``Chat()``, ``Embeddings()``, ...).
        """
        with self._lock:
            self._default = deque(steps)

    def count(self, path: str | None = None, model: str | None = None) -> int:
        """Attempts that reached the server (failed ones included), optionally filtered."""
        return sum(1 for r in self.requests if (path is None or r.path == path) and (model is None or r.model == model))

    def reset(self) -> None:
        """Forget recorded requests, scripts and the default queue."""
        super().reset()
        with self._lock:
            self._default.clear()

    def _next_behaviour(self, model: str | None) -> Behaviour | None:
        with self._lock:
            queue = self._scripts.get(model) if model is not None else None
            return self._next_step(queue or self._default)

    # -- request handling --------------------------------------------------

    async def _record(self, request: web.Request, arrived_at: float) -> RecordedRequest:
        body, parsed, model = b"", None, None
        form: dict[str, str] = {}
        files: list[RecordedFile] = []
        if request.content_type == "multipart/form-data":
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    with value.file:  # a spooled temporary file: close it, or its __del__ complains
                        files.append(RecordedFile(name, value.filename, value.content_type, value.file.read()))
                else:
                    form[name] = value if isinstance(value, str) else bytes(value).decode(errors="replace")
            model = form.get("model")
        else:
            body = await request.read()
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
                model = parsed["model"]
            elif ":" in request.path and "/models/" in request.path:  # Gemini: the model is in the path
                model = request.path.rsplit("/models/", 1)[1].split(":", 1)[0]
            elif request.path.startswith("/model/") and request.path.endswith("/invoke"):  # Bedrock
                model = request.path.removeprefix("/model/").removesuffix("/invoke")
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        rec = RecordedRequest(
            client_port=peer[1] if isinstance(peer, tuple) and len(peer) >= 2 else None,
            seq=next(self._seq),
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            json=parsed,
            model=model,
            arrived_at=arrived_at,
            form=form,
            files=files,
        )
        return self._keep(rec)

    async def _dispatch(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        route = self._routes.get(request.path) if request.method == "POST" else None
        if route is None and request.method == "POST":
            route = next(((b, h) for p, b, h in self._pattern_routes if p.match(request.path)), None)
        if route is None:
            return await self._send_json(
                request,
                rec,
                _error_body(404, f"fake upstream: no route {request.method} {request.path}"),
                404,
            )
        fallback, serve = route
        behaviour = self._next_behaviour(rec.model) or fallback
        rec.behaviour = behaviour
        if isinstance(behaviour, HttpError):
            return await self._serve_error(request, rec, behaviour)
        if isinstance(behaviour, Reset):
            await asyncio.sleep(behaviour.delay_s)
            await self._abort(request, rec)
        if isinstance(behaviour, Hang):
            await wait_for_disconnect()
        if not isinstance(behaviour, type(fallback)):
            # A mis-scripted test should fail loudly, not get a plausible answer.
            msg = f"fake upstream: {type(behaviour).__name__} cannot answer {request.path}"
            return await self._send_json(request, rec, _error_body(500, msg), 500)
        return await serve(request, rec, behaviour)

    # -- low-level writing (timings recorded by RecordingServer) ------------

    async def _prepare(self, request: web.Request, rec: RecordedRequest, resp: web.StreamResponse) -> None:
        resp.headers.setdefault("x-request-id", f"req_fake_{rec.seq}")
        await super()._prepare(request, rec, resp)

    async def _send_bytes(
        self,
        request: web.Request,
        rec: RecordedRequest,
        data: bytes,
        status: int = 200,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_type = content_type
        return await self._send_whole(request, rec, resp, data)

    async def _send_json(
        self,
        request: web.Request,
        rec: RecordedRequest,
        payload: Mapping[str, Any],
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        return await self._send_bytes(request, rec, _dumps(payload), status, "application/json", headers)

    # -- error / generic fault behaviours ----------------------------------

    async def _serve_error(self, request: web.Request, rec: RecordedRequest, err: HttpError) -> web.StreamResponse:
        await asyncio.sleep(err.delay_s)
        headers = dict(err.headers)
        if isinstance(err.body, str):
            return await self._send_bytes(request, rec, err.body.encode(), err.status, "text/plain", headers)
        body = err.body if err.body is not None else _error_body(err.status)
        return await self._send_json(request, rec, body, err.status, headers)

    async def _serve_events(
        self,
        request: web.Request,
        rec: RecordedRequest,
        spec: Faults,
        events: list[JSON],
    ) -> web.StreamResponse:
        """Stream ``events`` as OpenAI SSE, applying the fault knobs."""
        await asyncio.sleep(spec.headers_delay_s)
        resp = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        resp.content_type = "text/event-stream"
        resp.charset = "utf-8"
        await self._prepare(request, rec, resp)
        n = len(events)
        if spec.one_write:  # the other fault knobs do not apply, but for malformed_after
            lines = [b"data: " + _dumps(event) + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]
            if spec.malformed_after is not None:
                lines.insert(min(spec.malformed_after, n), _MALFORMED_LINE)
            await self._write(rec, resp, b"".join(lines))
            return await self._finish(rec, resp)
        # Position n is "just before [DONE]"; larger k values are clamped to it.
        for i in range(n + 1):
            if i > 0:
                await asyncio.sleep(spec.gap_s)
            if spec.reset_after is not None and i == min(spec.reset_after, n):
                await asyncio.sleep(max(RESET_GRACE_S - spec.gap_s, 0))
                await self._abort(request, rec)
            if spec.stall_after is not None and i == min(spec.stall_after, n):
                await wait_for_disconnect()
            if spec.truncate_after is not None and i == min(spec.truncate_after, n):
                return await self._finish(rec, resp)
            if spec.malformed_after is not None and i == min(spec.malformed_after, n):
                await self._write(rec, resp, _MALFORMED_LINE)
            line = (b"data: " + _dumps(events[i]) + b"\n\n") if i < n else b"data: [DONE]\n\n"
            await self._write(rec, resp, line)
        return await self._finish(rec, resp)

    async def _serve_body(
        self, request: web.Request, rec: RecordedRequest, spec: Faults, payload: JSON
    ) -> web.StreamResponse:
        """Send a non-stream JSON body, applying the fault knobs to the body."""
        await asyncio.sleep(spec.headers_delay_s)
        data = _dumps(payload)
        half = data[: len(data) // 2]
        if spec.malformed_after is not None:
            return await self._send_bytes(request, rec, b"{this is not json")
        if spec.reset_after is None and spec.stall_after is None and spec.truncate_after is None:
            return await self._send_bytes(request, rec, data)
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        if spec.truncate_after is None:
            resp.content_length = len(data)  # promise the full body, deliver half
        await self._prepare(request, rec, resp)
        await self._write(rec, resp, half)
        if spec.reset_after is not None:
            await asyncio.sleep(RESET_GRACE_S)
            await self._abort(request, rec)
        if spec.stall_after is not None:
            await wait_for_disconnect()
        return await self._finish(rec, resp)  # truncate: clean end of a chunked body

    # -- chat --------------------------------------------------------------

    async def _serve_chat(self, request: web.Request, rec: RecordedRequest, chat: Chat) -> web.StreamResponse:
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        model = rec.model or "fake-model"
        finish = chat.finish_reason or ("tool_calls" if chat.tool_calls else "stop")
        base: JSON = {
            "id": f"chatcmpl-fake-{rec.seq}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": chat.system_fingerprint,
        }
        if not req.get("stream"):
            return await self._serve_body(request, rec, chat, _chat_body(chat, base, finish))
        include_usage = _wants_usage(req)

        def chunk(delta: JSON, finish_reason: str | None = None) -> JSON:
            out: JSON = {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
            }
            if include_usage:
                out["usage"] = None  # OpenAI sends usage: null until the final chunk
            return out

        deltas: list[JSON] = [{"content": text} for text in chat.deltas]
        for index, call in enumerate(chat.tool_calls):
            for part_no, part in enumerate(_split(call.arguments, chat.tool_call_split)):
                entry: JSON = {"index": index, "function": {"arguments": part}}
                if part_no == 0:
                    entry = {
                        "index": index,
                        "id": call.id or f"call_{index}",
                        "type": "function",
                        "function": {"name": call.name, "arguments": part},
                    }
                deltas.append({"tool_calls": [entry]})
        if not deltas:
            deltas.append({"content": ""})
        # The first delta carries the role; with tool calls only, content is null.
        deltas[0] = {
            "role": "assistant",
            **({"content": None} if not chat.deltas else {}),
            **deltas[0],
        }

        events = [chunk(d) for d in deltas] + [chunk({}, finish)]
        if include_usage and chat.usage is not None:
            events.append({**base, "choices": [], "usage": _usage(chat.usage)})
        return await self._serve_events(request, rec, chat, events)

    # -- legacy completions ------------------------------------------------

    async def _serve_completion(
        self, request: web.Request, rec: RecordedRequest, comp: Completion
    ) -> web.StreamResponse:
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        base: JSON = {
            "id": f"cmpl-fake-{rec.seq}",
            "object": "text_completion",
            "created": CREATED,
            "model": rec.model or "fake-model",
        }

        def choice(text: str, finish_reason: str | None) -> JSON:
            return {
                "text": text,
                "index": 0,
                "logprobs": None,
                "finish_reason": finish_reason,
            }

        if not req.get("stream"):
            text = comp.content_text if comp.content_text is not None else "".join(comp.deltas)
            body: JSON = {**base, "choices": [choice(text, comp.finish_reason)]}
            if comp.usage is not None:
                body["usage"] = _usage(comp.usage)
            return await self._serve_body(request, rec, comp, body)
        events = [{**base, "choices": [choice(t, None)]} for t in comp.deltas]
        events.append({**base, "choices": [choice("", comp.finish_reason)]})
        if _wants_usage(req) and comp.usage is not None:
            events.append({**base, "choices": [], "usage": _usage(comp.usage)})
        return await self._serve_events(request, rec, comp, events)

    # -- embeddings --------------------------------------------------------

    async def _serve_embeddings(
        self, request: web.Request, rec: RecordedRequest, emb: Embeddings
    ) -> web.StreamResponse:
        await asyncio.sleep(emb.delay_s)
        if emb.fail is not None:
            return await self._serve_error(request, rec, emb.fail)
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        raw = req.get("input", "")
        # Token-array inputs are keyed by their JSON text so they stay deterministic.
        inputs = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
        texts = [x if isinstance(x, str) else json.dumps(x) for x in inputs]
        requested = req.get("dimensions")
        dims = requested if isinstance(requested, int) else emb.dims
        as_base64 = req.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = fake_embedding(text, dims)
            encoded: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        if emb.missing:
            data = data[: -emb.missing]
        if emb.reverse:
            data.reverse()
        tokens = emb.usage_tokens
        if tokens is None:
            tokens = sum(max(1, len(t.split())) for t in texts)
        body = {
            "object": "list",
            "data": data,
            "model": rec.model or "fake-embedding",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return await self._send_json(request, rec, body)

    async def _embedding_reply(
        self,
        request: web.Request,
        rec: RecordedRequest,
        emb: Embeddings,
        keys: list[str],
        body: Callable[[list[list[float]], int], Any],
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        """Common path of the vendor embedding routes: delay, scripted failure, vectors."""
        await asyncio.sleep(emb.delay_s)
        if emb.fail is not None:
            return await self._serve_error(request, rec, emb.fail)
        vectors = [fake_embedding(key, emb.dims) for key in keys]
        tokens = emb.usage_tokens if emb.usage_tokens is not None else sum(max(1, len(k.split())) for k in keys)
        payload = body(vectors, tokens)
        data = _dumps(payload) if isinstance(payload, dict) else json.dumps(payload).encode()
        return await self._send_bytes(request, rec, data, headers=headers)

    async def _serve_cohere_embed(
        self, request: web.Request, rec: RecordedRequest, emb: Embeddings
    ) -> web.StreamResponse:
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        images = [str(x) for x in req.get("images") or []]
        keys = images or [str(x) for x in req.get("texts") or []]
        kinds = req.get("embedding_types") or ["float"]

        def body(vectors: list[list[float]], tokens: int) -> JSON:
            billed = {"images": len(images)} if images else {"input_tokens": tokens}
            return {
                "id": f"embed-fake-{rec.seq}",
                "embeddings": dict.fromkeys(kinds, vectors),
                "texts": [] if images else keys,
                "meta": {"api_version": {"version": "2"}, "billed_units": billed},
            }

        return await self._embedding_reply(request, rec, emb, keys, body)

    async def _serve_voyage_multimodal(
        self, request: web.Request, rec: RecordedRequest, emb: Embeddings
    ) -> web.StreamResponse:
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        keys = [
            "\n".join(
                str(part.get("text") or part.get("image_base64") or part.get("image_url") or "")
                for part in item.get("content", [])
            )
            for item in req.get("inputs", [])
        ]

        def body(vectors: list[list[float]], tokens: int) -> JSON:
            return {
                "object": "list",
                "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
                "model": rec.model or "voyage-multimodal-3",
                "usage": {"text_tokens": tokens, "image_pixels": 0, "total_tokens": tokens},
            }

        return await self._embedding_reply(request, rec, emb, keys, body)

    async def _serve_gemini_embed(
        self, request: web.Request, rec: RecordedRequest, emb: Embeddings
    ) -> web.StreamResponse:
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        keys = [
            "".join(str(p.get("text", "")) for p in r.get("content", {}).get("parts", []))
            for r in req.get("requests", [])
        ]

        def body(vectors: list[list[float]], tokens: int) -> JSON:
            return {"embeddings": [{"values": v} for v in vectors]}

        return await self._embedding_reply(request, rec, emb, keys, body)

    async def _serve_bedrock_embed(
        self, request: web.Request, rec: RecordedRequest, emb: Embeddings
    ) -> web.StreamResponse:
        """Bedrock InvokeModel: Titan (one ``inputText``/``inputImage`` per call) or Cohere (``texts``)."""
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        if "texts" in req or "images" in req:
            keys = [str(x) for x in req.get("images") or req.get("texts") or []]

            def cohere(vectors: list[list[float]], tokens: int) -> JSON:
                return {"id": f"embed-fake-{rec.seq}", "embeddings": vectors, "texts": req.get("texts", [])}

            return await self._embedding_reply(request, rec, emb, keys, cohere)
        key = str(req.get("inputText") or req.get("inputImage") or "")

        def titan(vectors: list[list[float]], tokens: int) -> JSON:
            return {"embedding": vectors[0], "inputTextTokenCount": tokens}

        return await self._embedding_reply(request, rec, emb, [key], titan)

    async def _serve_tei_embed(self, request: web.Request, rec: RecordedRequest, emb: Embeddings) -> web.StreamResponse:
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        raw = req.get("inputs", "")
        keys = [raw] if isinstance(raw, str) else [str(x) for x in raw]
        tokens = emb.usage_tokens if emb.usage_tokens is not None else sum(max(1, len(k.split())) for k in keys)
        headers = {"x-compute-tokens": str(tokens), "x-compute-characters": str(sum(map(len, keys)))}

        def body(vectors: list[list[float]], _tokens: int) -> Any:
            return vectors

        return await self._embedding_reply(request, rec, emb, keys, body, headers)

    # -- audio -------------------------------------------------------------

    async def _serve_speech(self, request: web.Request, rec: RecordedRequest, speech: Speech) -> web.StreamResponse:
        audio = fake_audio(speech.size)
        if not speech.chunk_size:
            return await self._send_bytes(request, rec, audio, content_type=speech.content_type)
        resp = web.StreamResponse()
        resp.content_type = speech.content_type
        await self._prepare(request, rec, resp)
        for offset in range(0, len(audio), speech.chunk_size):
            if offset:
                await asyncio.sleep(speech.gap_s)
            await self._write(rec, resp, audio[offset : offset + speech.chunk_size])
        return await self._finish(rec, resp)

    async def _serve_transcription(
        self, request: web.Request, rec: RecordedRequest, tr: Transcription
    ) -> web.StreamResponse:
        fmt = rec.form.get("response_format", "json")
        if fmt in ("text", "srt", "vtt"):
            return await self._send_bytes(request, rec, tr.text.encode(), content_type="text/plain")
        body: JSON = {"text": tr.text}
        if fmt == "verbose_json":
            body = {
                "task": "transcribe",
                "language": tr.language,
                "duration": tr.duration_s,
                **body,
                "segments": [],
            }
        return await self._send_json(request, rec, body)

    # -- moderation --------------------------------------------------------

    async def _serve_moderation(
        self, request: web.Request, rec: RecordedRequest, mod: Moderation
    ) -> web.StreamResponse:
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        raw = req.get("input", "")
        items = [raw] if isinstance(raw, str) else list(raw)
        # Multimodal inputs are {"type": "text", "text": ...} parts; images are ignored.
        texts = [x if isinstance(x, str) else str(x.get("text", "")) for x in items]
        categories = dict.fromkeys((*_MODERATION_CATEGORIES, mod.category), False)
        results = []
        for text in texts:
            flagged = any(word.lower() in text.lower() for word in mod.flag_words)
            results.append(
                {
                    "flagged": flagged,
                    "categories": {**categories, mod.category: flagged},
                    "category_scores": {c: 0.99 if flagged and c == mod.category else 0.0 for c in categories},
                }
            )
        body = {
            "id": f"modr-fake-{rec.seq}",
            "model": rec.model or "omni-moderation-latest",
            "results": results,
        }
        return await self._send_json(request, rec, body)

    # -- rerank ------------------------------------------------------------

    async def _serve_rerank(self, request: web.Request, rec: RecordedRequest, rr: Rerank) -> web.StreamResponse:
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        query = str(req.get("query", ""))
        docs = [d if isinstance(d, str) else str(d.get("text", "")) for d in req.get("documents", [])]
        scores = list(rr.scores) if rr.scores is not None else [rerank_score(query, d) for d in docs]
        # Best first; equal scores keep document order so results are stable.
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))
        top_n = req.get("top_n")
        if isinstance(top_n, int):
            order = order[:top_n]
        if request.path.startswith("/v2/"):
            results: list[JSON] = [{"index": i, "relevance_score": scores[i]} for i in order]
            body: JSON = {
                "id": f"rerank-fake-{rec.seq}",
                "results": results,
                "meta": {
                    "api_version": {"version": "2"},
                    "billed_units": {"search_units": 1},
                },
            }
            return await self._send_json(request, rec, body)
        top_k = req.get("top_k")
        if rr.style == "voyage" and isinstance(top_k, int):
            order = order[:top_k]
        with_docs = req.get("return_documents", True) is not False  # Jina's default
        tokens = len(_words(query)) + sum(len(_words(d)) for d in docs)
        if rr.style == "voyage":
            voyage: JSON = {
                "object": "list",
                "data": [
                    {
                        "index": i,
                        "relevance_score": scores[i],
                        **({"document": docs[i]} if req.get("return_documents") else {}),
                    }
                    for i in order
                ],
                "model": rec.model or "rerank-2",
                "usage": {"total_tokens": tokens},
            }
            return await self._send_json(request, rec, voyage)
        if rr.style == "xinference":
            xinference: JSON = {
                "id": f"rerank-fake-{rec.seq}",
                "results": [
                    {"index": i, "relevance_score": scores[i], "document": {"text": docs[i]} if with_docs else None}
                    for i in order
                ],
                "meta": {
                    "api_version": None,
                    "billed_units": None,
                    "tokens": {"input_tokens": tokens, "output_tokens": 0},
                    "warnings": None,
                },
            }
            return await self._send_json(request, rec, xinference)
        results = [
            {
                "index": i,
                "relevance_score": scores[i],
                **({"document": {"text": docs[i]}} if with_docs else {}),
            }
            for i in order
        ]
        body = {
            "model": rec.model or "fake-rerank",
            "results": results,
            "usage": {"total_tokens": tokens},
        }
        return await self._send_json(request, rec, body)

    async def _serve_tei_rerank(self, request: web.Request, rec: RecordedRequest, rr: Rerank) -> web.StreamResponse:
        """Hugging Face TEI: ``{"query", "texts"}`` -> ``[{"index", "score"}]``, best first."""
        req: JSON = rec.json if isinstance(rec.json, dict) else {}
        query = str(req.get("query", ""))
        texts = [str(t) for t in req.get("texts", [])]
        scores = list(rr.scores) if rr.scores is not None else [rerank_score(query, t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
        with_text = req.get("return_text") is True
        body = [{"index": i, "score": scores[i], **({"text": texts[i]} if with_text else {})} for i in order]
        return await self._send_bytes(request, rec, json.dumps(body).encode())


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

# status -> (error.type, error.code), close to what OpenAI sends.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _error_body(status: int, message: str | None = None) -> JSON:
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {
        "error": {
            "message": message or f"fake upstream error {status}",
            "type": kind,
            "param": None,
            "code": code,
        }
    }


def _dumps(payload: Mapping[str, Any]) -> bytes:
    # Compact separators, like OpenAI's own SSE lines.
    return json.dumps(payload, separators=(",", ":")).encode()


def _usage(usage: tuple[int, int]) -> JSON:
    prompt, completion = usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _wants_usage(req: JSON) -> bool:
    options = req.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _split(text: str, parts: int) -> list[str]:
    """Split ``text`` into ``parts`` contiguous, non-empty pieces (fewer if it is short)."""
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _chat_body(chat: Chat, base: JSON, finish: str) -> JSON:
    message: JSON = {"role": "assistant", "content": None, "refusal": None}
    if chat.content_text is not None:
        message["content"] = chat.content_text
    elif chat.deltas or not chat.tool_calls:
        message["content"] = "".join(chat.deltas)
    if chat.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id or f"call_{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for index, call in enumerate(chat.tool_calls)
        ]
    body: JSON = {
        **base,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
    }
    if chat.usage is not None:
        body["usage"] = _usage(chat.usage)
    return body
