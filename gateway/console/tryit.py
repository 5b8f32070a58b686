"""The try-it panel: a simple form turned into the daemon's request, run through the app.

The request goes through the gateway's public ASGI entry exactly as the plugin daemon's
would (inner API key, routing, retries, metrics, the request log line), in process. Its reply is read
the way the daemon reads it (length-prefixed frames for streams, one JSON envelope
otherwise) and passed on to the browser as NDJSON events, each stamped with the
milliseconds since the try started, so the page shows a stream as it arrives.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message

from gateway.config import RouteConfig
from gateway.endpoints import BY_MODEL_TYPE
from gateway.errors import BadRequest
from gateway.http import parse_model
from gateway.protocol.framing import FrameDecodeError, FrameDecoder
from gateway.routing import normalize_provider
from gateway.services import Services

log = logging.getLogger("dify_gateway")

# The model types of gateway.endpoints a form can be made for (not structured output or summary).
TryType = Literal[
    "llm", "text-embedding", "multimodal-embedding", "rerank", "multimodal-rerank", "tts", "speech2text", "moderation"
]
TENANT = "console"
MAX_INPUTS = 256
_GLOB = frozenset("*?[")
_CLASS = re.compile(r"\[(!?)([^\]]*)\]")
# How long a try whose browser went away may take to wind down before it is cancelled.
_WIND_DOWN_S = 5.0


class TryInput(BaseModel):
    """What the page sends (``POST /console/api/try``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: TryType
    route: str | None = None  # a route label: provider and model default to what it matches
    provider: str | None = None
    model: str | None = None
    tenant_id: str | None = None
    text: str = ""  # the prompt, the texts (one per line), the query, or what to speak or check
    system: str = ""  # llm: an optional system message
    stream: bool = True  # llm
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)  # llm: None leaves the backend's default
    docs: list[str] | str = Field(default_factory=list)  # rerank: a list, or one per line
    input_type: Literal["query", "document"] = "query"  # embeddings
    voice: str = ""  # tts
    audio_base64: str | None = None  # speech2text: the audio file's bytes


@dataclass(frozen=True, slots=True)
class TryPlan:
    path: str  # /inner/api/invoke/<type>
    body: dict[str, Any]
    route: str | None  # the label of the route that will serve it (None: no route matches)


def plan_try(services: Services, data: dict[str, Any]) -> TryPlan:
    """The daemon's request for the form, or ``BadRequest`` with what to fix."""
    form = parse_model(TryInput, data)
    endpoint = BY_MODEL_TYPE[form.type]
    route = _route(services, form)
    provider = (form.provider or "").strip() or (_example(route.match.provider, "openai") if route else "openai")
    model = (form.model or "").strip() or (_example(route.match.model, "any") if route else "any")
    tenant = (form.tenant_id or "").strip() or (route.match.tenants[0] if route and route.match.tenants else TENANT)
    body: dict[str, Any] = {
        "tenant_id": tenant,
        "user_id": TENANT,
        "type": endpoint.invoke_type,
        "provider": normalize_provider(provider),
        "model": model,
        **_fields(form),
    }
    resolution = services.routes.resolve(form.type, provider, model, tenant)
    return TryPlan(f"/inner/api/{endpoint.path}", body, resolution.route_label if resolution else None)


def _route(services: Services, form: TryInput) -> RouteConfig | None:
    if not form.route:
        return None
    for config, described in zip(services.config.routes, services.routes.describe(), strict=True):
        if described["route"] == form.route:
            if form.type not in config.match.types:
                raise BadRequest(f"route {form.route!r} does not serve {form.type} (it serves {config.match.types})")
            return config
    raise BadRequest(f"no route named {form.route!r}")


def _fields(form: TryInput) -> dict[str, Any]:
    text = form.text.strip()
    if form.type == "speech2text":
        return {"file": _audio(form.audio_base64).hex()}
    if not text:
        raise BadRequest("text is empty: enter what to send")
    if form.type == "llm":
        messages = [{"role": "system", "content": form.system}] if form.system.strip() else []
        messages.append({"role": "user", "content": text})
        return {
            "mode": "chat",
            "completion_params": {} if form.temperature is None else {"temperature": form.temperature},
            "prompt_messages": messages,
            "tools": [],
            "stop": [],
            "stream": form.stream,
        }
    if form.type in ("text-embedding", "multimodal-embedding"):
        lines = _lines(text, "text")
        if form.type == "text-embedding":
            return {"texts": lines, "input_type": form.input_type}
        return {"documents": [_document(line) for line in lines], "input_type": form.input_type}
    if form.type in ("rerank", "multimodal-rerank"):
        docs = _lines(form.docs, "docs") if isinstance(form.docs, str) else [d for d in form.docs if d.strip()]
        if not docs:
            raise BadRequest("docs is empty: enter the documents to rank, one per line")
        if len(docs) > MAX_INPUTS:
            raise BadRequest(f"too many docs: {len(docs)}, at most {MAX_INPUTS}")
        if form.type == "rerank":
            return {"query": text, "docs": docs, "score_threshold": 0.0, "top_n": 0}
        return {"query": _document(text), "docs": [_document(d) for d in docs], "score_threshold": 0.0, "top_n": 0}
    if form.type == "tts":
        return {"content_text": text, "voice": form.voice}
    return {"text": text}  # moderation


