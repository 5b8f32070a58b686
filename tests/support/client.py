"""Posting daemon-style requests to a running gateway and reading replies like the daemon."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.daemon import DaemonStreamOutcome, read_stream_reply, read_unary_reply
from tests.support.server import TEST_KEY


@dataclass
class StreamReply:
    status: int
    content_type: str
    body: bytes
    outcome: DaemonStreamOutcome
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(c["delta"]["message"]["content"] for c in self.outcome.chunks)

    @property
    def usages(self) -> list[dict[str, Any]]:
        return [c["delta"]["usage"] for c in self.outcome.chunks if c["delta"]["usage"] is not None]


def llm_request(model: str = "m", stream: bool = True, **fields: Any) -> dict[str, Any]:
    """A request body as the daemon serialises it."""
    body: dict[str, Any] = {
        "tenant_id": "tenant-1",
        "user_id": "user-1",
        "type": "llm",
        "provider": "langgenius/openai/openai",
        "model": model,
        "mode": "chat",
        "completion_params": {"temperature": 0.1},
        "prompt_messages": [
            {"role": "system", "content": "You are terse.", "name": "", "tool_calls": None, "tool_call_id": ""},
            {"role": "user", "content": "Hello?", "name": "", "tool_calls": None, "tool_call_id": ""},
        ],
        "tools": None,
        "stop": None,
        "stream": stream,
    }
    body.update(fields)
    return body


def post_stream(
    base_url: str, path: str, body: dict[str, Any], kind: str = "llm", key: str = TEST_KEY, timeout: float = 30
) -> StreamReply:
    response = httpx.post(f"{base_url}{path}", json=body, headers={"X-Inner-Api-Key": key}, timeout=timeout)
    outcome = read_stream_reply(response.status_code, response.content, kind)
    return StreamReply(
        response.status_code,
        response.headers.get("content-type", ""),
        response.content,
        outcome,
        dict(response.headers),
    )


@dataclass
class UnaryReply:
    status: int
    body: bytes
    data: dict[str, Any] | None  # what the plugin receives, or None when the daemon reports an error
    error: str | None  # the daemon's error text

    def ok(self) -> dict[str, Any]:
        assert self.error is None and self.data is not None, f"HTTP {self.status}: {self.error}"
        return self.data


# Path under /inner/api/invoke/ -> the daemon's reply type name.
UNARY_KINDS = {
    "text-embedding": "text_embedding",
    "multimodal-embedding": "multimodal_embedding",
    "rerank": "rerank",
    "multimodal-rerank": "multimodal_rerank",
    "speech2text": "speech2text",
    "moderation": "moderation",
    "summary": "system_summary",
}


def invoke_body(
    model_type: str, model: str = "m", provider: str = "langgenius/openai/openai", **fields: Any
) -> dict[str, Any]:
    """A daemon-style request body for a non-LLM invoke path."""
    return {
        "tenant_id": "tenant-1",
        "user_id": "user-1",
        "type": model_type,
        "provider": provider,
        "model": model,
        **fields,
    }


def post_unary(base_url: str, name: str, body: dict[str, Any], key: str = TEST_KEY, timeout: float = 60) -> UnaryReply:
    """POST to /inner/api/invoke/<name> and read the reply the way the daemon does."""
    response = httpx.post(
        f"{base_url}/inner/api/invoke/{name}", json=body, headers={"X-Inner-Api-Key": key}, timeout=timeout
    )
    data, error = read_unary_reply(response.content, UNARY_KINDS[name])
    return UnaryReply(response.status_code, response.content, data, error)
