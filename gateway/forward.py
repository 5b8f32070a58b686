"""Forwarding inner-API calls to the real Dify API, byte for byte.

The daemon sends every ``/inner/api/*`` call to one URL. The gateway answers the model
invocations it has routes for; everything else (tools, apps, parameter extraction,
question classification, encryption, file uploads, app info, unknown paths, and model
calls without a route when passthrough is on) goes through :class:`DifyForwarder` to Dify
as if the daemon had called Dify itself:

- **URL**: ``{api_url}`` + the request path from ``/inner/api/`` on, as it arrived
  (percent-encoding kept) less its dot segments (``.``, ``..``, also percent-encoded) and
  empty segments (``//``), + the query string. A prefix in the gateway URL
  (``/dify/inner/api/...``) is dropped; a prefix in ``api_url`` is kept.
- **Traversal**: a path that leaves ``/inner/api/`` is refused with HTTP 400 and never
  reaches Dify (it would go there with the inner key). It is read the most permissive way a
  server behind the gateway might read it: percent-decoded until nothing changes (double
  encoding), ``%2F`` and backslashes taken as slashes, ``..;x`` as ``..``, full-width dots
  folded (NFKC). Invalid UTF-8 and control characters in the decoded path are refused too.
- **Method and body**: the same method; the body is the ``body`` the caller already read,
  else the request body streamed through as it arrives (its ``Content-Length`` kept, or
  chunked if it came chunked). Limiting the body size is the caller's job.
- **Request headers**: all of them except hop-by-hop ones (``Connection`` and the headers it
  names, ``Keep-Alive``, ``Transfer-Encoding``, ``TE``, ``Trailer``, ``Upgrade``,
  ``Proxy-*``), ``Host`` and ``Expect``. No header is added: no ``User-Agent``, ``Accept`` or
  ``Accept-Encoding`` the client did not send. Names arrive lower-cased (the ASGI server
  normalises them; HTTP/1.1 names are case-insensitive). ``X-Inner-Api-Key`` is replaced by
  ``api_key`` when one is configured (Dify's ``INNER_API_KEY_FOR_PLUGIN`` may differ from the
  key the daemon uses with the gateway), else forwarded as received.
- **Reply**: Dify's status, headers (less hop-by-hop ones, ``Content-Length``, ``Date`` and
  ``Server``: the body goes out chunked and the gateway's server sets its own) and body
  bytes. Bodies are not decompressed: a ``Content-Encoding`` Dify chose for the client's
  ``Accept-Encoding`` is passed on with the bytes it describes. The body is streamed: each
  piece is sent on as soon as it arrives, so length-prefixed frames (tool and app
  invocations) reach the daemon one by one.

Failures are answered in the protocol's shape, ``{"data": null, "error": "..."}``:

- Dify unreachable (refused, reset, DNS, closed before the headers): HTTP 502
  ``cannot reach Dify at <api_url> to forward <path>: <reason>``; a connect timeout or no
  reply headers within ``timeout_s``: the same with HTTP 504. The daemon reports a non-200
  stream reply with its body, and reads the envelope ``error`` of unary replies.
- Dify failing after the headers (connection reset, truncated body, ``timeout_s`` reached):
  the status is already sent, so the body just ends. When the reply is a length-prefixed
  stream (``text/event-stream``, not compressed, 200) and the bytes sent so far end exactly
  at a frame boundary, one final error frame ``{"data": null, "error": "Dify's reply to
  <path> broke off: <reason>"}`` is appended first: without it the daemon would take the
  clean end for a complete, successful stream. Inside a frame nothing is appended (the
  bytes would be read as the rest of that frame); the daemon then fails on the short read.
  Other replies (unary JSON) just end; the daemon fails to decode the truncated JSON.

``timeout_s`` is a deadline for the whole exchange, reply body included (like the daemon's
own ``DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT``, 240 s by default, which the 600 s default
leaves in charge). The upstream connection is released when the body ends, and closed when
the client disconnects or the reply fails, so an abandoned stream does not keep Dify busy.

The configured ``api_key`` and any credentials in ``api_url`` never appear in errors or logs.
Requests use the shared ``HttpClient`` session: its ``HTTP(S)_PROXY``/``NO_PROXY`` handling
(read at start-up) applies, so list Dify's host in ``NO_PROXY`` when a proxy is set for the
model providers (the daemon itself calls Dify without a proxy).
"""

