"""The per-capability adapter interfaces and the neutral types they exchange.

Chat requests are expressed in the OpenAI chat format, the common language of litellm and
of OpenAI-compatible servers, so a native client can replace litellm for such upstreams
without touching the handlers. Adapters translate foreign exceptions into
``gateway.errors.UpstreamError`` subclasses at their own boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.routing import Target


@dataclass(frozen=True, slots=True)
class UpstreamContext:
    """Who is calling, for error messages and logs (never secrets or prompt text)."""

    route: str
    provider: str
    model: str

    def describe(self, target: Target) -> str:
        return f"route {self.route!r}, provider {self.provider!r}, model {self.model!r} -> {target.label!r}"


@dataclass(slots=True)
class ChatCall:
    """One chat (or legacy completion) request for a backend."""

    target: Target
    context: UpstreamContext
    messages: list[dict[str, Any]]
    stream: bool
    # OpenAI-named parameters (temperature, max_tokens, response_format, ...).
    params: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stop: list[str] | None = None
    # Set for "completion" mode: the prompt for a /completions-style call.
    prompt: str | None = None
    timeout_s: float = 230.0


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call as providers stream it; assembled by the caller."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class ChatEvent:
    """One upstream delta (or, for non-streaming calls, the whole answer)."""

    text: str = ""
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    model: str | None = None
    system_fingerprint: str | None = None


class ChatAdapter(Protocol):
    def chat(self, call: ChatCall) -> AsyncIterator[ChatEvent]:
        """Stream the answer as events; a non-streaming call yields exactly one event.

        Raises ``UpstreamError`` (before or during iteration) for backend failures.
        """
        ...
