"""Reading OpenAI-shaped chat replies: the wire types, and the one translation to ``ChatEvent``.

Two clients deliver this shape: the native client (``openai_compat``) as parsed JSON dicts,
and litellm as response objects with the same field names as attributes. Both are read here
through :func:`field`, so usage, tool-call deltas and chunks are translated once.

The TypedDicts document the fields read (OpenAI's chat completion and chunk objects); all are
optional on the wire (``total=False``) and every reader tolerates a missing or null field.
A JSON value that is not an object where an object belongs (``"delta": "hi"``) raises
:class:`WireError`; an empty one (``""``, ``[]``, ``0``) reads as absent, as null does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

import orjson

from gateway.adapters.base import ChatEvent, TokenUsage, ToolCallDelta


class WireError(ValueError):
    """A reply that is JSON but not the shape of a chat completion (its message says where)."""


class WireUsage(TypedDict, total=False):
    prompt_tokens: int | None
    completion_tokens: int | None


class WireFunction(TypedDict, total=False):
    name: str | None
    arguments: str | None  # a piece of the JSON arguments in a stream


class WireToolCall(TypedDict, total=False):
    index: int  # the call's position among the parallel calls (streams only)
    id: str | None
    function: WireFunction | None


class WireMessage(TypedDict, total=False):
    """A choice's ``message`` (whole replies) or ``delta`` (stream chunks)."""

    content: str | None
    tool_calls: list[WireToolCall] | None


class WireChoice(TypedDict, total=False):
    message: WireMessage | None
    delta: WireMessage | None
    text: str | None  # text completions
    finish_reason: str | None


class WireCompletion(TypedDict, total=False):
    """A whole reply (``chat.completion``) or one stream chunk (``chat.completion.chunk``)."""

    model: str | None
    system_fingerprint: str | None
    choices: list[WireChoice] | None
    usage: WireUsage | None  # in streams, on a last chunk without choices


# What JSON parses to besides objects (exact types: orjson makes no subclasses). They are
# never read by attribute: ``"abc".index`` is a method, not a field.
_JSON_VALUES = frozenset({str, int, float, bool, list})


def field(obj: Any, name: str) -> Any:
    """``obj[name]`` of a parsed JSON object, else the attribute of a response object; None when absent.

    Raises ``WireError`` when ``obj`` is a non-empty JSON value other than an object.
    """
    if isinstance(obj, dict):  # parsed JSON, the native client's hot path: checked first
        return obj.get(name)
    if obj is None:
        return None
    if type(obj) in _JSON_VALUES:
        if obj:
            raise WireError(f"a {type(obj).__name__} where an object with {name!r} belongs")
        return None  # an empty value standing in for an absent object, as null does
    return getattr(obj, name, None)


def usage(raw: WireUsage | Any) -> TokenUsage | None:
    """Token counts of a ``usage`` object; None when it counts neither prompt nor completion
    (or is not an object at all: usage is advisory, a reply stays valid without it)."""
    if raw is None or type(raw) in _JSON_VALUES:
        return None
    prompt, completion = field(raw, "prompt_tokens"), field(raw, "completion_tokens")
    if prompt is None and completion is None:
        return None
    try:
        return TokenUsage(prompt_tokens=int(prompt or 0), completion_tokens=int(completion or 0))
    except (TypeError, ValueError) as exc:
        raise WireError(f"usage counts {prompt!r}, {completion!r} are not numbers") from exc


def tool_deltas(raw: list[WireToolCall] | Any) -> list[ToolCallDelta] | None:
    """The tool-call pieces of a message or delta; a call without an ``index`` is numbered by position."""
    if not raw or not isinstance(raw, list | tuple):
        return None
    deltas = []
    for position, call in enumerate(raw):
        function = field(call, "function")
        index = field(call, "index")
        deltas.append(
            ToolCallDelta(
                index=index if isinstance(index, int) else position,
                id=field(call, "id") or None,
                name=field(function, "name") or None,
                arguments=_arguments(field(function, "arguments")),
            )
        )
    return deltas