from __future__ import annotations

import logging
import unicodedata
import urllib.parse
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from multidict import CIMultiDict
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from yarl import URL

from gateway.http import INNER_PREFIX, JSON_MEDIA_TYPE
from gateway.http_client import HttpClient, connect_timed_out, transport_reason
from gateway.protocol.envelope import error_body, error_frame
from gateway.protocol.framing import HEADER_SIZE, MAGIC

log = logging.getLogger("dify_gateway")

# RFC 9110 7.6.1 connection-specific headers, plus the old Proxy-Connection and Keep-Alive.
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Set again by aiohttp for the upstream hop (Content-Length only when the body is given).
_REQUEST_DROPPED: Final = _HOP_BY_HOP | {"host", "expect", "x-inner-api-key"}
# The reply goes out chunked, and uvicorn writes its own Date and Server headers.
_RESPONSE_DROPPED: Final = _HOP_BY_HOP | {"content-length", "date", "server"}
# Headers aiohttp would otherwise add to every request.
_NO_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_MAX_REASON: Final = 200
# Percent-decoding rounds before a path still changing is taken for an attack (%25252e...).
_DECODE_ROUNDS: Final = 3
_DOT_SEGMENTS: Final = frozenset({".", ".."})


class DifyForwarder:
    """Proxies inner-API requests to ``api_url`` (see the module docstring for the rules)."""

    def __init__(
        self,
        api_url: str,
        http: HttpClient,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._base = api_url.rstrip("/")
        self._http = http
        self._api_key = api_key or None
        self._timeout_s = timeout_s
        self._connect_timeout_s = min(connect_timeout_s, timeout_s)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=self._connect_timeout_s)
        parsed = URL(self._base)
        # What errors and logs name: the URL without credentials.
        self._shown_base = str(parsed.with_user(None)) if parsed.user or parsed.password else self._base
        self._secrets = [s for s in (api_key, parsed.password, parsed.raw_password) if s]

    async def forward(self, request: Request, body: bytes | None = None) -> Response:
        """Dify's reply to this request, streamed; see the module docstring."""
        target = _inner_target(request.scope)
        if target is None:
            path = request.scope["path"]
            return _envelope_error(f"cannot forward {path} to Dify: not an inner-API path", 404)
        normalised = _normalised(target)
        if normalised is None:
            shown = target if len(target) <= _MAX_REASON else target[:_MAX_REASON] + "..."
            return _envelope_error(f"cannot forward {shown} to Dify: the path leaves {INNER_PREFIX}", 400)
        target = normalised
        query: bytes = request.scope.get("query_string", b"")
        url = URL(self._base + target + ("?" + query.decode("latin-1") if query else ""), encoded=True)
        shown_path = target.partition("?")[0]
        headers = self._request_headers(request, streamed=body is None)
        data: bytes | AsyncIterator[bytes] | None = body
        if body is None and _has_body(request):
            data = request.stream()
        try:
            upstream = await self._http.session().request(
                request.method,
                url,
                headers=headers,
                data=data,
                timeout=self._timeout,
                allow_redirects=False,
                auto_decompress=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
                proxy=self._http.proxy_for(self._base),
            )
        except TimeoutError as exc:
            if connect_timed_out(exc):
                reason = f"no connection within {self._connect_timeout_s:g} s"
            else:
                reason = f"no reply within {self._timeout_s:g} s"
            return self._unreachable(shown_path, reason, 504)
        except (aiohttp.ClientError, ConnectionError) as exc:
            if isinstance(exc.__cause__, ClientDisconnect):
                return _client_left(shown_path)
            return self._unreachable(shown_path, self._describe(exc), 502)
        except ClientDisconnect:
            return _client_left(shown_path)
        tracker = _FrameTracker() if _is_framed_stream(upstream) else None
        return _ForwardedReply(
            upstream,
            self._relay(upstream, shown_path, tracker),
            [(k, v) for k, v in upstream.raw_headers if k.decode("latin-1").lower() not in _RESPONSE_DROPPED],
        )

    def _request_headers(self, request: Request, streamed: bool) -> CIMultiDict[str]:
        dropped = set(_REQUEST_DROPPED)
        if not streamed:
            dropped.add("content-length")
        # Headers the Connection header names are hop-by-hop as well.
        for value in request.headers.getlist("connection"):
            dropped.update(token.strip().lower() for token in value.split(","))
        headers: CIMultiDict[str] = CIMultiDict()
        for raw_name, raw_value in request.headers.raw:
            name = raw_name.decode("latin-1")
            if name.lower() not in dropped:
                headers.add(name, raw_value.decode("latin-1"))
        key = self._api_key or request.headers.get("x-inner-api-key")
        if key is not None:
            headers["X-Inner-Api-Key"] = key
        return headers

    async def _relay(
        self, upstream: aiohttp.ClientResponse, path: str, tracker: _FrameTracker | None
    ) -> AsyncIterator[bytes]:
        completed = False
        reason = ""
        try:
            try:
                async for chunk in upstream.content.iter_any():
                    if tracker is not None:
                        tracker.feed(chunk)
                    yield chunk
                completed = True
            except TimeoutError:
                reason = f"no complete reply within {self._timeout_s:g} s"
            except (aiohttp.ClientError, ConnectionError) as exc:
                reason = self._describe(exc)
            if reason:
                message = f"Dify's reply to {path} broke off: {reason}"
                at_boundary = tracker is not None and tracker.at_boundary
                log.warning("%s (%s)", message, "error frame appended" if at_boundary else "reply cut short")
                if at_boundary:
                    yield error_frame(message)
        finally:
            # Released for reuse after a complete body; otherwise (failure, client gone) closed.
            if completed:
                upstream.release()
            else:
                upstream.close()

    def _unreachable(self, path: str, reason: str, status: int) -> Response:
        message = f"cannot reach Dify at {self._shown_base} to forward {path}: {reason}"
        log.warning("%s", message)
        return _envelope_error(message, status)

    def _describe(self, exc: BaseException) -> str:
        return transport_reason(exc, self._secrets)


