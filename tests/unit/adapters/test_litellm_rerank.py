"""gateway.adapters.litellm_rerank: the litellm model and base for a target, and parsing its results."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.adapters.base import ScoredDoc
from gateway.adapters.litellm_rerank import litellm_target, parse_results


def test_litellm_rerank_targets() -> None:
    assert litellm_target("xinference/bge-reranker", "http://x:9997") == (
        "hosted_vllm/bge-reranker",
        "http://x:9997/v1",
    )
    assert litellm_target("xinference/bge-reranker", "http://x:9997/v1/") == (
        "hosted_vllm/bge-reranker",
        "http://x:9997/v1",
    )
    assert litellm_target("cohere/rerank-v3.5", "https://api.cohere.com/v2") == (
        "cohere/rerank-v3.5",
        "https://api.cohere.com",
    )
    assert litellm_target("jina_ai/m", "https://api.jina.ai/v1") == ("jina_ai/m", "https://api.jina.ai/v1")


def test_parse_results() -> None:
    results = [{"index": 1, "relevance_score": 0.9}, SimpleNamespace(index=0, relevance_score=0)]
    assert parse_results(results, 2) == [ScoredDoc(1, 0.9), ScoredDoc(0, 0.0)]
    for bad in ([{"index": 2, "relevance_score": 1.0}], [{"index": 0, "relevance_score": "high"}]):
        with pytest.raises(ValueError):
            parse_results(bad, 2)
