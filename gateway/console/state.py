"""What the console remembers about recent traffic: per-type rates, requests in flight, and
the last errors.

Fed by the app for every inner-API request (``begin`` when its handler starts, ``record``
when its reply is done). Pure bookkeeping on the event loop: no locks, no I/O. Error
messages are the gateway's own (which name routes and models, never prompt text) with the
configured secrets removed; as a second line of defence, any text of the request body an
upstream's error message echoes is cut out before the entry is kept.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.resilience.window import SlidingSum
from gateway.trace import Trace

WINDOW_S = 60.0
MAX_ERRORS = 50
MAX_MESSAGE_CHARS = 500
# Outcomes that are not errors: answered, handed to Dify, or the caller hung up.
_NOT_ERRORS = frozenset({"ok", "forwarded", "cancelled"})
# Request fields that carry no user text (they may appear in messages as they are).
_METADATA_KEYS = frozenset(
    {
        "tenant_id",
        "user_id",
        "type",
        "provider",
        "model",
        "mode",
        "role",
        "input_type",
        "voice",
        "content_type",
        "mime_type",
        "format",
        "encode_format",
        "detail",
        "name",
        "id",
        "tool_call_id",
    }
)
# Bodies larger than this are not searched for echoed text (errors are rare; audio is large).
_SCRUB_MAX_BODY = 4 * 1024 * 1024
_SCRUB_MIN_CHARS = 6
_SCRUB_PREFIX_CHARS = 32
_SCRUB_MAX_STRINGS = 2000
REMOVED = "[request text removed]"


@dataclass(slots=True)
class _Traffic:
    requests: SlidingSum = field(default_factory=lambda: SlidingSum(WINDOW_S))
    errors: SlidingSum = field(default_factory=lambda: SlidingSum(WINDOW_S))
    duration_us: SlidingSum = field(default_factory=lambda: SlidingSum(WINDOW_S))
    in_flight: int = 0
    total: int = 0
    errors_total: int = 0


@dataclass(slots=True)
class _Open:
    model_type: str
    error: str | None = None  # the message the caller got, when the gateway refused the request


class ConsoleState:
    def __init__(
        self,
        redact: Callable[[str], str],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_errors: int = MAX_ERRORS,
    ) -> None:
        self._redact = redact
        self._clock = clock
        self._wall = wall
        self._errors: deque[dict[str, Any]] = deque(maxlen=max_errors)
        self._types: dict[str, _Traffic] = {}
        self._routes: dict[str, _Traffic] = {}  # by route label (bounded by the configuration)
        # Requests whose handler has started, by id(trace), until their record.
        self._open: dict[int, _Open] = {}
        self.errors_total = 0

    # --- fed by the app ---------------------------------------------------------------

    def begin(self, trace: Trace | None) -> None:
        """A request's handler starts (requests refused as overloaded never get here)."""
        if trace is None:
            return
        if len(self._open) > 100_000:  # cannot happen while every begin has its record; bounded anyway
            self._open.clear()
        self._open[id(trace)] = _Open(trace.model_type)
        self._traffic(trace.model_type).in_flight += 1

    def note_error(self, trace: Trace | None, message: str) -> None:
        """The message the caller got for a request the gateway refused or failed."""
        if trace is not None:
            entry = self._open.get(id(trace))
            if entry is not None:
                entry.error = message

    def record(self, trace: Trace, outcome: str, status: int, duration_s: float, body: object = None) -> None:
        """A request is done (its last byte sent); ``body``: its raw request body, if read."""
        now = self._clock()
        opened = self._open.pop(id(trace), None)
        traffic = self._traffic(trace.model_type)
        if opened is not None:
            traffic.in_flight -= 1
        counted = [traffic]
        if trace.route is not None:
            route = self._routes.get(trace.route)
            if route is None:
                route = self._routes[trace.route] = _Traffic()
            counted.append(route)
        failed = outcome not in _NOT_ERRORS
        for row in counted:
            row.requests.add(now)
            row.duration_us.add(now, round(duration_s * 1_000_000))
            row.total += 1
            if failed:
                row.errors.add(now)
                row.errors_total += 1
        if not failed:
            return
        self.errors_total += 1
        message = opened.error if opened is not None and opened.error else None
        if message is None and trace.errors:
            message = trace.errors[-1]
        if message is None:
            message = _default_message(outcome, status, trace)
        message = _scrub(self._redact(message), body if isinstance(body, bytes) else None)
        self._errors.appendleft(
            {
                "at": round(self._wall(), 3),
                **trace.summary(outcome, status, duration_s, ms_digits=1),
                "message": message,
            }
        )

    # --- read by the status endpoints -------------------------------------------------

    def recent_errors(self) -> list[dict[str, Any]]:
        """The last errors, newest first."""
        return list(self._errors)

    @property
    def error_capacity(self) -> int:
        return self._errors.maxlen or 0

    def traffic(self) -> dict[str, dict[str, Any]]:
        """Per model type: in flight now, and the last minute's requests, errors and latency."""
        now = self._clock()
        return {name: {"in_flight": t.in_flight, **_rates(t, now)} for name, t in sorted(self._types.items())}

    def route_traffic(self) -> dict[str, dict[str, Any]]:
        """Per route label: the last minute's requests, errors and latency (requests no route
        matched are under their type only)."""
        now = self._clock()
        return {name: _rates(t, now) for name, t in self._routes.items()}

    def _traffic(self, model_type: str) -> _Traffic:
        traffic = self._types.get(model_type)
        if traffic is None:  # bounded: the served types, "forward" and "other"
            traffic = self._types[model_type] = _Traffic()
        return traffic