class _ForwardedReply(StreamingResponse):
    """A streamed reply that closes its upstream response however the sending ends."""

    def __init__(
        self, upstream: aiohttp.ClientResponse, body: AsyncIterator[bytes], raw_headers: list[tuple[bytes, bytes]]
    ) -> None:
        super().__init__(body, status_code=upstream.status)
        # Set directly: repeated headers (Set-Cookie) and their exact bytes are kept.
        self.raw_headers = raw_headers
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A no-op after a complete relay (already released). Otherwise the relay was
            # cancelled or abandoned mid-stream: drop the upstream connection now rather than
            # when the generator is garbage-collected.
            self._upstream.close()


class _FrameTracker:
    """Follows length-prefixed frames (spec 2.5) across arbitrary chunk splits, only to
    know whether the bytes so far end at a frame boundary; ``framed`` turns false for
    good at the first header that is not a frame header."""

    __slots__ = ("_header", "_payload_left", "framed")

    def __init__(self) -> None:
        self._header = bytearray()
        self._payload_left = 0
        self.framed = True

    @property
    def at_boundary(self) -> bool:
        return self.framed and not self._header and self._payload_left == 0

    def feed(self, chunk: bytes) -> None:
        at, size = 0, len(chunk)
        while at < size and self.framed:
            if self._payload_left:
                step = min(self._payload_left, size - at)
                self._payload_left -= step
                at += step
                continue
            step = min(HEADER_SIZE - len(self._header), size - at)
            self._header += chunk[at : at + step]
            at += step
            if len(self._header) == HEADER_SIZE:
                header = self._header
                if header[0] != MAGIC or int.from_bytes(header[2:4], "little") != 10:
                    self.framed = False
                self._payload_left = int.from_bytes(header[4:8], "little")
                self._header = bytearray()


