"""``/invoke/rerank`` and ``/invoke/multimodal-rerank``: score, then sort, filter and cut.

Semantics (spec 3.4, 3.6): docs sorted by score, best first (equal scores keep request
order); ``index`` is the position in the request; ``score_threshold`` keeps docs scoring at
least that much; ``top_n`` keeps at most that many. ``0`` (or null) means unset for both,
as the daemon turns an omitted value into 0.
"""

from __future__ import annotations

from gateway.adapters.base import MediaInput, RerankCall, RerankOutput, ScoredDoc
from gateway.errors import UpstreamUnavailable
from gateway.invoke.common import RoutedService, call_upstream, resolve, upstream_context
from gateway.protocol.requests import MultimodalRerankInvokeRequest, RerankInvokeRequest
from gateway.protocol.results import RerankDocDict, RerankResultDict
from gateway.routing import Target


def rank(
    scores: list[ScoredDoc], texts: list[str], threshold: float | None, top_n: int | None, where: str
) -> list[RerankDocDict]:
    seen: set[int] = set()
    for doc in scores:
        if not 0 <= doc.index < len(texts) or doc.index in seen:
            raise UpstreamUnavailable(f"upstream returned an invalid or repeated document index {doc.index} ({where})")
        seen.add(doc.index)
    ordered = sorted(scores, key=lambda d: (-d.score, d.index))
    if threshold:
        ordered = [d for d in ordered if d.score >= threshold]
    if top_n and top_n > 0:
        ordered = ordered[:top_n]
    return [{"index": d.index, "text": texts[d.index], "score": d.score} for d in ordered]


class RerankService(RoutedService):
    async def rerank(self, request: RerankInvokeRequest | MultimodalRerankInvokeRequest) -> RerankResultDict:
        if isinstance(request, RerankInvokeRequest):
            model_type, query = "rerank", MediaInput.text(request.query)
            docs = [MediaInput.text(d) for d in request.docs]
        else:
            model_type, query = "multimodal-rerank", MediaInput(request.query.content_type, request.query.content)
            docs = [MediaInput(d.content_type, d.content) for d in request.docs]
        resolution = resolve(self._routes, model_type, request.provider, request.model, request.tenant_id)
        self._limits.check(resolution, "rerank_docs", len(docs), "docs")
        if query.kind == "text":
            self._limits.check(resolution, "rerank_doc_chars", len(query.content), "query")
        lengths = (len(d.content) if d.kind == "text" else 0 for d in docs)
        self._limits.check_each(resolution, "rerank_doc_chars", lengths, "docs")
        if not docs:
            return {"model": request.model, "docs": []}
        context = upstream_context(resolution, request.provider, request.model)
        top_n = request.top_n if request.top_n and request.top_n > 0 else None
        texts = [d.content for d in docs]

        async def attempt(target: Target, timeout_s: float) -> list[RerankDocDict]:
            call = RerankCall(target, context, query, docs, top_n, timeout_s)
            output: RerankOutput = await self._backends.rerank(target).rerank(call)
            # Checked per attempt: a reply with bad indices is the backend's failure.
            return rank(output.scores, texts, request.score_threshold, top_n, context.describe(target))

        ranked, _ = await call_upstream(self._resilience, resolution, context, attempt)
        return {"model": request.model, "docs": ranked}
