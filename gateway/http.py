"""HTTP plumbing shared by the handlers: bounded body reading, auth, reply shapes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.errors import BadRequest, GatewayError, PayloadTooLarge, Unauthorized, UpstreamError
from gateway.keys import keys_match
from gateway.protocol.envelope import data_frame, error_body, error_frame, ok_body
from gateway.trace import current_trace

log = logging.getLogger("dify_gateway")

# Everything from here on in a path selects the handler (the daemon's URL may carry a prefix).
INNER_PREFIX = "/inner/api/"
STREAM_MEDIA_TYPE = "text/event-stream; charset=utf-8"
JSON_MEDIA_TYPE = "application/json"
INTERNAL_ERROR = "internal gateway error; the gateway log has the details"
# Set in the scope by the server (gateway.server_protocol) when the body deadline passed.
BODY_TIMED_OUT = "dify_gateway.body_timed_out"

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class ClientGone(Exception):
    """The caller closed the connection (or its body deadline passed) before the reply started."""


class DisconnectWatch:
    """Cancels the request's own task when the caller hangs up, while ``active``.

    One small task per request instead of running the work in a second task and racing
    the two (or starlette's task group per streamed reply): the hot paths pay one task.
    The request's work runs where it is, and a hang-up reaches it as a ``CancelledError``
    at the await it is blocked on; ``hung_up()`` tells that cancellation from any other.
    Only once the request body has been read: from then on the server's ``receive`` has
    nothing but the disconnect to report.
    """

    __slots__ = ("_owner", "_task", "active", "gone")

    def __init__(self, receive: Receive) -> None:
        owner = asyncio.current_task()
        assert owner is not None, "DisconnectWatch needs a running task"
        self._owner = owner
        self.active = True
        self.gone = False
        self._task = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self.active:
            # The owner is suspended inside the watched section (this task runs only while
            # it is), so the cancellation lands at an await that the section's handler sees.
            self._owner.cancel()

    def hung_up(self) -> bool:
        """Inside ``except CancelledError``: True if the caller's hang-up caused it (the
        cancellation is then withdrawn); False for any other cancellation (re-raise it)."""
        if not (self.gone and self.active):
            return False
        self.stop()
        return self._owner.uncancel() == 0

    def stop(self) -> None:
        """End the watch; call it before any await that follows the watched section."""
        self.active = False
        self._task.cancel()


async def unless_disconnected(receive: Receive, run: Callable[[], Awaitable[T]]) -> T:
    """``run()``'s result; cancelled (``ClientGone``) if the caller hangs up first, so an
    upstream call nobody waits for any more stops at once instead of running (and being
    paid for) to its end."""
    watch = DisconnectWatch(receive)
    try:
        return await run()
    except asyncio.CancelledError:
        if watch.hung_up():
            raise ClientGone from None
        raise
    finally:
        watch.stop()


def check_inner_api_key(request: Request, expected: bytes) -> None:
    supplied = request.headers.get("x-inner-api-key")
    # Constant-time compare, so response timing does not reveal how much of a guess matched.
    if not keys_match(supplied, expected):
        raise Unauthorized("unauthorized: missing or wrong X-Inner-Api-Key")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body too large: {int(declared)} bytes, the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body too large: over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Not an error of the gateway: the request log line says which it was.
        trace = current_trace.get()
        if trace is not None:
            trace.outcome = "client_timeout" if request.scope.get(BODY_TIMED_OUT) else "client_gone"
        raise ClientGone from None
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
    chunks: AsyncIterator[Any],
    redact: Callable[[str], str],
    upstream_errors_in_stream: bool = False,
    receive: Receive | None = None,
    whole: bool = False,
) -> Response:
    """A framed stream of a service's result chunks, each one frame, whose first chunk is
    awaited before the status is sent. Only here do the chunks become the daemon's frames.

    ``whole``: the reply is known to be short (a non-streamed LLM answer is one frame), so
    every frame is gathered first and sent as one chunk with the stream's end: the same
    bytes on the wire as a stream, in two writes instead of three.

    With ``receive``, a hang-up of the caller stops the stream (and the upstream call
    behind it): before the first frame as ``ClientGone``, later by ending the reply.

    Errors before the first frame propagate (the caller answers non-200) unless
    ``upstream_errors_in_stream`` is set: then a backend failure becomes a 200 stream of one
    error frame, as Dify answers TTS. Errors after the first frame always become one final
    error frame, because the status can no longer change.
    """
    watch = DisconnectWatch(receive) if receive is not None else None
    try:
        # StopAsyncIteration cannot happen: every reply has a chunk.
        first = data_frame(await anext(chunks))
    except asyncio.CancelledError:
        if watch is None or not watch.hung_up():
            if watch is not None:
                watch.stop()
            raise
        await _close(chunks)
        raise ClientGone from None
    except BaseException as exc:
        if watch is not None:
            watch.stop()
        if not isinstance(exc, UpstreamError) or not upstream_errors_in_stream:
            raise
        message = redact(exc.message)
        log.warning("stream failed before it started: %s", message)
        _stream_failed()
        return FramedStream(error_frame(message), None, redact, None)
    if whole:
        return await _gathered(first, chunks, redact, watch)
    return FramedStream(first, chunks, redact, watch)


async def _gathered(
    first: bytes, chunks: AsyncIterator[Any], redact: Callable[[str], str], watch: DisconnectWatch | None
) -> Response:
    """The rest of a short reply's frames, gathered into one ``FramedStream`` chunk."""
    frames = [first]

    async def collect(frame: bytes) -> None:
        frames.append(frame)

    try:
        await _send_frames(chunks, collect, redact)
    except asyncio.CancelledError:
        if watch is None or not watch.hung_up():
            raise
        await _close(chunks)
        raise ClientGone from None
    finally:
        if watch is not None:
            watch.stop()
    return FramedStream(b"".join(frames), None, redact, None)