def _inner_target(scope: Scope) -> str | None:
    """The request path from ``/inner/api/`` on, as sent (raw, still percent-encoded)."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        text = raw.decode("latin-1").partition("?")[0]
        at = text.find(INNER_PREFIX)
        if at >= 0:
            return text[at:]
    path: str = scope["path"]
    at = path.find(INNER_PREFIX)
    return urllib.parse.quote(path[at:], safe="/%:@!$&'()*+,;=~") if at >= 0 else None


def _normalised(target: str) -> str | None:
    """``target`` (``/inner/api/...``, raw) without dot or empty segments, still percent-encoded;
    None when any reading of it leaves ``/inner/api/``."""
    rest = target[len(INNER_PREFIX) :]
    if _escapes(rest):
        return None
    kept: list[str] = []
    raw_segments = rest.split("/")
    for raw in raw_segments:
        segment = urllib.parse.unquote(raw)
        if segment == ".." and kept:
            kept.pop()
        elif raw and segment not in _DOT_SEGMENTS:
            kept.append(raw)
    # A trailing slash (or a final dot segment, RFC 3986 5.2.4) keeps the path a "directory".
    trailing = bool(kept) and urllib.parse.unquote(raw_segments[-1]) in {"", *_DOT_SEGMENTS}
    normalised = "/".join(kept) + ("/" if trailing else "")
    # Checked again: a ".." that removed "a%2Fb" here removes only "b" for a server that
    # decodes %2F, so what is left could climb for it ("a%2Fb/../..%2F.." -> "..%2F..").
    return None if _escapes(normalised) else INNER_PREFIX + normalised


def _escapes(rest: str) -> bool:
    """Whether ``rest`` (the raw path after ``/inner/api/``) climbs above it, or is too odd
    to tell, read as permissively as any server or proxy behind the gateway might read it."""
    text = rest
    for _ in range(_DECODE_ROUNDS):
        try:
            decoded = urllib.parse.unquote(text, errors="strict")
        except UnicodeDecodeError:
            return True  # e.g. the overlong %c0%ae, a dot to some old decoders
        if decoded == text:
            break
        text = decoded
    else:
        return True  # still decoding after several rounds: nobody sends that honestly
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return True
    depth = 0
    for segment in text.replace("\\", "/").split("/"):
        # Path parameters ("..;x" is ".." to some servers) and full-width dots (NFKC).
        segment = unicodedata.normalize("NFKC", segment.partition(";")[0])
        if segment == "..":
            depth -= 1
            if depth < 0:
                return True
        elif segment not in ("", "."):
            depth += 1
    return False


def _client_left(path: str) -> Response:
    # The client left while its request body was being sent on: nobody reads this reply.
    log.info("the client disconnected while its request to %s was being forwarded", path)
    return _envelope_error(f"the client disconnected before its request to {path} was forwarded", 400)


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


def _is_framed_stream(upstream: aiohttp.ClientResponse) -> bool:
    encoding = upstream.headers.get("content-encoding", "identity").strip().lower()
    return upstream.status == 200 and upstream.content_type == "text/event-stream" and encoding == "identity"


def _envelope_error(message: str, status: int) -> Response:
    return Response(error_body(message), status_code=status, media_type=JSON_MEDIA_TYPE)
