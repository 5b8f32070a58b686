"""The real dify-plugin SDK (0.10.2, Python 3.12) calling the gateway's serverless
transaction endpoint for every model type, as a plugin would with no Dify install."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.upstream import (
    Chat,
    Embeddings,
    FakeUpstream,
    Moderation,
    Speech,
    ToolCallSpec,
    Transcription,
    fake_audio,
    fake_embedding,
)
from tests.support.sdk import run_scenarios, sdk_python
from tests.support.server import GatewayServer, gateway_config

SCENARIOS = [
    "llm_stream",
    "llm_nonstream",
    "llm_tools_stream",
    "llm_tools_nonstream",
    "structured_stream",
    "structured_nonstream",
    "text_embedding",
    "rerank",
    "tts",
    "speech2text",
    "moderation",
    "summary",
    "error_unknown_model",
]
WEATHER = ToolCallSpec(name="get_weather", arguments='{"city":"Paris"}', id="call_1")


@pytest.fixture(scope="module")
def report(upstream: FakeUpstream) -> Iterator[dict[str, Any]]:
    python = sdk_python()  # before the server starts: the first run creates the SDK's virtualenv
    upstream.reset()

    def route(model_type: str, target: str, base: str) -> dict[str, Any]:
        return {
            "match": {"type": model_type, "provider": "*"},
            "targets": [{"model": target, "api_base": base, "api_key": "sk-x"}],
        }

    routes = [
        route("llm", "openai/{model}", upstream.base_url),
        {
            "match": {"type": "text-embedding", "provider": "openai"},
            "targets": [{"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-x"}],
        },
        route("rerank", "cohere/{model}", upstream.root_url),
        route("tts", "openai/{model}", upstream.base_url),
        route("speech2text", "openai/{model}", upstream.base_url),
        route("moderation", "openai/{model}", upstream.base_url),
    ]
    summary = {"model": "openai/summarizer", "api_base": upstream.base_url, "api_key": "sk-x", "context_tokens": 256}
    serverless = {"enabled": True, "default_tenant": "tenant-dev"}
    json_answer = Chat(deltas=['{"answer":', ' "yes"}'])
    upstream.script(
        "gpt-4o-mini",
        Chat(deltas=["Hello", " world"]),
        Chat(deltas=["Hello", " world"]),
        Chat(deltas=[], tool_calls=[WEATHER], tool_call_split=3),
        Chat(deltas=[], tool_calls=[WEATHER], tool_call_split=3),
        json_answer,
        json_answer,
    )
    upstream.script("text-embedding-3-small", Embeddings(dims=8, usage_tokens=4))
    upstream.script("tts-1", Speech(size=5000))
    upstream.script("whisper-1", Transcription(text="hello world"))
    upstream.script("omni-moderation-latest", Moderation(flag_words=["forbidden"]))
    upstream.script("summarizer", Chat(deltas=["A summary."]))
    config = gateway_config(routes, summary_model=summary, serverless=serverless)
    with GatewayServer(config) as server:
        yield run_scenarios(python, server.url, "sess-1", SCENARIOS)
    upstream.reset()


def ok(report: dict[str, Any], name: str) -> Any:
    outcome = report[name]
    assert "ok" in outcome, outcome.get("trace") or outcome
    return outcome["ok"]


def test_llm_stream(report: dict[str, Any]) -> None:
    got = ok(report, "llm_stream")
    assert got["types"] == ["LLMResultChunk"] and "".join(got["texts"]) == "Hello world"
    assert len(got["usages"]) == 1  # usage on one chunk only: the SDK would add up more
    assert got["usages"][0]["total_tokens"] == 15 and got["finish_reasons"][-1] == "stop"


def test_llm_nonstream_aggregates_without_doubling(report: dict[str, Any]) -> None:
    got = ok(report, "llm_nonstream")
    assert got["type"] == "LLMResult" and got["content"] == "Hello world"
    assert (got["usage"]["prompt_tokens"], got["usage"]["completion_tokens"], got["usage"]["total_tokens"]) == (
        10,
        5,
        15,
    )
    assert got["tool_calls"] == []


def test_tool_calls_arrive_complete(report: dict[str, Any]) -> None:
    expected = [{"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}]
    assert ok(report, "llm_tools_stream")["tool_calls"] == [expected]
    assert ok(report, "llm_tools_nonstream")["tool_calls"] == expected


def test_structured_output(report: dict[str, Any]) -> None:
    streamed = ok(report, "structured_stream")
    assert streamed["structured"] == [{"answer": "yes"}] and len(streamed["usages"]) == 1
    whole = ok(report, "structured_nonstream")
    assert whole["type"] == "LLMResultWithStructuredOutput" and whole["structured"] == {"answer": "yes"}


def test_text_embedding(report: dict[str, Any]) -> None:
    got = ok(report, "text_embedding")
    assert got["type"] == "TextEmbeddingResult" and got["model"] == "text-embedding-3-small"
    assert got["embeddings"] == [fake_embedding("hello world", 8), fake_embedding("second text", 8)]
    assert got["tokens"] == 4


def test_rerank(report: dict[str, Any]) -> None:
    got = ok(report, "rerank")  # "dogs bark" scores 0, under the 0.1 threshold
    assert got["docs"] == [
        {"index": 0, "text": "a cat sat", "score": 1.0},
        {"index": 2, "text": "the cat", "score": 1.0},
    ]


def test_tts_bytes(report: dict[str, Any]) -> None:
    got = ok(report, "tts")
    # Two sentences, two pieces synthesised (the fake answers each with the same bytes).
    assert got["types"] == ["bytes"] and got["bytes"] == fake_audio(5000).hex() * 2


def test_speech2text_and_moderation(report: dict[str, Any]) -> None:
    assert ok(report, "speech2text") == {"text": "hello world"}
    assert ok(report, "moderation") == {"clean": False, "flagged": True}


def test_summary(report: dict[str, Any]) -> None:
    got = ok(report, "summary")
    assert got["short"] == "too short to summarise"  # the SDK itself returns short texts
    assert set(got["long"].split("\n")) == {"A summary."}


def test_an_unknown_model_raises_a_clear_error_in_the_plugin(report: dict[str, Any]) -> None:
    error = report["error_unknown_model"]["error"]
    assert "no route for text-embedding" in error and "acme" in error
