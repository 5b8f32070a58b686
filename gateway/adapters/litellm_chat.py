"""Chat through ``litellm.acompletion`` / ``atext_completion``: the long tail of providers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gateway.adapters.base import ChatCall, ChatEvent
from gateway.adapters.litellm_clients import OpenAIClients
from gateway.adapters.litellm_common import target_kwargs
from gateway.adapters.litellm_errors import map_litellm_error
from gateway.adapters.litellm_loader import load_litellm
from gateway.adapters.openai_wire import chunk_event, completion_event
from gateway.errors import UpstreamUnavailable

__all__ = ["LiteLLMChatAdapter", "target_kwargs"]


# Providers whose text completions litellm sends through an ``openai.AsyncOpenAI`` client.
_OPENAI_COMPLETION_PROVIDERS = ("openai/", "text-completion-openai/")


class LiteLLMChatAdapter:
    def __init__(self, clients: OpenAIClients | None = None) -> None:
        self._clients = clients or OpenAIClients()

    def _completions_client(self, model: str, kwargs: dict[str, Any]) -> Any:
        """A reused OpenAI client for text completions.

        litellm 1.106.2 builds a new HTTP client for every OpenAI text completion and never
        closes it (one leaked connection per call); a client per target avoids that.
        """
        return self._clients.get(kwargs) if model.startswith(_OPENAI_COMPLETION_PROVIDERS) else None

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def chat(self, call: ChatCall) -> AsyncIterator[ChatEvent]:
        where = call.context.describe(call.target)
        try:
            litellm = await load_litellm()
            kwargs = target_kwargs(call.target, call.timeout_s, call.connect_timeout_s)
            kwargs.update(call.params)
            kwargs["stream"] = call.stream
            if call.stream:
                kwargs["stream_options"] = {"include_usage": True}
            if call.stop:
                kwargs["stop"] = call.stop
            if call.prompt is not None:
                client = self._completions_client(call.target.model, kwargs)
                if client is not None:
                    kwargs["client"] = client
                response = await litellm.atext_completion(prompt=call.prompt, **kwargs)
            else:
                if call.tools:
                    kwargs["tools"] = call.tools
                    # litellm 1.106.2 imports its MCP gateway (and the optional `mcp`
                    # package) for any call with tools; plain function tools never need it.
                    kwargs["_skip_mcp_handler"] = True
                    if call.tool_choice is not None:
                        kwargs["tool_choice"] = call.tool_choice
                response = await litellm.acompletion(messages=call.messages, **kwargs)
            text_completion = call.prompt is not None
            if not call.stream:
                yield completion_event(response, text_completion=text_completion)
                return
            async for chunk in response:
                event = chunk_event(chunk, text_completion=text_completion)
                if event is not None:
                    yield event
            # litellm ends a cut stream with a made-up "stop"; what the upstream really sent
            # is only on the wrapper. No finish reason at all means the stream was truncated.
            # (Text-completion streams have their own wrapper without it; there the finish
            # reason of the chunks is all there is.)
            chat_stream = hasattr(response, "received_finish_reason")
            received = getattr(response, "received_finish_reason", None)
            if chat_stream and received is None and getattr(response, "intermittent_finish_reason", None) is None:
                raise UpstreamUnavailable(f"upstream stream ended before the answer was finished ({where})")
        except Exception as exc:  # the adapter boundary: every failure becomes an UpstreamError
            raise map_litellm_error(exc, where) from exc
