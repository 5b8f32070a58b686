"""Native chat and embeddings for OpenAI-compatible upstreams: one shared aiohttp session, SSE lines parsed
with orjson and read straight into ``ChatEvent`` (``openai_wire``), no per-chunk objects beyond the event itself.

litellm costs ~10 ms of CPU per call and 1.4-2.9 ms per streamed chunk; this path costs a
small fraction of that. It serves chat-mode and text embedding calls to targets ``native_openai`` selects
(``openai/...`` and ``hosted_vllm/...`` unless the target says ``native: false`` or needs
litellm-only settings); everything else goes through litellm, behind the same interface.

Wire: ``POST {api_base}/chat/completions`` with ``Authorization: Bearer``; streams are SSE
``data: {chunk}`` lines ending with ``data: [DONE]``, usage in a last chunk with no choices
(``stream_options.include_usage``). ``POST {api_base}/embeddings`` with
``encoding_format: base64`` (float32 little-endian: a fraction of the JSON float cost).
"""

from __future__ import annotations

import binascii
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.adapters.base import (
    ChatAdapter,
    ChatCall,
    ChatEvent,
    EmbeddingCall,
    EmbeddingOutput,
)
from gateway.adapters.litellm_common import call_params
from gateway.adapters.litellm_embedding import (
    PARAMS as EMBEDDING_PARAMS,
    ordered_vectors,
    provider_batch_limit,
    reported_tokens,
)
from gateway.adapters.openai_wire import WireError, chunk_event, completion_event, merged
from gateway.errors import BadRequest, UpstreamUnavailable
from gateway.http_client import HttpClient, Response, request_timeout, status_error, upstream_errors
from gateway.routing import Target
from gateway.trace import current_trace

OPENAI_BASE = "https://api.openai.com/v1"


def native_openai(target: Target) -> bool:
    """Whether the native client serves this target's chat and embedding calls (its backend,
    resolved with the target: see gateway.config.backends)."""
    return target.backend.client("llm") == "openai"


def _base(target: Target) -> str:
    api_base = target.config.api_base
    if api_base:
        return api_base.rstrip("/")
    if target.model.startswith("openai/"):
        return OPENAI_BASE
    raise UpstreamUnavailable(f"target {target.model!r} needs an api_base for the native OpenAI-compatible client")


class OpenAICompatChat:
    """The native client; ``fallback`` (litellm) serves what it does not (completion mode)."""

    def __init__(self, http: HttpClient, fallback: ChatAdapter) -> None:
        self._http = http
        self._fallback = fallback

    def chat(self, call: ChatCall) -> AsyncIterator[ChatEvent]:
        if call.prompt is not None:  # completion mode: litellm's text-completion support
            return self._fallback.chat(call)
        return self._chat(call)

    def _request(self, call: ChatCall) -> tuple[str, bytes, dict[str, str]]:
        target = call.target
        body: dict[str, Any] = {"model": target.model_name, "messages": call.messages, **call.params}
        if call.tools:
            body["tools"] = call.tools
            if call.tool_choice is not None:
                body["tool_choice"] = call.tool_choice
        if call.stop:
            body["stop"] = call.stop
        if call.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return f"{_base(target)}/chat/completions", orjson.dumps(body), _headers(target)

    async def _chat(self, call: ChatCall) -> AsyncIterator[ChatEvent]:
        where = call.context.describe(call.target)
        url, body, headers = self._request(call)
        secret = call.target.config.api_key.get_secret_value() if call.target.config.api_key else None
        timeout = request_timeout(call.timeout_s, connect_s=call.connect_timeout_s)
        with upstream_errors(where, secrets=(secret,)):
            session = self._http.session()
            async with session.post(
                url, data=body, headers=headers, timeout=timeout, proxy=self._http.proxy_for(url)
            ) as resp:
                if resp.status >= 300:
                    raise status_error(resp.status, await resp.read(), resp.headers, where, secret)
                if not call.stream:
                    yield _whole(await resp.read(), where)
                    return
                async for event in _sse_events(resp, where):
                    yield event


def _headers(target: Target) -> dict[str, str]:
    cfg = target.config
    headers = {"Content-Type": "application/json", **cfg.headers}
    if cfg.api_key is not None:
        headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
    if cfg.organization:
        headers["OpenAI-Organization"] = cfg.organization
    trace = current_trace.get()
    if trace is not None and trace.traceparent:
        headers["traceparent"] = trace.traceparent  # the caller's trace continues upstream
    return headers


