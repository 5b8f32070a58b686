"""Structured output: ask for JSON matching a schema, then parse the answer (spec 3.2)."""

from __future__ import annotations

from typing import Any

import json_repair
import orjson

from gateway.adapters.base import ChatCall
from gateway.errors import UpstreamError

RESPONSE_NAME = "llm_response"

_SCHEMA_PROMPT = """You answer with a single JSON object and nothing else.
Rules:
- Output only JSON: no explanations, no markdown, no code fences.
- The JSON must be an object that conforms to this JSON Schema:
{schema}"""


def use_native(mode: str, supports_response_schema: bool | None) -> bool:
    if mode == "native":
        return True
    if mode == "prompt":
        return False
    return bool(supports_response_schema)


def apply_schema(call: ChatCall, schema: dict[str, Any], native: bool) -> None:
    """Make ``call`` ask for JSON matching ``schema``, natively or through a system prompt."""
    if native:
        call.params["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": RESPONSE_NAME, "schema": schema},
        }
        return
    instruction = _SCHEMA_PROMPT.format(schema=orjson.dumps(schema).decode())
    if call.prompt is not None:
        call.prompt = f"{instruction}\n\n{call.prompt}"
        return
    first = call.messages[0] if call.messages else None
    if first is not None and first["role"] == "system" and isinstance(first["content"], str):
        first["content"] = f"{first['content']}\n\n{instruction}" if first["content"] else instruction
    else:
        call.messages.insert(0, {"role": "system", "content": instruction})


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text.strip()


def parse_object(text: str, where: str) -> dict[str, Any]:
    """The JSON object in ``text`` (repairing near-JSON); a clear error otherwise."""
    cleaned = _strip_fences(text)
    try:
        value: Any = orjson.loads(cleaned)
    except orjson.JSONDecodeError:
        value = json_repair.loads(cleaned) if cleaned else None
    if not isinstance(value, dict):
        kind = "no JSON" if value in (None, "") else f"a JSON {type(value).__name__}"
        raise StructuredOutputError(f"structured output is not a JSON object: the model returned {kind} ({where})")
    return value


class StructuredOutputError(UpstreamError):
    """The model answered, but not with a JSON object."""

    status = 502
    retryable = False
