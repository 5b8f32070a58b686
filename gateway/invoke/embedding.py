"""``/invoke/text-embedding`` and ``/invoke/multimodal-embedding``: batch, call, assemble."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

from gateway.adapters.base import (
    EmbeddingAdapter,
    EmbeddingCall,
    EmbeddingOutput,
    EmbeddingVector,
    InputType,
    MediaInput,
    UpstreamContext,
)
from gateway.adapters.registry import Backends
from gateway.cache.embedding_cache import EmbeddingCache
from gateway.config import RequestLimits
from gateway.errors import UpstreamUnavailable
from gateway.invoke.common import call_upstream, gather_all, resolve, target_prices, upstream_context
from gateway.invoke.limits import Limits
from gateway.invoke.llm_reply import estimate_tokens
from gateway.pricing import ModelMap, price
from gateway.protocol.requests import MultimodalEmbeddingInvokeRequest, TextEmbeddingInvokeRequest
from gateway.protocol.results import EmbeddingResultDict, EmbeddingUsageDict
from gateway.resilience.plan import Resilience
from gateway.routing import RouteTable, Target
from gateway.trace import current_trace

# Batches of one request that may be in flight upstream at once.
_PARALLEL_BATCHES = 4


def batch_size(target: Target, adapter: EmbeddingAdapter) -> int:
    """Inputs per upstream call: the target's ``max_batch_size``, else the adapter's limit for it."""
    return target.config.max_batch_size or adapter.max_batch(target)


def estimate_input_tokens(inputs: list[MediaInput]) -> int:
    return sum(estimate_tokens(len(i.content)) for i in inputs if i.kind == "text")


def embedding_usage(tokens: int, target: Target, model_map: ModelMap, latency: float) -> EmbeddingUsageDict:
    prices = target_prices(target, model_map)
    unit_price, price_unit, total = price(tokens, prices.input_per_token if prices else Decimal(0))
    return {
        "tokens": tokens,
        "total_tokens": tokens,
        "unit_price": unit_price,
        "price_unit": price_unit,
        "total_price": total,
        "currency": prices.currency if prices else "USD",
        "latency": round(latency, 6),
    }


class EmbeddingService:
    def __init__(
        self,
        routes: RouteTable,
        backends: Backends,
        model_map: ModelMap,
        resilience: Resilience,
        cache: EmbeddingCache | None = None,
        limits: RequestLimits | None = None,
    ) -> None:
        self._routes = routes
        self._limits = Limits(limits or RequestLimits())
        self._backends = backends
        self._model_map = model_map
        self._resilience = resilience
        self._cache = cache

    async def embed(
        self, request: TextEmbeddingInvokeRequest | MultimodalEmbeddingInvokeRequest
    ) -> EmbeddingResultDict:
        started = time.monotonic()
        if isinstance(request, TextEmbeddingInvokeRequest):
            model_type, inputs, field = "text-embedding", [MediaInput.text(t) for t in request.texts], "texts"
        else:
            model_type, field = "multimodal-embedding", "documents"
            inputs = [MediaInput(d.content_type, d.content) for d in request.documents]
        resolution = resolve(self._routes, model_type, request.provider, request.model, request.tenant_id)
        self._limits.check(resolution, "embedding_inputs", len(inputs), field)
        # Text only: images and other media are bounded by server.max_body_bytes.
        lengths = (len(i.content) if i.kind == "text" else 0 for i in inputs)
        self._limits.check_each(resolution, "embedding_input_chars", lengths, field)
        context = upstream_context(resolution, request.provider, request.model)

        # One attempt embeds every input with one target: vectors of different models
        # (a fallback's) must never be mixed in one reply, nor taken from the cache.
        fetched: set[int] = set()  # the inputs sent upstream (the others came from the cache)

        async def attempt(target: Target, timeout_s: float) -> tuple[list[Any], int]:
            where = context.describe(target)

            async def fetch(items: list[MediaInput]) -> tuple[list[EmbeddingVector], int]:
                fetched.update(id(item) for item in items)
                vectors, tokens = await self._embed_all(target, items, request.input_type, context, timeout_s, where)
                tokens = estimate_input_tokens(items) if tokens is None else tokens
                self._resilience.health.used_tokens(target, tokens)
                return vectors, tokens

            if self._cache is not None and inputs:
                # Usage counts only the tokens spent upstream for this request's misses.
                return await self._cache.embed(target, request.tenant_id, request.input_type, inputs, fetch)
            return await fetch(inputs)

        (embeddings, tokens), target = await call_upstream(self._resilience, resolution, context, attempt)
        usage = embedding_usage(tokens, target, self._model_map, time.monotonic() - started)
        trace = current_trace.get()
        if trace is not None:
            trace.tokens_in = tokens
            trace.price_usd = Decimal(usage["total_price"])
            if self._cache is not None:
                trace.cached_tokens = estimate_input_tokens([i for i in inputs if id(i) not in fetched])
        return {"model": request.model, "embeddings": embeddings, "usage": usage}

    async def _embed_all(
        self,
        target: Target,
        inputs: list[MediaInput],
        input_type: InputType,
        context: UpstreamContext,
        timeout_s: float,
        where: str,
    ) -> tuple[list[EmbeddingVector], int | None]:
        """Vectors in input order, and the tokens the backend reported (None if any batch did not)."""
        if not inputs:
            return [], 0
        adapter = self._backends.embedding(target)
        size = batch_size(target, adapter)
        batches = [inputs[i : i + size] for i in range(0, len(inputs), size)]
        gate = asyncio.Semaphore(_PARALLEL_BATCHES)

        async def one(batch: list[MediaInput]) -> EmbeddingOutput:
            async with gate:
                call = EmbeddingCall(target, context, batch, input_type, timeout_s)
                out = await adapter.embed(call)
            if len(out.vectors) != len(batch):
                raise UpstreamUnavailable(
                    f"upstream returned {len(out.vectors)} embeddings for {len(batch)} inputs ({where})"
                )
            return out

        outputs = await gather_all(one(b) for b in batches)
        vectors = [v for out in outputs for v in out.vectors]
        dims = {len(v) for v in vectors}
        if len(dims) > 1 or 0 in dims:
            raise UpstreamUnavailable(f"upstream returned vectors of unequal or zero length {sorted(dims)} ({where})")
        reported = [out.tokens for out in outputs]
        tokens = None if any(t is None for t in reported) else sum(t for t in reported if t is not None)
        return vectors, tokens