def _rates(t: _Traffic, now: float) -> dict[str, Any]:
    requests = t.requests.total(now)
    errors = t.errors.total(now)
    return {
        "requests_last_minute": requests,
        "requests_per_s": round(requests / WINDOW_S, 3),
        "errors_last_minute": errors,
        "error_rate": round(errors / requests, 4) if requests else None,
        "avg_duration_ms": round(t.duration_us.total(now) / requests / 1000, 1) if requests else None,
        "requests_total": t.total,
        "errors_total": t.errors_total,
    }


def _default_message(outcome: str, status: int, trace: Trace) -> str:
    if trace.stream_error:
        return "the stream ended with an error frame"
    if outcome == "overloaded":
        return "refused: too many requests in flight (server.max_in_flight)"
    return f"{outcome.replace('_', ' ')} (HTTP {status})"


def _scrub(message: str, body: bytes | None) -> str:
    """``message`` without any text of the request body in it, and not too long."""
    if body and len(body) <= _SCRUB_MAX_BODY:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        texts: list[str] = []
        _collect(parsed, texts)
        for text in sorted(set(texts), key=len, reverse=True):
            message = _cut(message, text)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return message


def _cut(message: str, text: str) -> str:
    """``message`` without ``text``, nor any start of it of at least a few words (an echo
    that the upstream shortened)."""
    message = message.replace(text, REMOVED)
    if len(text) <= _SCRUB_PREFIX_CHARS:
        return message
    head = text[:_SCRUB_PREFIX_CHARS]
    start = message.find(head)
    while start >= 0:
        end = start + _SCRUB_PREFIX_CHARS
        while end < len(message) and end - start < len(text) and message[end] == text[end - start]:
            end += 1
        message = message[:start] + REMOVED + message[end:]
        start = message.find(head, start + len(REMOVED))
    return message


def _collect(node: object, out: list[str], key: str | None = None) -> None:
    if len(out) >= _SCRUB_MAX_STRINGS:
        return
    if isinstance(node, str):
        if key not in _METADATA_KEYS and len(node) >= _SCRUB_MIN_CHARS:
            out.append(node)
    elif isinstance(node, dict):
        for name, value in node.items():
            _collect(value, out, name)
    elif isinstance(node, list):
        for item in node:
            _collect(item, out, key)