class FramedStream(StreamingResponse):
    """The daemon's chunked frame stream, sent straight to the server's ``send``.

    Starlette's ``StreamingResponse`` runs every reply in a task group with a second task
    listening for the disconnect; here the request's ``DisconnectWatch`` (already running
    since the first frame was awaited) does that job.
    """

    def __init__(
        self,
        first: bytes,
        chunks: AsyncIterator[Any] | None,
        redact: Callable[[str], str],
        watch: DisconnectWatch | None,
    ) -> None:
        super().__init__(_no_frames(), media_type=STREAM_MEDIA_TYPE)
        self._first = first
        self._chunks = chunks
        self.complete = chunks is None  # every byte is known: nothing more comes from upstream
        self._redact = redact
        self._watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = self._watch
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if self._chunks is None:  # all of it: one chunk with the end of the stream
                await send({"type": "http.response.body", "body": self._first, "more_body": False})
                return
            await send({"type": "http.response.body", "body": self._first, "more_body": True})
            await self._send_rest(self._chunks, send)
        except asyncio.CancelledError:
            if watch is None or not watch.hung_up():
                raise
            _stream_abandoned()
            if self._chunks is not None:
                await _close(self._chunks)
            return  # nobody is listening: no final chunk
        finally:
            if watch is not None:
                watch.stop()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_rest(self, chunks: AsyncIterator[Any], send: Send) -> None:
        async def send_frame(frame: bytes) -> None:
            await send({"type": "http.response.body", "body": frame, "more_body": True})

        await _send_frames(chunks, send_frame, self._redact)


async def _send_frames(
    chunks: AsyncIterator[Any], send_frame: Callable[[bytes], Awaitable[None]], redact: Callable[[str], str]
) -> None:
    """Every chunk as a frame to ``send_frame``; a failure after the first frame is one final error frame."""
    try:
        async for chunk in chunks:
            await send_frame(data_frame(chunk))
    except GatewayError as exc:
        message = redact(exc.message)
        log.warning("stream failed after it started: %s", message)
        _stream_failed()
        await send_frame(error_frame(message))
    except Exception:
        log.exception("unexpected error inside a stream")
        _stream_failed()
        await send_frame(error_frame(INTERNAL_ERROR))


async def _no_frames() -> AsyncIterator[bytes]:
    return
    yield  # an async generator with nothing in it (the frames are sent by __call__)


async def _close(chunks: AsyncIterator[Any]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


def _stream_failed() -> None:
    trace = current_trace.get()
    if trace is not None:
        trace.stream_error = True


def _stream_abandoned() -> None:
    # The caller hung up mid-stream: the 200 already sent does not make it an answered request.
    trace = current_trace.get()
    if trace is not None:
        trace.outcome = "cancelled"