def _arguments(value: Any) -> str | None:
    """A piece of a call's JSON arguments. Some OpenAI-compatible servers send the whole
    object instead of its text: it is written as JSON text, as OpenAI sends it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    raise WireError(f"tool call arguments are a {type(value).__name__}, not JSON text")


# Stands in for an absent choice or delta (only ever read).
_ABSENT: dict[str, Any] = {}


def _not_a_list(choices: Any) -> str:
    return f"'choices' is a {type(choices).__name__}, not a list"


def _first_choice(reply: Any) -> Any:
    choices = field(reply, "choices")
    if not choices:
        return None
    if not isinstance(choices, list | tuple):
        raise WireError(_not_a_list(choices))
    return choices[0]


def completion_event(reply: WireCompletion | Any, *, text_completion: bool = False) -> ChatEvent:
    """The whole answer of a non-streamed reply (its first choice): the message's content and
    tool calls, or for a text completion the choice's ``text``."""
    choice = _first_choice(reply)
    if text_completion:
        text, tools = field(choice, "text"), None
    else:
        message = field(choice, "message")
        text, tools = field(message, "content"), tool_deltas(field(message, "tool_calls"))
    raw_usage = field(reply, "usage")
    return ChatEvent(
        text=text if isinstance(text, str) else "",
        tool_calls=tools,
        finish_reason=field(choice, "finish_reason"),
        usage=usage(raw_usage) if raw_usage is not None else None,
        model=field(reply, "model"),
        system_fingerprint=field(reply, "system_fingerprint"),
    )


def chunk_event(chunk: WireCompletion | Any, *, text_completion: bool = False) -> ChatEvent | None:
    """The event of one stream chunk (its first choice's ``delta``, or for a text completion its
    ``text``); None for a chunk that carries nothing (no choices and no usage).

    Called once per streamed chunk. A parsed JSON chunk holds only JSON values, so it is read
    with ``dict.get`` itself (a non-object where an object belongs raises ``TypeError`` there):
    per field, :func:`field` would cost a Python call.
    """
    get: Callable[[Any, str], Any] = dict.get if isinstance(chunk, dict) else field
    raw_usage = get(chunk, "usage")
    counted = usage(raw_usage) if raw_usage is not None else None
    choices = get(chunk, "choices")
    if not choices:
        return ChatEvent(usage=counted) if counted is not None else None
    if not isinstance(choices, list | tuple):
        raise WireError(_not_a_list(choices))
    try:
        choice = choices[0] or _ABSENT
        finish_reason = get(choice, "finish_reason")
        if text_completion:
            text, raw_tools = get(choice, "text"), None
        else:
            delta = get(choice, "delta") or _ABSENT
            text, raw_tools = get(delta, "content"), get(delta, "tool_calls")
    except TypeError as exc:  # dict.get on a JSON value that is not an object
        raise WireError("a choice or its delta is not an object") from exc
    tools = tool_deltas(raw_tools) if raw_tools else None
    return ChatEvent(
        text=text if isinstance(text, str) else "",
        tool_calls=tools,
        finish_reason=finish_reason,
        usage=counted,
        model=get(chunk, "model"),
        system_fingerprint=get(chunk, "system_fingerprint"),
    )


def merged(events: list[ChatEvent]) -> ChatEvent:
    """Deltas that arrived together, read as one: text and tool-call pieces joined in order, the
    last finish reason, usage and system fingerprint (as the stream's reader keeps them), the first model."""
    if len(events) == 1:
        return events[0]
    text: list[str] = []
    tool_calls: list[ToolCallDelta] = []
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    model: str | None = None
    fingerprint: str | None = None
    for event in events:
        if event.text:
            text.append(event.text)
        if event.tool_calls:
            tool_calls.extend(event.tool_calls)
        finish_reason = event.finish_reason or finish_reason
        usage = event.usage or usage
        model = model or event.model
        fingerprint = event.system_fingerprint or fingerprint
    return ChatEvent(
        text="".join(text),
        tool_calls=tool_calls or None,
        finish_reason=finish_reason,
        usage=usage,
        model=model,
        system_fingerprint=fingerprint,
    )