class OpenAICompatEmbedding:
    """Text embeddings from ``/embeddings``; other inputs are refused as litellm's path would."""

    def __init__(self, http: HttpClient) -> None:
        self._http = http

    def max_batch(self, target: Target) -> int:
        return provider_batch_limit(target.model)  # the same provider limits as through litellm

    async def embed(self, call: EmbeddingCall) -> EmbeddingOutput:
        if not call.inputs:
            return EmbeddingOutput(vectors=[], tokens=None)
        target = call.target
        where = call.context.describe(target)
        for position, item in enumerate(call.inputs):
            if item.kind != "text":
                raise BadRequest(f"target {target.model!r} cannot embed {item.kind} inputs (input {position}; {where})")
        body = {
            "model": target.model_name,
            "input": [item.content for item in call.inputs],
            "encoding_format": "base64",
            **call_params(target, EMBEDDING_PARAMS),
        }
        secret = target.config.api_key.get_secret_value() if target.config.api_key else None
        reply = await self._http.post_json(
            f"{_base(target)}/embeddings",
            body,
            timeout_s=call.timeout_s,
            where=where,
            headers=_headers(target),
            secret=secret,
        )
        data = reply.data.get("data") if isinstance(reply.data, dict) else None
        try:
            vectors = ordered_vectors(data, len(call.inputs))
        except (ValueError, binascii.Error) as exc:
            raise UpstreamUnavailable(f"malformed reply from upstream ({where}): {exc}") from exc
        usage = reply.data.get("usage") if isinstance(reply.data, dict) else None
        return EmbeddingOutput(vectors=vectors, tokens=reported_tokens(_Usage(usage)))


class _Usage:
    """``reported_tokens`` reads attributes, as on litellm's response objects."""

    def __init__(self, usage: Any) -> None:
        self.usage = usage


def _whole(body: bytes, where: str) -> ChatEvent:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamUnavailable(f"malformed reply from upstream ({where}): not JSON") from exc
    choices = data.get("choices") if isinstance(data, dict) else None
    # An object whose first choice (if any) is an object; openai_wire reads the rest.
    if not isinstance(data, dict) or (choices and not (isinstance(choices, list) and isinstance(choices[0], dict))):
        raise UpstreamUnavailable(f"malformed reply from upstream ({where}): not a chat completion")
    try:
        return completion_event(data)
    except WireError as exc:
        raise UpstreamUnavailable(f"malformed reply from upstream ({where}): {exc}") from exc


# A line the upstream never ends is refused rather than buffered without bound.
MAX_SSE_LINE = 8 << 20
# This many chunks or more waiting in one read are a backlog: they go out as one event (one frame).
MERGE_FROM = 8


class _Done:
    """``data: [DONE]``: the stream's end."""


DONE = _Done()


def _line_event(line: bytes, where: str) -> ChatEvent | _Done | None:
    """One SSE line read: an event, the end, or None (blank separators, comments, event names, empty chunks)."""
    line = line.strip()
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return DONE
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise UpstreamUnavailable(f"malformed stream from upstream ({where}): a chunk is not JSON") from exc
    if not isinstance(chunk, dict):
        raise UpstreamUnavailable(f"malformed stream from upstream ({where}): a chunk is not an object")
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise UpstreamUnavailable(f"upstream failed mid-stream ({where}): {str(message)[:200]}")
    try:
        return chunk_event(chunk)
    except WireError as exc:
        raise UpstreamUnavailable(f"malformed stream from upstream ({where}): {exc}") from exc


def _line_too_long(where: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(f"malformed stream from upstream ({where}): a line over {MAX_SSE_LINE} bytes")


def _paced(batch: list[ChatEvent]) -> list[ChatEvent]:
    """The events of one read as they go out: one each, or one in all for a backlog."""
    return [merged(batch)] if len(batch) >= MERGE_FROM else batch


async def _sse_events(resp: Response, where: str) -> AsyncIterator[ChatEvent]:
    """Events from the SSE body; a stream cut before ``[DONE]`` with no finish reason raises.

    A backlog is merged: when ``MERGE_FROM`` or more chunks are already waiting at one read
    (a fast upstream, or a gateway that fell behind), they become one event, so one frame,
    instead of a burst of small frames that could overrun the daemon's 1,024-frame channel
    (it drops overflow silently). The text, tool-call pieces and usage are the same, in the
    same order. Fewer waiting chunks go out one event each, as the upstream sent them.
    """
    finished = False
    pending: list[bytes] = []  # the pieces of a line not finished yet (joined once its newline comes)
    pending_bytes = 0
    content = resp.content
    while True:
        data = await content.readany()
        if not data:
            break
        if b"\n" not in data:
            pending.append(data)
            pending_bytes += len(data)
            if pending_bytes > MAX_SSE_LINE:
                raise _line_too_long(where)
            continue
        if pending:
            data = b"".join((*pending, data))
            pending.clear()
        lines = data.split(b"\n")
        tail = lines.pop()
        batch: list[ChatEvent] = []
        done = False
        try:
            for line in lines:
                if len(line) > MAX_SSE_LINE:
                    raise _line_too_long(where)
                event = _line_event(line, where)
                if isinstance(event, _Done):
                    done = True
                    break
                if event is not None:
                    batch.append(event)
        except UpstreamUnavailable:
            for event in _paced(batch):  # what came before the fault still goes out, then the error
                yield event
            raise
        for event in _paced(batch):
            finished = finished or bool(event.finish_reason)
            yield event
        if done:
            return
        if tail:
            pending.append(tail)
        pending_bytes = len(tail)
        if pending_bytes > MAX_SSE_LINE:
            raise _line_too_long(where)
    if pending:  # a last line with no newline
        last = _line_event(b"".join(pending), where)
        if isinstance(last, _Done):
            return
        if last is not None:
            finished = finished or bool(last.finish_reason)
            yield last
    if not finished:
        raise UpstreamUnavailable(f"upstream stream ended before the answer was finished ({where})")