def _lines(text: str, name: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_INPUTS:
        raise BadRequest(f"too many lines in {name}: {len(lines)}, at most {MAX_INPUTS}")
    return lines


def _document(text: str) -> dict[str, str]:
    return {"content": text, "content_type": "text"}


def _audio(encoded: str | None) -> bytes:
    if not encoded:
        raise BadRequest("audio_base64 is empty: choose an audio file")
    if encoded.startswith("data:"):  # a data URL as FileReader gives it
        encoded = encoded.partition(",")[2]
    try:
        audio = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("audio_base64 is not valid base64") from None
    if not audio:
        raise BadRequest("audio_base64 is empty: choose an audio file")
    return audio


def _example(pattern: str, fallback: str) -> str:
    """A name the glob ``pattern`` matches (its literal parts), or ``fallback``."""
    if not _GLOB & set(pattern):
        return pattern
    segments = []
    for segment in pattern.split("/"):
        literal = _CLASS.sub(lambda m: "x" if m.group(1) or not m.group(2) else m.group(2)[0], segment)
        literal = literal.replace("*", "").replace("?", "x")
        segments.append(literal or fallback)
    example = "/".join(segments)
    return example if fnmatch.fnmatchcase(example, pattern) else fallback


# --- running ----------------------------------------------------------------------------


def _json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {"not_json": payload[:2000].decode("utf-8", errors="replace")}


def _shown(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the page shows it: the audio's hex stands in by its size."""
    if "file" in body:
        return {**body, "file": f"<{len(body['file']) // 2} bytes of audio as hex>"}
    return body


async def run_try(app: ASGIApp, plan: TryPlan, inner_key: bytes) -> AsyncIterator[bytes]:
    """NDJSON events: request, response, frame... or envelope, end (and error on a failure)."""
    started = time.perf_counter()

    def event(kind: str, **fields: Any) -> bytes:
        fields = {"event": kind, "t_ms": round((time.perf_counter() - started) * 1000, 1), **fields}
        return orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"

    body = orjson.dumps(plan.body)
    request_id = "console-" + os.urandom(6).hex()
    messages: asyncio.Queue[Message | None] = asyncio.Queue()
    gone = asyncio.Event()
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.put_nowait(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": plan.path,
        "raw_path": plan.path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-inner-api-key", inner_key),
            (b"x-request-id", request_id.encode()),
        ],
        "client": ("127.0.0.1", 0),
        "server": ("console", 0),
        "state": {},
        "extensions": {},
    }

    async def serve() -> None:
        try:
            await app(scope, receive, send)
        finally:
            messages.put_nowait(None)

    task = asyncio.create_task(serve())
    decoder: FrameDecoder | None = None
    unary = bytearray()
    status = frames = size = 0
    first_byte_ms: float | None = None
    try:
        yield event("request", path=plan.path, route=plan.route, request_id=request_id, body=_shown(plan.body))
        while (message := await messages.get()) is not None:
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in message.get("headers", [])}
                content_type = headers.get("content-type", "")
                if content_type.startswith("text/event-stream"):
                    decoder = FrameDecoder()
                yield event(
                    "response",
                    status=status,
                    content_type=content_type,
                    stream=decoder is not None,
                    target=headers.get("x-dify-gateway-target"),
                    attempts=int(headers.get("x-dify-gateway-attempts", "0")),
                    overhead_ms=float(headers["x-dify-gateway-overhead-ms"])
                    if "x-dify-gateway-overhead-ms" in headers
                    else None,
                )
            elif message["type"] == "http.response.body":
                chunk: bytes = message.get("body", b"")
                if not chunk:
                    continue
                if first_byte_ms is None:
                    first_byte_ms = round((time.perf_counter() - started) * 1000, 1)
                size += len(chunk)
                if decoder is None:
                    unary += chunk
                    continue
                try:
                    payloads = decoder.feed(chunk)
                except FrameDecodeError as exc:
                    yield event("error", message=f"the reply's frames do not decode: {exc}")
                    decoder = FrameDecoder()  # nothing more can be read from this stream
                    continue
                for payload in payloads:
                    yield event("frame", index=frames, frame=_json(payload))
                    frames += 1
        await task
        if decoder is None:
            yield event("envelope", envelope=_json(bytes(unary)) if unary else None)
        else:
            try:
                decoder.close()
            except FrameDecodeError as exc:
                yield event("error", message=f"the stream ended inside a frame: {exc}")
        total_ms = round((time.perf_counter() - started) * 1000, 1)
        yield event("end", status=status, frames=frames, bytes=size, first_byte_ms=first_byte_ms, total_ms=total_ms)
    except Exception:
        log.exception("console try-it failed")
        yield event("error", message="internal gateway error; the gateway log has the details")
    finally:
        if not task.done():  # the browser went away: the request sees its caller hang up
            gone.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), _WIND_DOWN_S)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:
                log.debug("a cancelled try-it ended with an error", exc_info=True)
