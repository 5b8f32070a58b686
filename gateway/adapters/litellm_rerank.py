"""Rerank through ``litellm.arerank``.

Checked against a recording upstream with litellm 1.106.2 (``api_base`` is what to configure):

- ``cohere/``       POST {api_base}/v2/rerank (api_base is the host root; a trailing /v1 or
                    /v2 is dropped here, litellm would append /v2/rerank to it)
- ``jina_ai/``      POST {host of api_base}/v1/rerank (litellm replaces the path; needs an api_key)
- ``hosted_vllm/``  POST {api_base}/rerank (api_base ".../v1" -> /v1/rerank)
- ``infinity/``     POST {api_base}/rerank
- ``together_ai/``, ``fireworks_ai/``  POST {api_base}/rerank; ``azure_ai/`` POST {host}/v1/rerank
- ``voyage/``       POST {api_base}/rerank (``top_k``, answer in ``data``)
- ``xinference/``   Xinference's /v1/rerank is Jina/Cohere-shaped and keyless, which litellm's
                    hosted_vllm provider speaks: the target is sent as ``hosted_vllm/`` with
                    ``{api_base}/v1``.

litellm ignores ``extra_headers`` for rerank (it reads ``headers``), and asks for the
documents back by default; the gateway needs neither documents nor their bandwidth.
Image documents only go to ``jina_ai/`` (jina-reranker-m0 takes ``{"image": base64}``).
"""

from __future__ import annotations

import base64
from typing import Any

from gateway.adapters.base import MediaInput, RerankCall, RerankOutput, ScoredDoc
from gateway.adapters.litellm_common import (
    bare_model,
    call_litellm,
    call_params,
    deadline_s,
    litellm_module,
    provider_prefix,
    target_kwargs,
)
from gateway.adapters.litellm_media import decode_base64, sniff_image
from gateway.errors import BadRequest, UpstreamUnavailable

XINFERENCE_PREFIX = "xinference/"
# Target params a rerank call takes (others are for completions).
PARAMS = frozenset(
    {
        "rank_fields",
        "max_chunks_per_doc",
        "max_tokens_per_doc",
        "instruction",
        "truncate_prompt_tokens",
        "truncation_side",
        "max_tokens_per_query",
    }
)


def _strip_suffix(url: str, *suffixes: str) -> str:
    url = url.rstrip("/")
    for suffix in suffixes:
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def litellm_target(model: str, api_base: str | None) -> tuple[str, str | None]:
    """The (model, api_base) litellm should get for a configured target."""
    provider = provider_prefix(model)
    if provider == "xinference" and api_base:
        return f"hosted_vllm/{bare_model(model)}", _strip_suffix(api_base, "/v1") + "/v1"
    if provider == "cohere" and api_base:
        return model, _strip_suffix(api_base, "/v2/rerank", "/v1/rerank", "/v1", "/v2")
    return model, api_base


def parse_results(results: Any, count: int) -> list[ScoredDoc]:
    """``ScoredDoc``s from litellm's results; raises ``ValueError`` when they make no sense."""
    scores: list[ScoredDoc] = []
    seen: set[int] = set()
    for item in results or []:
        index = item.get("index") if isinstance(item, dict) else getattr(item, "index", None)
        score = item.get("relevance_score") if isinstance(item, dict) else getattr(item, "relevance_score", None)
        if not isinstance(index, int) or not 0 <= index < count or index in seen:
            raise ValueError("result indexes do not match the documents")
        if not isinstance(score, int | float) or isinstance(score, bool):
            raise ValueError("a result without a numeric relevance_score")
        seen.add(index)
        scores.append(ScoredDoc(index=index, score=float(score)))
    return scores


def reported_tokens(meta: Any) -> int | None:
    if not isinstance(meta, dict):
        return None
    tokens = (meta.get("tokens") or {}).get("input_tokens") or (meta.get("billed_units") or {}).get("total_tokens")
    return tokens if isinstance(tokens, int) and tokens > 0 else None


class LiteLLMRerankAdapter:
    async def rerank(self, call: RerankCall) -> RerankOutput:
        where = call.context.describe(call.target)
        if call.target.model.startswith(XINFERENCE_PREFIX) and not call.target.config.api_base:
            raise BadRequest(f"target {call.target.model!r} needs an api_base, the Xinference server ({where})")
        model, api_base = litellm_target(call.target.model, call.target.config.api_base)
        if call.query.kind != "text":
            raise BadRequest(f"target {call.target.model!r} cannot rerank with a {call.query.kind} query ({where})")
        documents = self._documents(call.docs, provider_prefix(model), call.target.model, where)
        if not documents:
            return RerankOutput(scores=[])
        timeout = deadline_s(call.target, call.timeout_s)
        kwargs = target_kwargs(call.target, timeout)
        kwargs["model"] = model
        if api_base:
            kwargs["api_base"] = api_base
        if call.target.config.headers:
            kwargs["headers"] = dict(call.target.config.headers)
        kwargs["return_documents"] = False
        if call.top_n and 0 < call.top_n < len(documents):
            kwargs["top_n"] = call.top_n
        kwargs.update(call_params(call.target, PARAMS))
        litellm = await litellm_module()
        response = await call_litellm(
            lambda: litellm.arerank(query=call.query.content, documents=documents, **kwargs),
            timeout,
            where,
            kwargs.get("api_key"),
        )
        try:
            scores = parse_results(getattr(response, "results", None), len(documents))
        except ValueError as exc:
            raise UpstreamUnavailable(f"malformed reply from upstream ({where}): {exc}") from exc
        return RerankOutput(scores=scores, tokens=reported_tokens(getattr(response, "meta", None)))

    @staticmethod
    def _documents(docs: list[MediaInput], provider: str, model: str, where: str) -> list[Any]:
        if all(d.kind == "text" for d in docs):
            return [d.content for d in docs]
        out: list[Any] = []
        for position, doc in enumerate(docs):
            if doc.kind == "text":
                out.append({"text": doc.content})
                continue
            if doc.kind != "image" or provider != "jina_ai":
                raise BadRequest(f"target {model!r} cannot rerank {doc.kind} documents ({where})")
            try:
                data = decode_base64(doc.content)
            except ValueError as exc:
                raise BadRequest(f"image document {position}: {exc} ({where})") from exc
            if sniff_image(data) is None:
                raise BadRequest(f"image document {position}: not a PNG, JPEG, GIF or WebP image ({where})")
            out.append({"image": base64.b64encode(data).decode("ascii")})
        return out
