"""HTTP plumbing shared by the handlers: bounded body reading, auth, reply shapes."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from gateway.errors import BadRequest, GatewayError, PayloadTooLarge, Unauthorized, UpstreamError
from gateway.protocol.envelope import error_body, error_frame, ok_body
from gateway.trace import current_trace

log = logging.getLogger("dify_gateway")

# Everything from here on in a path selects the handler (the daemon's URL may carry a prefix).
INNER_PREFIX = "/inner/api/"
STREAM_MEDIA_TYPE = "text/event-stream; charset=utf-8"
JSON_MEDIA_TYPE = "application/json"
INTERNAL_ERROR = "internal gateway error; the gateway log has the details"

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class ClientGone(Exception):
    """The caller closed the connection before the reply started."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result; cancelled (``ClientGone``) if the caller hangs up first.

    Only once the request body has been read: from then on the server's ``receive`` has
    nothing but the disconnect to report. So an upstream call nobody waits for any more
    stops at once instead of running (and being paid for) to its end.
    """
    work = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    finally:
        watch.cancel()
    if work.done():
        return work.result()
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    raise ClientGone


def check_inner_api_key(request: Request, expected: bytes) -> None:
    supplied = request.headers.get("x-inner-api-key")
    # Constant-time compare, so response timing does not reveal how much of a guess matched.
    if not supplied or not hmac.compare_digest(supplied.encode(), expected):
        raise Unauthorized("unauthorized: missing or wrong X-Inner-Api-Key")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body too large: {int(declared)} bytes, the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body too large: over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest("invalid payload: the request body is empty")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON body: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"invalid payload: expected a JSON object, got a JSON {type(value).__name__}")
    return value


def parse_model(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False)[:5]:
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{loc}: {err['msg']}")
        raise BadRequest("invalid payload: " + "; ".join(problems)) from None


def envelope_response(data: Any) -> Response:
    return Response(ok_body(data), media_type=JSON_MEDIA_TYPE)


def unary_error_response(exc: GatewayError, redact: Callable[[str], str]) -> Response:
    """A unary failure: the daemon reads only the envelope, so backend errors keep HTTP 200
    (as Dify answers); request errors keep their status for other clients."""
    status = 200 if isinstance(exc, UpstreamError) else exc.status
    return Response(error_body(redact(exc.message)), status_code=status, media_type=JSON_MEDIA_TYPE)


def error_response(exc: GatewayError, status: int | None = None) -> Response:
    return Response(error_body(exc.message), status_code=status or exc.status, media_type=JSON_MEDIA_TYPE)


def internal_error_response() -> Response:
    return Response(error_body(INTERNAL_ERROR), status_code=500, media_type=JSON_MEDIA_TYPE)


async def stream_response(
    frames: AsyncIterator[bytes],
    redact: Callable[[str], str],
    upstream_errors_in_stream: bool = False,
    receive: Receive | None = None,
) -> Response:
    """A framed stream whose first frame is awaited before the status is sent.

    With ``receive``, the wait for the first frame ends (``ClientGone``) if the caller hangs
    up; once streaming, the server notices that itself and stops the frames.

    Errors before the first frame propagate (the caller answers non-200) unless
    ``upstream_errors_in_stream`` is set: then a backend failure becomes a 200 stream of one
    error frame, as Dify answers TTS. Errors after the first frame always become one final
    error frame, because the status can no longer change.
    """
    try:
        # StopAsyncIteration cannot happen: every reply has a frame.
        first = await (anext(frames) if receive is None else unless_disconnected(receive, anext(frames)))
    except ClientGone:
        await _close(frames)
        raise
    except UpstreamError as exc:
        if not upstream_errors_in_stream:
            raise
        message = redact(exc.message)
        log.warning("stream failed before it started: %s", message)
        _stream_failed()
        return StreamingResponse(_one(error_frame(message)), media_type=STREAM_MEDIA_TYPE)
    return StreamingResponse(_continue(first, frames, redact), media_type=STREAM_MEDIA_TYPE)


async def _close(frames: AsyncIterator[bytes]) -> None:
    aclose = getattr(frames, "aclose", None)
    if aclose is not None:
        await aclose()


async def _one(frame: bytes) -> AsyncIterator[bytes]:
    yield frame


async def _continue(first: bytes, frames: AsyncIterator[bytes], redact: Callable[[str], str]) -> AsyncIterator[bytes]:
    yield first
    try:
        async for frame in frames:
            yield frame
    except GatewayError as exc:
        message = redact(exc.message)
        log.warning("stream failed after it started: %s", message)
        _stream_failed()
        yield error_frame(message)
    except Exception:
        log.exception("unexpected error inside a stream")
        _stream_failed()
        yield error_frame(INTERNAL_ERROR)


def _stream_failed() -> None:
    trace = current_trace.get()
    if trace is not None:
        trace.stream_error = True
