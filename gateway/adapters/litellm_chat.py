"""Chat through ``litellm.acompletion`` / ``atext_completion``: the long tail of providers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gateway.adapters.base import ChatCall, ChatEvent, TokenUsage, ToolCallDelta
from gateway.adapters.litellm_clients import OpenAIClients
from gateway.adapters.litellm_common import target_kwargs
from gateway.adapters.litellm_errors import map_litellm_error
from gateway.adapters.litellm_loader import load_litellm
from gateway.errors import UpstreamUnavailable

__all__ = ["LiteLLMChatAdapter", "target_kwargs"]


def _usage(raw: Any) -> TokenUsage | None:
    if raw is None:
        return None
    prompt = getattr(raw, "prompt_tokens", None)
    completion = getattr(raw, "completion_tokens", None)
    if prompt is None and completion is None:
        return None
    return TokenUsage(prompt_tokens=int(prompt or 0), completion_tokens=int(completion or 0))


def _tool_deltas(raw: Any) -> list[ToolCallDelta] | None:
    if not raw:
        return None
    deltas = []
    for position, tc in enumerate(raw):
        fn = getattr(tc, "function", None)
        index = getattr(tc, "index", None)
        deltas.append(
            ToolCallDelta(
                index=index if isinstance(index, int) else position,
                id=getattr(tc, "id", None) or None,
                name=getattr(fn, "name", None) or None,
                arguments=getattr(fn, "arguments", None),
            )
        )
    return deltas


# Providers whose text completions litellm sends through an ``openai.AsyncOpenAI`` client.
_OPENAI_COMPLETION_PROVIDERS = ("openai/", "text-completion-openai/")


class LiteLLMChatAdapter:
    def __init__(self) -> None:
        self._clients = OpenAIClients()

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
            if not call.stream:
                yield self._whole(response, text_completion=call.prompt is not None)
                return
            async for chunk in response:
                event = self._chunk(chunk)
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

    @staticmethod
    def _whole(response: Any, text_completion: bool) -> ChatEvent:
        choice = response.choices[0] if response.choices else None
        if text_completion:
            text = getattr(choice, "text", "") or ""
            tools = None
        else:
            message = getattr(choice, "message", None)
            text = getattr(message, "content", None) or ""
            tools = _tool_deltas(getattr(message, "tool_calls", None))
        return ChatEvent(
            text=text,
            tool_calls=tools,
            finish_reason=getattr(choice, "finish_reason", None),
            usage=_usage(getattr(response, "usage", None)),
            model=getattr(response, "model", None),
            system_fingerprint=getattr(response, "system_fingerprint", None),
        )

    @staticmethod
    def _chunk(chunk: Any) -> ChatEvent | None:
        usage = _usage(getattr(chunk, "usage", None))
        choices = getattr(chunk, "choices", None) or []
        if not choices:
            return ChatEvent(usage=usage) if usage else None
        choice = choices[0]
        delta = getattr(choice, "delta", None)
        text = getattr(delta, "content", None) if delta is not None else getattr(choice, "text", None)
        return ChatEvent(
            text=text or "",
            tool_calls=_tool_deltas(getattr(delta, "tool_calls", None)) if delta is not None else None,
            finish_reason=getattr(choice, "finish_reason", None),
            usage=usage,
            model=getattr(chunk, "model", None),
            system_fingerprint=getattr(chunk, "system_fingerprint", None),
        )
