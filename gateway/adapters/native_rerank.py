"""Native rerank for Cohere-shaped ``/rerank`` APIs: Cohere itself, vLLM and Xinference.

litellm's ``arerank`` costs tens of milliseconds of CPU per call; these servers all take
the same JSON (``model``, ``query``, ``documents``, ``top_n``, ``return_documents``) and
answer ``{"results": [{"index", "relevance_score"}], "meta": ...}``, so the shared HTTP
client sends it directly. The request is the one litellm 1.106.2 sends (path, body and
``Authorization``; a test compares the two), except that a target without a key sends no
``Authorization`` header (litellm sends a placeholder).

Selection (``native_rerank``): ``cohere/`` with an ``api_key`` (without one litellm reads
``COHERE_API_KEY``), ``hosted_vllm/`` and ``xinference/`` with an ``api_base``; text query
and documents; no ``litellm_params``; ``native: false`` keeps a target on litellm. Image
documents, other providers and everything else stay on litellm.
"""

from __future__ import annotations

from typing import Any

from gateway.adapters.base import RerankAdapter, RerankCall, RerankOutput
from gateway.adapters.litellm_common import bare_model, call_params, deadline_s, provider_prefix
from gateway.adapters.litellm_rerank import PARAMS, litellm_target, parse_results, reported_tokens
from gateway.errors import UpstreamUnavailable
from gateway.http_client import HttpClient
from gateway.routing import Target
from gateway.trace import current_trace

COHERE_BASE = "https://api.cohere.ai"


def native_rerank(target: Target) -> bool:
    """Whether this client serves the target's rerank calls (its backend, resolved with the
    target: see gateway.config.backends)."""
    return target.backend.client("rerank") == "rerank"


def rerank_url(target: Target) -> str:
    """The URL litellm posts to for this target (see ``litellm_rerank``'s table)."""
    model, api_base = litellm_target(target.model, target.config.api_base)
    if provider_prefix(model) == "cohere":
        return f"{(api_base or COHERE_BASE).rstrip('/')}/v2/rerank"
    if not api_base:
        raise UpstreamUnavailable(f"target {target.model!r} needs an api_base for rerank")
    return f"{api_base.rstrip('/')}/rerank"


class NativeRerank:
    """The native client; ``fallback`` (litellm) serves calls with non-text inputs."""

    def __init__(self, http: HttpClient, fallback: RerankAdapter) -> None:
        self._http = http
        self._fallback = fallback

    async def rerank(self, call: RerankCall) -> RerankOutput:
        if call.query.kind != "text" or any(doc.kind != "text" for doc in call.docs):
            return await self._fallback.rerank(call)  # it knows which providers take images
        if not call.docs:
            return RerankOutput(scores=[])
        target = call.target
        where = call.context.describe(target)
        documents = [doc.content for doc in call.docs]
        body: dict[str, Any] = {"model": bare_model(target.model), "query": call.query.content}
        if call.top_n and 0 < call.top_n < len(documents):
            body["top_n"] = call.top_n
        body["documents"] = documents
        body["return_documents"] = False
        body.update(call_params(target, PARAMS))
        secret = target.config.api_key.get_secret_value() if target.config.api_key else None
        reply = await self._http.post_json(
            rerank_url(target),
            body,
            timeout_s=deadline_s(target, call.timeout_s),
            where=where,
            headers=_headers(target, secret),
            secret=secret,
        )
        data = reply.data if isinstance(reply.data, dict) else {}
        try:
            scores = parse_results(data.get("results"), len(documents))
        except ValueError as exc:
            raise UpstreamUnavailable(f"malformed reply from upstream ({where}): {exc}") from exc
        return RerankOutput(scores=scores, tokens=_tokens(data))


def _tokens(data: dict[str, Any]) -> int | None:
    """vLLM reports ``usage.total_tokens``; Cohere and Xinference a Cohere-style ``meta``."""
    usage = data.get("usage")
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    if isinstance(total, int) and not isinstance(total, bool) and total > 0:
        return total
    return reported_tokens(data.get("meta"))


def _headers(target: Target, secret: str | None) -> dict[str, str]:
    headers = dict(target.config.headers)
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    trace = current_trace.get()
    if trace is not None and trace.traceparent:
        headers["traceparent"] = trace.traceparent
    return headers
