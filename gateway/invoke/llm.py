"""``/invoke/llm`` and ``/invoke/llm/structured-output``: route, call, and build the reply's chunks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from decimal import Decimal

from gateway.adapters.base import ChatCall, ChatEvent, TokenUsage, UpstreamContext
from gateway.adapters.registry import Backends
from gateway.cache.response_cache import CachedAnswer, ResponseCache, deterministic
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.invoke import chat_request
from gateway.invoke.common import resolve, target_prices, within
from gateway.invoke.llm_reply import ChunkBuilder, ToolCallAssembler, estimate_tokens, llm_usage
from gateway.invoke.structured import apply_schema, parse_object, use_native
from gateway.pricing import ModelMap
from gateway.protocol.requests import LLMInvokeRequest, StructuredOutputInvokeRequest
from gateway.protocol.results import LLMChunk, ToolCallDict
from gateway.resilience.plan import AttemptPlan, Resilience, stream_attempts
from gateway.routing import Resolution, RouteTable, Target
from gateway.trace import current_trace


class LLMService:
    def __init__(
        self,
        routes: RouteTable,
        backends: Backends,
        model_map: ModelMap,
        resilience: Resilience,
        response_cache: ResponseCache | None = None,
    ) -> None:
        self._routes = routes
        self._backends = backends
        self._model_map = model_map
        self._resilience = resilience
        self._cache = response_cache

    def _resolve(self, request: LLMInvokeRequest) -> Resolution:
        return resolve(self._routes, "llm", request.provider, request.model, request.tenant_id)

    def _call(self, request: LLMInvokeRequest, resolution: Resolution, target: Target, timeout_s: float) -> ChatCall:
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
            timeout_s=timeout_s,
            connect_timeout_s=resolution.route.timeouts.connect_s,
        )
        if isinstance(request, StructuredOutputInvokeRequest):
            info = self._model_map.lookup(target.model)
            # The embedded LLM always decodes by the schema's grammar.
            native = target.backend.kind == "local" or use_native(
                target.config.structured_output, info.supports_response_schema
            )
            apply_schema(call, request.structured_output_schema, native)
        return call

    def chunks(self, request: LLMInvokeRequest) -> AsyncGenerator[LLMChunk, None]:
        """The reply's result chunks (one frame each on the wire). Raises ``GatewayError``
        (routing errors at once, upstream ones from the iterator); the caller maps it to the wire.

        Attempts follow the route's plan until one succeeds, but only while no chunk has
        been yielded: once a byte may have reached the daemon, nothing is retried or
        switched, and a later failure ends the stream (the caller's final error frame).
        """
        started = time.monotonic()
        resolution = self._resolve(request)
        context = UpstreamContext(route=resolution.route_label, provider=request.provider, model=request.model)
        plan = self._resilience.plan(resolution, started + resolution.route.timeouts.total_s, context.describe)
        return stream_attempts(plan, lambda t: self._attempt(request, resolution, t, plan, started))

    async def _attempt(
        self, request: LLMInvokeRequest, resolution: Resolution, target: Target, plan: AttemptPlan, started: float
    ) -> AsyncGenerator[LLMChunk, None]:
        """One attempt's chunks against ``target``."""
        structured = isinstance(request, StructuredOutputInvokeRequest)
        call = self._call(request, resolution, target, plan.ceiling(target))
        where = call.context.describe(target)
        cache_key = self._cache_key(request, resolution, call)
        if cache_key is not None:
            assert self._cache is not None
            cached = await self._cache.get(cache_key)
            _note_cache("hit" if cached is not None else "miss")
            if cached is not None:
                for chunk in self._replay(request, target, cached, started, where):
                    yield chunk
                return
        await within(self._backends.ready(target), plan.remaining(target), where)
        # A fallback answers with another model; the reply says which.
        builder = ChunkBuilder(target.model_name if target.fallback else request.model, structured, started)
        tools = ToolCallAssembler()
        text: list[str] = []
        usage: TokenUsage | None = None
        finish_reason: str | None = None
        timeouts = resolution.route.timeouts
        limit_s = plan.remaining(target)
        clock = _EventClock(
            attempt_deadline=time.monotonic() + limit_s,
            total_deadline=plan.deadline,
            first_s=timeouts.ttft_s if request.stream else None,
            idle_s=timeouts.idle_s if request.stream else None,
            where=where,
            deadline_error=lambda: plan.timed_out(target, limit_s),
        )

        events = self._backends.chat(target).chat(call)
        try:
            while True:
                event = await clock.next(events)
                if event is None:
                    break
                if event.system_fingerprint:
                    builder.system_fingerprint = event.system_fingerprint
                if event.usage is not None:
                    usage = event.usage
                if event.tool_calls:
                    tools.add(event.tool_calls)
                if event.finish_reason:
                    finish_reason = event.finish_reason
                if event.text:
                    text.append(event.text)
                    if request.stream:
                        yield builder.chunk(event.text)
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
        self._resilience.health.used_tokens(target, usage.prompt_tokens + usage.completion_tokens)
        trace = current_trace.get()
        if trace is not None:
            trace.tokens_in, trace.tokens_out = usage.prompt_tokens, usage.completion_tokens
        usage_dict = llm_usage(usage, target_prices(target, self._model_map), time.monotonic() - started)
        if trace is not None:
            trace.price_usd = Decimal(usage_dict["total_price"])

        if request.stream:
            yield builder.chunk("", tool_calls, usage_dict, finish_reason or "stop")
            if structured:
                yield builder.structured_chunk(parse_object(full_text, where))
        elif structured:
            parsed = parse_object(full_text, where)
            yield builder.structured_chunk(parsed, full_text, tool_calls, usage_dict, "")
        else:
            yield builder.chunk(full_text, tool_calls, usage_dict, "")
        if cache_key is not None and resolution.route.cache is not None:
            # Reached only when the whole answer went out (a failed or cut stream never gets here).
            assert self._cache is not None
            answer = CachedAnswer(
                text=full_text,
                tool_calls=[(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in tool_calls],
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                finish_reason=finish_reason or "stop",
                system_fingerprint=builder.system_fingerprint,
            )
            self._cache.put(cache_key, answer, resolution.route.cache.ttl_s)

    def _cache_key(self, request: LLMInvokeRequest, resolution: Resolution, call: ChatCall) -> str | None:
        """The response cache's key for this call, or None when the route does not cache it."""
        settings = resolution.route.cache
        if self._cache is None or settings is None:
            return None
        if not settings.any_temperature and not deterministic(call.params):
            return None
        return self._cache.key(call, request.tenant_id if settings.per_tenant else None)

    def _replay(
        self, request: LLMInvokeRequest, target: Target, answer: CachedAnswer, started: float, where: str
    ) -> Iterator[LLMChunk]:
        """A cached answer's chunks, shaped as the backend's would be. The usage reports the
        answer's tokens at price 0; the trace (ledger, budgets) records them as cached, not spent."""
        structured = isinstance(request, StructuredOutputInvokeRequest)
        builder = ChunkBuilder(target.model_name if target.fallback else request.model, structured, started)
        builder.system_fingerprint = answer.system_fingerprint
        tool_calls: list[ToolCallDict] = [
            {"id": i, "type": "function", "function": {"name": name, "arguments": arguments}}
            for i, name, arguments in answer.tool_calls
        ]
        trace = current_trace.get()
        if trace is not None:
            trace.tokens_in = trace.tokens_out = 0
            trace.cached_tokens = answer.prompt_tokens + answer.completion_tokens
            trace.price_usd = Decimal(0)
        tokens = TokenUsage(answer.prompt_tokens, answer.completion_tokens)
        usage = llm_usage(tokens, None, time.monotonic() - started)
        if request.stream:
            text = answer.text
            for start in range(0, len(text), _REPLAY_PIECE_CHARS):
                yield builder.chunk(text[start : start + _REPLAY_PIECE_CHARS])
            yield builder.chunk("", tool_calls, usage, answer.finish_reason)
            if structured:
                yield builder.structured_chunk(parse_object(text, where))
        elif structured:
            yield builder.structured_chunk(parse_object(answer.text, where), answer.text, tool_calls, usage, "")
        else:
            yield builder.chunk(answer.text, tool_calls, usage, "")


# A cached answer streams in pieces of this size (the backend's own chunking is not kept).
_REPLAY_PIECE_CHARS = 256


def _note_cache(result: str) -> None:
    trace = current_trace.get()
    if trace is not None:
        trace.response_cache = result


class _EventClock:
    """Deadlines for one attempt's upstream events: time to the first one (``first_s``),
    between later ones (``idle_s``), and in all (the attempt's and the request's)."""

    def __init__(
        self,
        attempt_deadline: float,
        total_deadline: float,
        first_s: float | None,
        idle_s: float | None,
        where: str,
        deadline_error: Callable[[], UpstreamTimeout],
    ) -> None:
        self._deadline = min(attempt_deadline, total_deadline)
        self._first_s = first_s
        self._idle_s = idle_s
        self._where = where
        self._deadline_error = deadline_error  # names the limit that ended the attempt
        self._last = time.monotonic()
        self._seen = False

    async def next(self, events: AsyncIterator[ChatEvent]) -> ChatEvent | None:
        """The next upstream event, or None at the end; ``UpstreamTimeout`` when a deadline passes."""
        now = time.monotonic()
        gap_s = self._idle_s if self._seen else self._first_s
        remaining = self._deadline - now
        kind = "total"
        if gap_s is not None and self._last + gap_s - now < remaining:
            remaining = self._last + gap_s - now
            kind = "idle" if self._seen else "ttft"
        if remaining <= 0:
            raise self._timeout(kind, gap_s)
        try:
            # A timeout scope, not wait_for: on Python 3.11 wait_for wraps every event in a task.
            async with asyncio.timeout(remaining):
                event = await anext(events)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise self._timeout(kind, gap_s) from None
        self._last = time.monotonic()
        self._seen = True
        return event

    def _timeout(self, kind: str, gap_s: float | None) -> UpstreamTimeout:
        if kind == "ttft":
            return UpstreamTimeout(f"upstream sent nothing within {gap_s:g} s (time to first token; {self._where})")
        if kind == "idle":
            return UpstreamTimeout(f"upstream stream stalled for {gap_s:g} s (idle deadline; {self._where})")
        return self._deadline_error()
