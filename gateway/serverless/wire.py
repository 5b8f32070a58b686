"""The serverless transaction's wire format (spec 6): the SDK's request and the reply's events.

Request (dify-plugin 0.10.2, ``BackwardsInvocation._http_backwards_invoke``): no
Content-Type, the body is one JSON object followed by ``\\n\\n``::

    {"event": "session", "session_id": "<sid>",
     "data": {"type": "invoke",
              "data": {"type": "<invoke type>", "backwards_request_id": "<hex>",
                       "request": {...the SDK's payload...}}}}

Reply: JSON lines, each followed by a blank line; blank lines (heartbeats) may come
anywhere. The SDK splits the body with ``str.splitlines`` semantics (httpx ``iter_lines``),
so U+0085, U+2028 and U+2029 must never appear unescaped inside a line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gateway.http import parse_model

TRANSACTION_PATH = "/backwards-invocation/transaction"
SESSION_HEADER = "dify-plugin-session-id"
MEDIA_TYPE = "text/event-stream; charset=utf-8"
HEARTBEAT = b"\n\n"
_LINE_END = b"\n\n"

# Characters str.splitlines treats as line breaks that JSON does not escape by itself
# (orjson escapes everything below U+0020), as their UTF-8 bytes and JSON escapes.
_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))

ResponseMessage = Literal["stream", "struct"]


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Invoke(_Inbound):
    type: str = Field(min_length=1)
    backwards_request_id: str
    request: dict[str, Any]


class _SessionData(_Inbound):
    type: Literal["invoke"]
    data: _Invoke


class _Transaction(_Inbound):
    event: Literal["session"]
    session_id: str  # "" is allowed: a hand-made SDK Session may have it; it gets the default tenant
    data: _SessionData


@dataclass(frozen=True, slots=True)
class Transaction:
    session_id: str
    invoke_type: str  # the SDK's InvokeType value: "llm", "text_embedding", ...
    backwards_request_id: str
    request: dict[str, Any]  # the SDK's payload, un-normalised


def parse_transaction(body: dict[str, Any]) -> Transaction:
    """Validate a decoded request body; ``BadRequest`` names what is wrong."""
    parsed = parse_model(_Transaction, body)
    invoke = parsed.data.data
    return Transaction(parsed.session_id, invoke.type, invoke.backwards_request_id, invoke.request)


def request_ids(body: Any, header_session_id: str = "") -> tuple[str, str]:
    """``(session_id, backwards_request_id)`` from a body that may not be valid, for error events."""
    session_id, request_id = header_session_id, ""
    if isinstance(body, dict):
        if isinstance(body.get("session_id"), str):
            session_id = body["session_id"]
        outer = body.get("data")
        inner = outer.get("data") if isinstance(outer, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("backwards_request_id"), str):
            request_id = inner["backwards_request_id"]
    return session_id, request_id


def encode_line(value: dict[str, Any]) -> bytes:
    """One JSON line plus the blank line after it (numpy arrays become JSON arrays)."""
    line = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    if not line.isascii():
        for raw, escaped in _LINE_BREAKS:
            line = line.replace(raw, escaped)
    return line + _LINE_END


class EventWriter:
    """Encodes the events of one transaction, each a ``backwards_response`` line that carries
    ``backwards_request_id`` inside ``data`` (the SDK's ``BackwardsInvocationResponseEvent``
    requires it)."""

    def __init__(self, session_id: str, backwards_request_id: str) -> None:
        self.session_id = session_id
        self.backwards_request_id = backwards_request_id

    def _event(self, event: str, message: str, data: Any) -> bytes:
        return encode_line(
            {
                "session_id": self.session_id,
                "conversation_id": None,
                "message_id": None,
                "app_id": None,
                "endpoint_id": None,
                "context": None,
                "event": "backwards_response",
                "data": {
                    "backwards_request_id": self.backwards_request_id,
                    "event": event,
                    "message": message,
                    "data": data,
                },
            }
        )

    def response(self, message: ResponseMessage, data: dict[str, Any]) -> bytes:
        """A result: ``stream`` for each chunk of llm/structured/tts, ``struct`` for a unary result."""
        return self._event("response", message, data)

    def error(self, message: str) -> bytes:
        """A failure; the SDK raises ``Exception(message)``. Always follow it with ``end``."""
        return self._event("error", message, None)

    def end(self) -> bytes:
        return self._event("end", "", None)
