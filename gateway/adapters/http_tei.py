"""Hugging Face text-embeddings-inference (TEI) over its native HTTP API.

litellm has no TEI provider: its ``huggingface/`` embedding path asks huggingface.co for the
model's pipeline tag on every call, and its rerank path hard-codes ``truncate: false``, so
long documents fail. Targets look like ``tei/<any name>`` with ``api_base`` the TEI server.

- ``POST {api_base}/embed``  ``{"inputs": [...], "truncate": true}`` -> ``[[float, ...], ...]``
- ``POST {api_base}/rerank`` ``{"query", "texts", "raw_scores": false, "truncate": true}``
  -> ``[{"index", "score"}, ...]``

TEI refuses batches above its ``--max-client-batch-size`` (32 unless configured), so inputs
and rerank documents go up in chunks of that size (the target's ``max_batch_size``). Target params
``query_prompt_name`` / ``document_prompt_name`` choose TEI's ``prompt_name`` by input type
(for models with sentence-transformers prompts); TEI's own knobs among the target params
(``normalize``, ``truncate``, ``truncation_direction``, ``dimensions``, ``raw_scores``) go
into the bodies.
The token count comes from TEI's ``x-compute-tokens`` response header.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.adapters.base import (
    EmbeddingCall,
    EmbeddingOutput,
    EmbeddingVector,
    RerankCall,
    RerankOutput,
    ScoredDoc,
)
from gateway.errors import BadRequest, UpstreamUnavailable
from gateway.http_client import HttpClient, JsonReply
from gateway.routing import Target
from gateway.trace import current_trace

DEFAULT_BATCH = 32
MAX_PARALLEL_CHUNKS = 8
# Target params that go into the request bodies (others are for completions).
EMBED_PARAMS = frozenset({"normalize", "truncate", "truncation_direction", "dimensions", "prompt_name"})
RERANK_PARAMS = frozenset({"raw_scores", "truncate", "truncation_direction"})

T = TypeVar("T")


def _chunks(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def _tokens(reply: JsonReply) -> int | None:
    raw = reply.headers.get("x-compute-tokens")
    return int(raw) if raw is not None and raw.isdigit() else None


class TeiAdapter:
    """Embeddings and rerank against a TEI server (one class serves both model types)."""

    def __init__(self, http: HttpClient) -> None:
        self._http = http

    @staticmethod
    def _base(target: Target, where: str) -> str:
        api_base = target.config.api_base
        if not api_base:
            raise BadRequest(f"target {target.model!r} needs an api_base, the TEI server ({where})")
        return api_base.rstrip("/").removesuffix("/v1")

    @staticmethod
    def _headers(target: Target) -> dict[str, str]:
        headers = dict(target.config.headers)
        trace = current_trace.get()
        if trace is not None and trace.traceparent:
            headers["traceparent"] = trace.traceparent
        if target.config.api_key is not None:
            headers["Authorization"] = f"Bearer {target.config.api_key.get_secret_value()}"
        return headers

    @staticmethod
    def _timeout(target: Target, timeout_s: float) -> float:
        own = target.config.timeout_s
        return min(timeout_s, own) if own else timeout_s

    @staticmethod
    def max_batch(target: Target) -> int:
        return DEFAULT_BATCH

    @staticmethod
    def _batch_size(target: Target) -> int:
        return target.config.max_batch_size or DEFAULT_BATCH

    @staticmethod
    async def _bounded(jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
        if len(jobs) == 1:
            return [await jobs[0]()]
        gate = asyncio.Semaphore(MAX_PARALLEL_CHUNKS)

        async def run(job: Callable[[], Awaitable[T]]) -> T:
            async with gate:
                return await job()

        return list(await asyncio.gather(*(run(job) for job in jobs)))

    async def embed(self, call: EmbeddingCall) -> EmbeddingOutput:
        where = call.context.describe(call.target)
        if any(item.kind != "text" for item in call.inputs):
            raise BadRequest(f"target {call.target.model!r} embeds text only ({where})")
        if not call.inputs:
            return EmbeddingOutput(vectors=[], tokens=None)
        url = self._base(call.target, where) + "/embed"
        params = call.target.config.params
        body: dict[str, Any] = {"truncate": True}
        body.update({k: v for k, v in params.items() if k in EMBED_PARAMS})
        prompt = params.get("query_prompt_name" if call.input_type == "query" else "document_prompt_name")
        if prompt:
            body["prompt_name"] = prompt
        texts = [item.content for item in call.inputs]
        timeout = self._timeout(call.target, call.timeout_s)
        headers = self._headers(call.target)
        secret = call.target.config.api_key.get_secret_value() if call.target.config.api_key else None

        def job(part: range) -> Callable[[], Awaitable[JsonReply]]:
            payload = {**body, "inputs": texts[part.start : part.stop]}
            return lambda: self._http.post_json(
                url, payload, timeout_s=timeout, where=where, headers=headers, secret=secret
            )

        parts = _chunks(len(texts), self._batch_size(call.target))
        replies = await self._bounded([job(part) for part in parts])
        vectors: list[EmbeddingVector] = []
        counts: list[int] = []
        for part, reply in zip(parts, replies, strict=True):
            data = reply.data
            if not isinstance(data, list) or len(data) != len(part) or not all(_is_vector(v) for v in data):
                raise UpstreamUnavailable(f"malformed reply from upstream ({where}): expected {len(part)} vectors")
            vectors.extend(data)
            tokens = _tokens(reply)
            if tokens is not None:
                counts.append(tokens)
        return EmbeddingOutput(vectors=vectors, tokens=sum(counts) if counts else None)

    async def rerank(self, call: RerankCall) -> RerankOutput:
        where = call.context.describe(call.target)
        if call.query.kind != "text" or any(doc.kind != "text" for doc in call.docs):
            raise BadRequest(f"target {call.target.model!r} reranks text only ({where})")
        if not call.docs:
            return RerankOutput(scores=[])
        url = self._base(call.target, where) + "/rerank"
        body: dict[str, Any] = {
            "query": call.query.content,
            "raw_scores": False,
            "truncate": True,
            "return_text": False,
        }
        body.update({k: v for k, v in call.target.config.params.items() if k in RERANK_PARAMS})
        texts = [doc.content for doc in call.docs]
        timeout = self._timeout(call.target, call.timeout_s)
        headers = self._headers(call.target)
        secret = call.target.config.api_key.get_secret_value() if call.target.config.api_key else None

        def job(part: range) -> Callable[[], Awaitable[JsonReply]]:
            payload = {**body, "texts": texts[part.start : part.stop]}
            return lambda: self._http.post_json(
                url, payload, timeout_s=timeout, where=where, headers=headers, secret=secret
            )

        parts = _chunks(len(texts), self._batch_size(call.target))
        replies = await self._bounded([job(part) for part in parts])
        scores: list[ScoredDoc] = []
        counts: list[int] = []
        for part, reply in zip(parts, replies, strict=True):
            try:
                scores.extend(_scored(reply.data, part))
            except ValueError as exc:
                raise UpstreamUnavailable(f"malformed reply from upstream ({where}): {exc}") from exc
            tokens = _tokens(reply)
            if tokens is not None:
                counts.append(tokens)
        return RerankOutput(scores=scores, tokens=sum(counts) if counts else None)


def _is_vector(value: Any) -> bool:
    return isinstance(value, list) and (not value or isinstance(value[0], int | float))


def _scored(data: Any, part: range) -> list[ScoredDoc]:
    if not isinstance(data, list):
        raise ValueError("expected a list of scores")
    out: list[ScoredDoc] = []
    seen: set[int] = set()
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        score = item.get("score") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(part) or index in seen:
            raise ValueError("score indexes do not match the documents")
        if not isinstance(score, int | float) or isinstance(score, bool):
            raise ValueError("a result without a numeric score")
        seen.add(index)
        out.append(ScoredDoc(index=part.start + index, score=float(score)))
    return out
