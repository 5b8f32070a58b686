"""Which adapter serves a target: an explicit table, never a silent default."""

from __future__ import annotations

from gateway.adapters.base import ChatAdapter
from gateway.adapters.litellm_chat import LiteLLMChatAdapter
from gateway.errors import NoRoute
from gateway.routing import Target

LOCAL_PREFIX = "local/"


class Backends:
    """The live adapters of one app instance (one per kind, shared by all requests)."""

    def __init__(self, chat: ChatAdapter | None = None) -> None:
        self._litellm_chat: ChatAdapter = chat or LiteLLMChatAdapter()

    async def aclose(self) -> None:
        """Release pooled connections (at shutdown)."""
        close = getattr(self._litellm_chat, "aclose", None)
        if close is not None:
            await close()

    def chat(self, target: Target) -> ChatAdapter:
        if target.model.startswith(LOCAL_PREFIX):
            raise NoRoute(f"target {target.model!r}: the gateway has no embedded LLM; route llm calls to a backend")
        return self._litellm_chat
