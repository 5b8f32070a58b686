"""``/invoke/summary``: Dify's summary algorithm, with the piece summaries run concurrently.

Dify (spec 3.10): text under 0.6 of the model's context comes back unchanged; longer text
is split on newlines, over-long lines are cut, lines are merged into pieces of at most 0.7
of the context, each piece is summarised with a fixed system prompt, the summaries are
joined with newlines, and the whole repeats while the result is still over 0.7 of the
context. Dify summarises the pieces one after another; here up to ``concurrency`` run at
once. Tokens are estimated at four characters each (Dify asks the model's tokenizer).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from gateway.adapters.base import ChatCall, TokenUsage, UpstreamContext
from gateway.adapters.registry import Backends
from gateway.config import RouteConfig, RouteMatch, TargetConfig
from gateway.errors import UpstreamTimeout
from gateway.invoke.common import gather_all, target_prices
from gateway.invoke.llm_reply import estimate_tokens, llm_usage
from gateway.pricing import ModelMap
from gateway.protocol.requests import SummaryInvokeRequest
from gateway.protocol.results import SummaryResultDict
from gateway.resilience.plan import Resilience, run_attempts
from gateway.routing import Resolution, Target
from gateway.trace import current_trace

# Dify's prompt, word for word (its models were tuned against it).
SUMMARY_PROMPT = """You are a professional language researcher, you are interested in the language
and you can quickly aimed at the main point of an webpage and reproduce it in your own words but
retain the original meaning and keep the key points.
however, the text you got is too long, what you got is possible a part of the text.
Please summarize the text you got.

Here is the extra instruction you need to follow:
<extra_instruction>
{instruction}
</extra_instruction>
"""
DEFAULT_CONTEXT_TOKENS = 2048  # Dify's fallback when the model's context size is unknown
MAX_ROUNDS = 4  # summaries of summaries; a model that does not shorten its input stops here
_TIMEOUT_S = 230.0


def tokens(text: str) -> int:
    return estimate_tokens(len(text))


def split_pieces(text: str, context_tokens: int, system_tokens: int) -> list[str]:
    """Dify's line cutting and merging, with lines joined by newlines."""
    slice_chars = max(1, int(context_tokens * 0.5))
    budget = context_tokens * 0.7
    lines: list[str] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        if len(line) < slice_chars or system_tokens + tokens(line) <= budget:
            lines.append(line)
        else:
            lines.extend(line[i : i + slice_chars] for i in range(0, len(line), slice_chars))
    pieces: list[str] = []
    current = ""
    for line in lines:
        candidate = f"{current}\n{line}" if current else line
        if current and system_tokens + tokens(candidate) > budget:
            pieces.append(current)
            current = line
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


class SummaryService:
    def __init__(
        self,
        target: TargetConfig,
        concurrency: int,
        backends: Backends,
        model_map: ModelMap,
        resilience: Resilience,
    ) -> None:
        self._target = Target(config=target, model=target.model)
        # The summary model as a one-target route, so its calls get the same retries and
        # breaker as any route's.
        route = RouteConfig(name="summary_model", match=RouteMatch(type="llm"), targets=[target])
        self._resolution = Resolution(route=route, route_label="summary_model", targets=(self._target,))
        self._resilience = resilience
        self._concurrency = concurrency
        self._backends = backends
        self._context_tokens = (
            target.context_tokens or model_map.lookup(target.model).max_input_tokens or DEFAULT_CONTEXT_TOKENS
        )
        self._context = UpstreamContext(route="summary_model", provider="(system)", model=target.model)
        self._where = self._context.describe(self._target)
        self._model_map = model_map

    async def summarize(self, request: SummaryInvokeRequest) -> SummaryResultDict:
        started = time.monotonic()
        deadline = started + (self._target.config.timeout_s or _TIMEOUT_S)
        system = SUMMARY_PROMPT.replace("{instruction}", request.instruction)
        text = request.text
        if tokens(text) < self._context_tokens * 0.6:
            return {"summary": text}
        gate = asyncio.Semaphore(self._concurrency)
        spent: list[TokenUsage] = []  # every piece's call, for the usage ledger and budgets

        async def one(piece: str) -> str:
            async with gate:
                return await self._complete(system, piece, deadline, spent)

        try:
            for _ in range(MAX_ROUNDS):
                pieces = split_pieces(text, self._context_tokens, tokens(system))
                summaries = await gather_all(one(p) for p in pieces)
                result = "\n".join(s.strip() for s in summaries)
                if tokens(result) <= self._context_tokens * 0.7 or len(result) >= len(text):
                    return {"summary": result}
                text = result
            return {"summary": text}
        finally:
            self._charge(spent, time.monotonic() - started)

    def _charge(self, spent: list[TokenUsage], latency: float) -> None:
        """The summary's calls as the invocation's tokens and price (what a failed one used too)."""
        trace = current_trace.get()
        if trace is None or not spent:
            return
        total = TokenUsage(sum(u.prompt_tokens for u in spent), sum(u.completion_tokens for u in spent))
        trace.tokens_in, trace.tokens_out = total.prompt_tokens, total.completion_tokens
        prices = target_prices(self._target, self._model_map)
        trace.price_usd = Decimal(llm_usage(total, prices, latency)["total_price"])

    async def _complete(self, system: str, piece: str, deadline: float, spent: list[TokenUsage]) -> str:
        if deadline - time.monotonic() <= 0:
            raise UpstreamTimeout(f"the summary did not finish within its deadline ({self._where})")
        params = {"temperature": 0.8, "top_p": 0.8, **self._target.config.params}
        messages = [{"role": "system", "content": system}, {"role": "user", "content": piece}]

        async def attempt(target: Target, timeout_s: float) -> str:
            call = ChatCall(
                target=target,
                context=self._context,
                messages=messages,
                stream=False,
                params=params,
                timeout_s=timeout_s,
            )
            events = self._backends.chat(target).chat(call)
            parts: list[str] = []
            usage: TokenUsage | None = None
            try:
                async for event in events:
                    if event.usage is not None:
                        usage = event.usage
                    if event.text:
                        parts.append(event.text)
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            answer = "".join(parts)
            if usage is None:  # as the LLM path does: estimated from the characters
                prompt_chars = sum(len(m["content"]) for m in messages)
                usage = TokenUsage(estimate_tokens(prompt_chars), estimate_tokens(len(answer)))
            spent.append(usage)
            return answer

        plan = self._resilience.plan(self._resolution, deadline, self._context.describe)
        text, _ = await run_attempts(plan, attempt)
        return text
