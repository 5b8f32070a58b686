"""The HTTP/1.1 connection: uvicorn's httptools protocol with limits on what a client may cost.

uvicorn bounds neither the size of a request's headers nor the time a client may take to
send them or its body: a client can hold a connection, and the memory and CPU behind it,
as long as it likes. This subclass adds, per connection:

- **header size and count** (``server.max_header_bytes``, ``server.max_headers``): over
  either, a 431 at once. The bytes are counted as they arrive, before httptools and
  uvicorn join the pieces of a header (both by ``bytes +=``, quadratic in the header's
  size), so a huge header costs at most one socket read past the limit;
- **a header deadline** (``server.header_timeout_s``): from the moment a connection opens
  (and from each later request's first byte) to the end of the headers; then a 408, or a
  silent close if nothing was sent at all;
- **a body deadline** (``server.body_timeout_s``): from the end of the headers to the end
  of the body, whether the handler reads the body or not; then a 408 (if no reply has
  started) and the handler sees the client gone;
- **JSON errors**: malformed HTTP gets the gateway's ``{"data": null, "error": ...}``
  envelope instead of uvicorn's plain text. Every refusal is sent before the connection
  closes gracefully (``_linger``), so the client reads it instead of a reset;
- **liveness off the event loop's queue**: ``GET``/``HEAD /healthz`` is answered here,
  synchronously, when its headers are parsed: no ASGI task. That alone is not enough: it
  still waits for the loop iteration under way, and under a flood one iteration runs the
  first step of every request whose bytes arrived in it (a cached embedding is answered
  in that one step). So request tasks start in groups of at most ``starts_per_tick`` with
  an iteration between groups; the others start in the next ones, in arrival order, and
  the socket reads (this answer among them) come between: an iteration stays short
  whatever the load.

The keep-alive idle timeout is uvicorn's own (``timeout_keep_alive``, set from
``server.keep_alive_timeout_s``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.http import BODY_TIMED_OUT
from gateway.protocol.envelope import error_body

HEALTHZ_BODY = b'{"status":"ok"}'
_HEALTHZ_PATHS = (b"/healthz", b"/healthz/")
_JSON = b"content-type: application/json\r\n"
LINGER_S = 2.0  # how long a refused client may go on sending before the connection closes


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may cost; the defaults are ``ServerConfig``'s."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    starts_per_tick: int = 8  # request tasks started per event-loop iteration


class _Pacer:
    """Starts request tasks in groups of at most ``per_tick``, with an event-loop iteration
    (and so a poll for socket reads) between one group and the next, in arrival order.

    One per server (all its connections share the loop). The count is reset only by
    ``_tick``, scheduled with ``call_soon`` when a group is full: it runs in the next
    iteration (asyncio and uvloop both take the ready queue's length before running it).
    Scheduling it per iteration instead cost an extra loop wake-up per request at ordinary
    rates (+0.15 ms CPU per request at 400 req/s); this way it is one per ``per_tick`` tasks.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, per_tick: int) -> None:
        self._loop = loop
        self._per_tick = per_tick
        self._started = 0  # since the last _tick
        self._waiting: deque[tuple[HttpToolsProtocol, RequestResponseCycle, ASGI3Application]] = deque()

    def start(self, protocol: HttpToolsProtocol, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if self._started < self._per_tick:
            self._begin(protocol, cycle, app)
        else:
            self._waiting.append((protocol, cycle, app))

    def _begin(self, protocol: HttpToolsProtocol, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._started += 1
        if self._started == self._per_tick:
            self._loop.call_soon(self._tick)  # the next group starts after the next poll
        HttpToolsProtocol._start_asgi_task(protocol, cycle, app)

    def _tick(self) -> None:
        self._started = 0
        while self._waiting and self._started < self._per_tick:
            protocol, cycle, app = self._waiting.popleft()
            if cycle.disconnected:
                continue  # the client left while waiting: nothing to do for it
            self._begin(protocol, cycle, app)


class _HeadersWithBody:
    """The transport one response is written through: its first write (uvicorn writes the
    status line and headers on their own) is held until the first piece of the body, and
    both go out in one ``write``: one system call and one segment per short reply instead
    of two. Nothing waits longer than the loop iteration under way: a held write with no
    body behind it (``HEAD``, 204, a stream whose body comes later) is written at the next
    one, and before any other use of the transport (closing it, say)."""

    __slots__ = ("_transport", "_loop", "_armed", "_held", "_handle")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._armed = True
        self._held: bytes | None = None
        self._handle: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if self._armed and not data.startswith(_CONTINUE):  # "100 Continue" is not the response
            self._armed = False
            self._held = data
            self._handle = self._loop.call_soon(self.flush)
            return
        held = self._held
        if held is not None:
            self._held = None
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            data = held + data
        self._transport.write(data)

    def flush(self) -> None:
        """Write a held status line and headers now (a no-op when nothing is held)."""
        self._handle = None
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # anything else uvicorn may call: in order, after the held bytes
        self.flush()
        return getattr(self._transport, name)


_CONTINUE = b"HTTP/1.1 100 "


class _Refused(Exception):
    """Raised from a parser callback: stop parsing and answer ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GatewayHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with the limits above; built by uvicorn once per connection."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits or ConnectionLimits()
        self._in_body = False  # between the end of a request's headers and the end of its body
        self._received = 0  # bytes received since the current request's headers began
        self._header_bytes = 0  # the same, counted exactly by the parser callbacks
        self._header_count = 0
        self._any_bytes = False  # whether this request sent anything yet (a silent close if not)
        self._deadline: asyncio.TimerHandle | None = None
        self._discarding = False  # an error reply was sent: what arrives now is dropped
        # One per server, kept on its state (shared by all of its connections).
        pacer = getattr(server_state, "dify_gateway_pacer", None)
        if pacer is None:
            pacer = _Pacer(self.loop, self._limits.starts_per_tick)
            server_state.dify_gateway_pacer = pacer  # type: ignore[attr-defined]
        self._pacer: _Pacer = pacer

    # --- deadlines ----------------------------------------------------------------------

    def _arm(self, seconds: float, on_expiry: Callable[[], None]) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, on_expiry)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _header_timeout(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if not self._any_bytes:
            self.transport.close()  # an idle connection: nobody to tell
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request waits for the reply before it (a stream may run for
            # minutes): it is not refused while that reply runs, only looked at again.
            self._arm(self._limits.header_timeout_s, self._header_timeout)
            return
        self._refuse(408, f"request headers not received within {self._limits.header_timeout_s:g} s")

    def _body_timeout(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None:
            self.transport.close()
            return
        # Tells the handler why its body ended (see gateway.http.read_body).
        cycle.scope[BODY_TIMED_OUT] = True  # type: ignore[literal-required]
        message = f"request body not received within {self._limits.body_timeout_s:g} s"
        replying = cycle.response_started and not cycle.response_complete
        if not cycle.response_started:
            self._write_error(408, message)
        self._stop_cycle(cycle)
        if replying:
            self.transport.close()  # cut the reply short: the connection cannot be reused
        else:
            self._linger()

    # --- refusals -------------------------------------------------------------------------

    def _write_error(self, status: int, message: str) -> None:
        body = error_body(message)
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([_JSON, b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body), body])
        self.transport.write(b"".join(content))

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` and close: the request being read never reaches the app."""
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A pipelined request's reply is still being written: no room for ours.
            self._stop_cycle(cycle)
            self.transport.close()
        else:
            self._write_error(status, message)
            self._linger()

    def _linger(self) -> None:
        """Close after an error reply without losing it. Closing a socket with unread bytes
        (the rest of a huge header, a body) resets the connection, and the reset can reach
        the client before the reply does: so send the reply and our end of the stream, then
        read and drop what the client still sends, for at most ``LINGER_S``."""
        self._disarm()
        self._discarding = True
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.flow.resume_reading()
        self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_S, self.transport.close)

    @staticmethod
    def _stop_cycle(cycle: RequestResponseCycle) -> None:
        cycle.response_started = True  # nothing the app sends from now on is written
        cycle.disconnected = True
        cycle.message_event.set()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here on
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self._write_error(400, f"invalid HTTP request: {msg.rstrip('.')}")
        self._linger()

    # --- the connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._discarding:
            return
        if not self._in_body:
            self._any_bytes = True
            self._received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.message)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserError as exc:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response(str(exc) or "Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if not self._in_body and self._received > self._limits.max_header_bytes and not self._discarding:
            # Headers still incomplete past the limit: refused before the parser joins more.
            self._refuse(431, self._too_large())

    def _too_large(self) -> str:
        return f"request headers too large: over {self._limits.max_header_bytes} bytes (server.max_header_bytes)"

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._pacer.start(self, cycle, app)

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_count = 0
        if self._deadline is None:  # a keep-alive request (the first one's is armed at connect)
            self._arm(self._limits.header_timeout_s, self._header_timeout)

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > self._limits.max_header_bytes:
            raise _Refused(431, self._too_large())
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self._limits.max_headers:
            raise _Refused(431, f"too many request headers: over {self._limits.max_headers} (server.max_headers)")
        if self._header_bytes > self._limits.max_header_bytes:
            raise _Refused(431, self._too_large())
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._received = 0
        self._any_bytes = False
        self._disarm()
        if self._answer_healthz():
            return
        self._arm(self._limits.body_timeout_s, self._body_timeout)
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:
            cycle.transport = _HeadersWithBody(self.transport, self.loop)  # type: ignore[assignment]

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and isinstance(cycle.transport, _HeadersWithBody):
            cycle.transport.flush()  # a finished reply's headers, held this iteration, go out before the close
        super().shutdown()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    # --- liveness -------------------------------------------------------------------------

    def _answer_healthz(self) -> bool:
        """``GET``/``HEAD /healthz`` without a body, answered now; False for anything else."""
        path = self.url.split(b"?", 1)[0]
        if path not in _HEALTHZ_PATHS or self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            return False
        method = self.parser.get_method()
        if method not in (b"GET", b"HEAD"):
            return False  # the app answers 405
        for name, value in self.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
                return False
        http_version = self.parser.get_http_version()
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        # A finished cycle, so that the rest of the protocol sees no request in progress.
        self.cycle = RequestResponseCycle(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=False,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=keep_alive,
            on_response=self.on_response_complete,
        )
        self.cycle.response_started = self.cycle.response_complete = True
        content = [STATUS_LINE[200]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(_JSON + b"content-length: %d\r\n" % len(HEALTHZ_BODY))
        if not keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        if method == b"GET":
            content.append(HEALTHZ_BODY)
        self.transport.write(b"".join(content))
        if keep_alive:
            self.on_response_complete()
        else:
            self.transport.close()
        return True
