"""What each scenario sends to each kind of system, and what a good reply looks like.

Two kinds of system: ``dify`` (the gateway, spoken to as the plugin daemon does) and
``openai`` (the LiteLLM proxy and the fake upstream itself, spoken to as an OpenAI client
does). Every request carries its id as ``bid:<id>`` at the start of the user message, the
embedding inputs or the rerank query, so the fake upstream can report its service time for
that very request whichever system passed it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bench.loadgen import RID

TAG = "bid:" + RID
EMBED_INPUTS = 16
RERANK_DOCS = 20
RERANK_TOP_N = 5


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    stream: bool = False


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario("llm", "LLM non-stream"),
        Scenario("llm-stream", "LLM stream", stream=True),
        Scenario("embed", f"embeddings {EMBED_INPUTS} inputs"),
        Scenario("embed-cached", f"embeddings {EMBED_INPUTS} inputs, cached"),
        Scenario("rerank", f"rerank {RERANK_DOCS} docs, top {RERANK_TOP_N}"),
    )
}


@dataclass(frozen=True)
class Models:
    """(provider, model) per type as the daemon would name them, and the LLM's max_tokens.
    The ``openai`` systems use the model names only."""

    llm: tuple[str, str] = ("langgenius/openai/openai", "gpt-bench")
    embedding: tuple[str, str] = ("langgenius/openai/openai", "text-embedding-bench")
    rerank: tuple[str, str] = ("langgenius/openai/openai", "rerank-bench")
    max_tokens: int = 256


@dataclass(frozen=True)
class Request:
    path: str
    template: str  # JSON body with RID placeholders
    reply: str  # frames | envelope | sse | json (see bench.loadgen)
    count_path: tuple[str, ...] = ()
    expect_count: int = 0
    upstream_calls: bool = True  # False: the reply is served without the upstream (cache hits)


def _texts(tagged: bool) -> list[str]:
    head = f"{TAG} " if tagged else "bid:cached "
    return [
        f"{head}passage {k}: the gateway answers the plugin daemon's model calls with low overhead."
        for k in range(EMBED_INPUTS)
    ]


_DOCS = [f"document {k} describes how a model gateway routes, caches and streams replies." for k in range(RERANK_DOCS)]
_RERANK_QUERY = f"{TAG} which document explains streaming?"


def _json(body: dict[str, Any]) -> str:
    return orjson.dumps(body).decode()


def _dify(scenario: Scenario, models: Models) -> Request:
    base: dict[str, Any] = {"tenant_id": "bench-tenant", "user_id": "bench-user"}
    if scenario.key in ("llm", "llm-stream"):
        provider, model = models.llm
        body: dict[str, Any] = {
            **base,
            "type": "llm",
            "provider": provider,
            "model": model,
            "mode": "chat",
            "completion_params": {"temperature": 0.1, "max_tokens": models.max_tokens},
            "prompt_messages": [
                {"role": "system", "content": "You are terse.", "name": "", "tool_calls": None, "tool_call_id": ""},
                {"role": "user", "content": f"{TAG} Hello?", "name": "", "tool_calls": None, "tool_call_id": ""},
            ],
            "tools": None,
            "stop": None,
            "stream": scenario.stream,
        }
        return Request("/inner/api/invoke/llm", _json(body), "frames")
    if scenario.key in ("embed", "embed-cached"):
        provider, model = models.embedding
        cached = scenario.key == "embed-cached"
        body = {
            **base,
            "type": "text_embedding",
            "provider": provider,
            "model": model,
            "texts": _texts(tagged=not cached),
            "input_type": "document",
        }
        return Request(
            "/inner/api/invoke/text-embedding",
            _json(body),
            "envelope",
            ("data", "embeddings"),
            EMBED_INPUTS,
            upstream_calls=not cached,
        )
    provider, model = models.rerank
    body = {
        **base,
        "type": "rerank",
        "provider": provider,
        "model": model,
        "query": _RERANK_QUERY,
        "docs": _DOCS,
        "score_threshold": 0,
        "top_n": RERANK_TOP_N,
    }
    return Request("/inner/api/invoke/rerank", _json(body), "envelope", ("data", "docs"), RERANK_TOP_N)


def _openai(scenario: Scenario, models: Models, rerank_path: str) -> Request:
    if scenario.key in ("llm", "llm-stream"):
        body: dict[str, Any] = {
            "model": models.llm[1],
            "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"{TAG} Hello?"}],
            "temperature": 0.1,
            "max_tokens": models.max_tokens,
        }
        if scenario.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}  # as the gateway asks
            return Request("/v1/chat/completions", _json(body), "sse")
        return Request("/v1/chat/completions", _json(body), "json", ("choices",), 1)
    if scenario.key in ("embed", "embed-cached"):
        # No cache in front of these: the "cached" scenario is plain embeddings for them.
        body = {"model": models.embedding[1], "input": _texts(tagged=True)}
        return Request("/v1/embeddings", _json(body), "json", ("data",), EMBED_INPUTS)
    body = {"model": models.rerank[1], "query": _RERANK_QUERY, "documents": _DOCS, "top_n": RERANK_TOP_N}
    return Request(rerank_path, _json(body), "json", ("results",), RERANK_TOP_N)


def request_for(kind: str, scenario: Scenario, models: Models, rerank_path: str = "/v1/rerank") -> Request:
    return _dify(scenario, models) if kind == "dify" else _openai(scenario, models, rerank_path)


def parse_model(value: str) -> tuple[str, str]:
    """``provider:model`` (the first colon splits) as a command-line value."""
    provider, sep, model = value.partition(":")
    if not sep or not provider or not model:
        raise ValueError(f"expected provider:model, got {value!r}")
    return provider, model
