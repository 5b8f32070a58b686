"""``/invoke/llm`` and ``/invoke/llm/structured-output``: route, call, and frame the reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from gateway.adapters.base import ChatCall, ChatEvent, TokenUsage, UpstreamContext
from gateway.adapters.registry import Backends
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.invoke import chat_request
from gateway.invoke.common import resolve, target_prices
from gateway.invoke.llm_reply import ChunkWriter, ToolCallAssembler, estimate_tokens, llm_usage
from gateway.invoke.structured import apply_schema, parse_object, use_native
from gateway.pricing import ModelMap
from gateway.protocol.requests import LLMInvokeRequest, StructuredOutputInvokeRequest
from gateway.routing import Resolution, RouteTable, Target


class LLMService:
    def __init__(self, routes: RouteTable, backends: Backends, model_map: ModelMap) -> None:
        self._routes = routes
        self._backends = backends
        self._model_map = model_map

    def _resolve(self, request: LLMInvokeRequest) -> Resolution:
        return resolve(self._routes, "llm", request.provider, request.model, request.tenant_id)

    def _call(self, request: LLMInvokeRequest, resolution: Resolution, target: Target) -> ChatCall:
        context = UpstreamContext(route=resolution.route_label, provider=request.provider, model=request.model)
        mode = target.config.mode or request.mode
        call = ChatCall(
            target=target,
            context=context,
            messages=chat_request.chat_messages(request.prompt_messages) if mode == "chat" else [],
            stream=request.stream,
            params=chat_request.completion_params(request.completion_params, target.config.params),
            tools=chat_request.tools(request),
            tool_choice=chat_request.tool_choice(request.tool_choice),
            stop=request.stop or None,
            prompt=chat_request.completion_prompt(request.prompt_messages) if mode == "completion" else None,
            timeout_s=target.config.timeout_s or resolution.route.timeouts.total_s,
        )
        if isinstance(request, StructuredOutputInvokeRequest):
            info = self._model_map.lookup(target.model)
            native = use_native(target.config.structured_output, info.supports_response_schema)
            apply_schema(call, request.structured_output_schema, native)
        return call

    async def frames(self, request: LLMInvokeRequest) -> AsyncIterator[bytes]:
        """The reply frames. Raises ``GatewayError``; the caller maps it to the wire."""
        started = time.monotonic()
        structured = isinstance(request, StructuredOutputInvokeRequest)
        resolution = self._resolve(request)
        target = resolution.pick()
        call = self._call(request, resolution, target)
        where = call.context.describe(target)
        writer = ChunkWriter(request.model, structured, started)
        tools = ToolCallAssembler()
        text: list[str] = []
        usage: TokenUsage | None = None
        finish_reason: str | None = None
        deadline = started + call.timeout_s

        events = self._backends.chat(target).chat(call)
        try:
            while True:
                event = await _next_event(events, deadline, where)
                if event is None:
                    break
                if event.system_fingerprint:
                    writer.system_fingerprint = event.system_fingerprint
                if event.usage is not None:
                    usage = event.usage
                if event.tool_calls:
                    tools.add(event.tool_calls)
                if event.finish_reason:
                    finish_reason = event.finish_reason
                if event.text:
                    text.append(event.text)
                    if request.stream:
                        yield writer.frame(event.text)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

        if request.stream and finish_reason is None:
            raise UpstreamUnavailable(f"upstream stream ended before the answer was finished ({where})")
        full_text = "".join(text)
        tool_calls = tools.complete(where)
        if usage is None:
            prompt_chars = sum(len(m["content"]) for m in call.messages if isinstance(m.get("content"), str))
            prompt_chars += len(call.prompt or "")
            usage = TokenUsage(estimate_tokens(prompt_chars), estimate_tokens(len(full_text)))
        usage_dict = llm_usage(usage, target_prices(target, self._model_map), time.monotonic() - started)

        if request.stream:
            yield writer.frame("", tool_calls, usage_dict, finish_reason or "stop")
            if structured:
                yield writer.structured_frame(parse_object(full_text, where))
        elif structured:
            parsed = parse_object(full_text, where)
            yield writer.structured_frame(parsed, full_text, tool_calls, usage_dict, "")
        else:
            yield writer.frame(full_text, tool_calls, usage_dict, "")


async def _next_event(events: AsyncIterator[ChatEvent], deadline: float, where: str) -> ChatEvent | None:
    """The next upstream event, or None at the end; fails once the total deadline passes."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise UpstreamTimeout(f"upstream did not finish within the total deadline ({where})")
    try:
        return await asyncio.wait_for(anext(events), remaining)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise UpstreamTimeout(f"upstream did not finish within the total deadline ({where})") from None
