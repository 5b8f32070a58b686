"""Dify LLM requests -> OpenAI-format chat calls (messages, tools, parameters)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import BadRequest
from gateway.protocol.requests import ContentItem, LLMInvokeRequest, PromptMessage, ToolChoice

# Completion params passed to the backend under their OpenAI names; anything else a Dify
# model form may carry (provider-specific knobs) is dropped rather than failing the call.
_PASSED_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "parallel_tool_calls",
        "reasoning_effort",
        "user",
    }
)


def _item_url(item: ContentItem) -> str:
    """``url`` when given, else a data URI from ``base64_data`` (or legacy ``data``)."""
    if item.url:
        return item.url
    if item.base64_data:
        mime = item.mime_type or "application/octet-stream"
        return f"data:{mime};base64,{item.base64_data}"
    return item.data or ""


def _content_part(item: ContentItem) -> dict[str, Any]:
    if item.type == "text":
        return {"type": "text", "text": item.data or ""}
    url = _item_url(item)
    if not url:
        raise BadRequest(f"invalid payload: a {item.type} content item has no url, base64_data or data")
    if item.type == "image":
        image: dict[str, Any] = {"url": url}
        if item.detail in ("low", "high", "auto"):
            image["detail"] = item.detail
        return {"type": "image_url", "image_url": image}
    if item.type == "audio" and not url.startswith(("http://", "https://")):
        data = item.base64_data or url.split(",", 1)[-1]
        fmt = item.format or (item.mime_type or "audio/wav").rsplit("/", 1)[-1]
        return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
    if item.type == "video":
        return {"type": "video_url", "video_url": {"url": url}}
    file: dict[str, Any] = {"file_data": url} if url.startswith("data:") else {"file_id": url}
    if item.filename:
        file["filename"] = item.filename
    if item.mime_type:
        file["format"] = item.mime_type
    return {"type": "file", "file": file}


def _content(content: str | list[ContentItem] | None) -> str | list[dict[str, Any]]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [_content_part(item) for item in content]
    # A text-only message stays a plain string: every backend accepts that form.
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _message(msg: PromptMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role, "content": _content(msg.content)}
    if msg.name:
        out["name"] = msg.name
    if msg.role == "assistant" and msg.tool_calls:
        out["tool_calls"] = [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.function.name, "arguments": tc.function.arguments},
            }
            for tc in msg.tool_calls
        ]
        if out["content"] == "":
            out["content"] = None
    if msg.role == "tool":
        out["tool_call_id"] = msg.tool_call_id or ""
    return out


def chat_messages(messages: list[PromptMessage]) -> list[dict[str, Any]]:
    return [_message(m) for m in messages]


def completion_prompt(messages: list[PromptMessage]) -> str:
    """The prompt of a completion-mode call: the text of the messages, in order."""
    texts = []
    for m in messages:
        content = _content(m.content)
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(p["text"] for p in content if p["type"] == "text")
    return "\n".join(t for t in texts if t)


def tools(request: LLMInvokeRequest) -> list[dict[str, Any]] | None:
    if not request.tools:
        return None
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description or "",
                "parameters": t.parameters or {"type": "object", "properties": {}},
            },
        }
        for t in request.tools
    ]


def tool_choice(choice: ToolChoice | None) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if choice.mode == "tool":
        if not choice.name:
            raise BadRequest("invalid payload: tool_choice mode 'tool' needs a name")
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def _json_schema_format(raw: Any) -> dict[str, Any]:
    """Dify's ``json_schema`` param (a JSON string or object) as an OpenAI response_format."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("invalid payload: completion_params.json_schema is not valid JSON") from None
    if not isinstance(raw, dict):
        raise BadRequest("invalid payload: completion_params.json_schema must be a JSON object")
    if "schema" not in raw:
        raw = {"name": "llm_response", "schema": raw}
    raw.setdefault("name", "llm_response")
    return {"type": "json_schema", "json_schema": raw}


def completion_params(params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """OpenAI-named parameters from Dify's completion_params over a target's defaults."""
    merged = {**defaults, **params}
    out = {k: v for k, v in merged.items() if k in _PASSED_PARAMS and v is not None}
    fmt = merged.get("response_format")
    if "json_schema" in merged and merged["json_schema"] and fmt in (None, "json_schema", "JSON_SCHEMA"):
        out["response_format"] = _json_schema_format(merged["json_schema"])
    elif isinstance(fmt, str) and fmt:
        lowered = fmt.lower()
        if lowered in ("json", "json_object"):
            out["response_format"] = {"type": "json_object"}
        elif lowered == "json_schema" and merged.get("json_schema"):
            out["response_format"] = _json_schema_format(merged["json_schema"])
        # "text" is the default and needs no parameter.
    elif isinstance(fmt, dict):
        out["response_format"] = fmt
    return out
