"""Results as the plugin receives them through the daemon (spec 4.1 "what the plugin receives").

The daemon decodes each reply into its Go types and re-encodes it before passing it on:
fixed key order, ``null`` strings as ``""``, ``tool_call_id`` added, every usage key present
with decimals as plain decimal strings, ``mime_type`` left out when empty. A plugin talking
to the gateway's serverless endpoint gets the same shapes, so it cannot tell the two apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.pricing import decimal_str

_LLM_USAGE_INTS = ("prompt_tokens", "completion_tokens", "total_tokens")
_LLM_USAGE_KEYS = (
    "prompt_tokens",
    "prompt_unit_price",
    "prompt_price_unit",
    "prompt_price",
    "completion_tokens",
    "completion_unit_price",
    "completion_price_unit",
    "completion_price",
    "total_tokens",
    "total_price",
    "currency",
    "latency",
)
_EMBEDDING_USAGE_KEYS = ("tokens", "total_tokens", "unit_price", "price_unit", "total_price", "currency", "latency")
_NOT_DECIMAL = frozenset({"currency", "latency", "tokens", *_LLM_USAGE_INTS})


def decimal_text(value: Any) -> str:
    """A decimal as the daemon re-emits it: a plain string, trailing zeros trimmed, ``"0"`` if absent."""
    if value is None:
        return "0"
    try:
        return decimal_str(Decimal(str(value)))
    except InvalidOperation:
        return str(value)


def _usage(usage: Mapping[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {k: usage.get(k) if k in _NOT_DECIMAL else decimal_text(usage.get(k)) for k in keys}


def _tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "id": call.get("id") or "",
        "type": call.get("type") or "",
        "function": {"name": function.get("name") or "", "arguments": function.get("arguments") or ""},
    }


def llm_chunk(chunk: Mapping[str, Any], structured: bool = False) -> dict[str, Any]:
    """An ``LLMResultChunk`` (or the structured-output variant) as the daemon re-emits it."""
    delta: Mapping[str, Any] = chunk["delta"]
    message: Mapping[str, Any] = delta["message"]
    content = message.get("content")
    out_message: dict[str, Any] = {
        "role": message.get("role") or "assistant",
        "content": "" if content is None else content,
        "name": message.get("name") or "",
        "tool_calls": [_tool_call(c) for c in message.get("tool_calls") or []],
        "tool_call_id": message.get("tool_call_id") or "",
    }
    if "opaque_body" in message:
        out_message["opaque_body"] = message["opaque_body"]
    view: dict[str, Any] = {
        "model": chunk["model"],
        "system_fingerprint": chunk.get("system_fingerprint") or "",
        "delta": {
            "index": delta["index"],
            "message": out_message,
            "usage": _usage(delta.get("usage"), _LLM_USAGE_KEYS),
            "finish_reason": delta.get("finish_reason"),
        },
    }
    if structured:
        view["structured_output"] = chunk.get("structured_output")
    else:
        view["prompt_messages"] = []
    return view


def tts_chunk(chunk: Mapping[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"result": chunk.get("result") or ""}
    if chunk.get("mime_type"):
        view["mime_type"] = chunk["mime_type"]
    return view


def embedding_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """Text or multimodal embedding result; vectors pass through (numpy arrays included)."""
    return {
        "model": result["model"],
        "embeddings": result["embeddings"],
        "usage": _usage(result["usage"], _EMBEDDING_USAGE_KEYS),
    }


def rerank_result(result: Mapping[str, Any]) -> dict[str, Any]:
    docs = [{"index": d["index"], "text": d["text"], "score": d["score"]} for d in result["docs"]]
    return {"model": result["model"], "docs": docs}


def text_result(result: Mapping[str, Any]) -> dict[str, Any]:
    return {"result": result.get("result") or ""}


def moderation_result(result: Mapping[str, Any]) -> dict[str, Any]:
    return {"result": bool(result.get("result"))}


def summary_result(result: Mapping[str, Any]) -> dict[str, Any]:
    return {"summary": result.get("summary") or ""}
