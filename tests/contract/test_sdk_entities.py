"""Every reply kind the gateway produces, re-emitted as the daemon does, parsed by the real
SDK's entity models (dify-plugin 0.10.2 on Python 3.12, in its own virtualenv)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.upstream import Chat, FakeUpstream, Rerank, Speech, ToolCallSpec, Transcription
from tests.support.client import invoke_body, llm_request, post_stream, post_unary
from tests.support.sdk import ROOT, sdk_python
from tests.support.server import GatewayServer, gateway_config

VALIDATOR = ROOT / "tests" / "sdk" / "validate_entities.py"


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayServer]:
    def route(model_type: str, target: str, base: str) -> dict[str, Any]:
        return {"match": {"type": model_type}, "targets": [{"model": target, "api_base": base, "api_key": "sk-x"}]}

    routes = [
        route("llm", "openai/{model}", upstream.base_url),
        route("text-embedding", "openai/{model}", upstream.base_url),
        route("rerank", "cohere/{model}", upstream.root_url),
        route("tts", "openai/{model}", upstream.base_url),
        route("speech2text", "openai/{model}", upstream.base_url),
        route("moderation", "openai/{model}", upstream.base_url),
        {
            "match": {"type": ["multimodal-embedding", "multimodal-rerank"]},
            "targets": [{"model": "local/multilingual-e5-small"}],
        },
    ]
    summary = {"model": "openai/gpt-4o-mini", "api_base": upstream.base_url, "api_key": "sk-x", "context_tokens": 256}
    with GatewayServer(gateway_config(routes, summary_model=summary)) as server:
        yield server


def sdk_accepts(items: list[dict[str, Any]]) -> list[str | None]:
    out = subprocess.run(
        [sdk_python(), str(VALIDATOR)], input=json.dumps(items), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: list[str | None] = json.loads(out.stdout)
    return result


def test_the_sdk_accepts_every_reply_kind(gateway: GatewayServer, fake: FakeUpstream) -> None:
    items: list[dict[str, Any]] = []

    def streamed(path: str, body: dict[str, Any], kind: str) -> None:
        reply = post_stream(gateway.url, path, body, kind=kind)
        assert reply.outcome.error is None and reply.outcome.dropped == [] and reply.outcome.chunks
        items.extend({"kind": kind, "data": chunk} for chunk in reply.outcome.chunks)

    def unary(name: str, body: dict[str, Any], kind: str) -> None:
        items.append({"kind": kind, "data": post_unary(gateway.url, name, body).ok()})

    fake.script("m", Chat(deltas=["Hel", "lo"]), Chat(deltas=["x"]))
    streamed("/inner/api/invoke/llm", llm_request("m"), "llm")
    streamed("/inner/api/invoke/llm", llm_request("m", stream=False), "llm")
    call = ToolCallSpec(name="get_weather", arguments='{"city":"Paris"}')
    fake.script("t", Chat(deltas=[], tool_calls=[call], tool_call_split=3))
    streamed("/inner/api/invoke/llm", llm_request("t"), "llm")
    fake.script("s", Chat(deltas=['{"answer":', ' "yes"}']))
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    streamed(
        "/inner/api/invoke/llm/structured-output",
        llm_request("s", structured_output_schema=schema),
        "llm_structured_output",
    )
    unary("text-embedding", invoke_body("text_embedding", "e", texts=["a", "b"], input_type="query"), "text_embedding")
    docs = [{"content": "a cat", "content_type": "text"}]
    unary(
        "multimodal-embedding",
        invoke_body("multimodal_embedding", documents=docs, input_type="query"),
        "multimodal_embedding",
    )
    fake.script("r", Rerank(scores=[0.2, 0.9]))
    unary("rerank", invoke_body("rerank", "r", query="q", docs=["a", "b"], score_threshold=0, top_n=0), "rerank")
    unary(
        "multimodal-rerank",
        invoke_body(
            "multimodal_rerank", query={"content": "cat", "content_type": "text"}, docs=docs, score_threshold=0, top_n=0
        ),
        "multimodal_rerank",
    )
    fake.script("tts-1", Speech(size=70_000))
    streamed("/inner/api/invoke/tts", invoke_body("tts", "tts-1", content_text="Hi there.", voice="alloy"), "tts")
    fake.script("whisper-1", Transcription(text="hello"))
    unary("speech2text", invoke_body("speech2text", "whisper-1", file="4944330300"), "speech2text")
    unary("moderation", invoke_body("moderation", "mod", text="fine"), "moderation")
    fake.default(Chat(deltas=["short"]))
    text = "\n".join(f"line {n} " + "word " * 40 for n in range(30))
    unary("summary", {"tenant_id": "t", "user_id": "u", "text": text, "instruction": ""}, "system_summary")

    kinds = {i["kind"] for i in items}
    assert len(kinds) == 10, kinds
    verdicts = sdk_accepts(items)
    rejected = [(i["kind"], v) for i, v in zip(items, verdicts, strict=True) if v is not None]
    assert rejected == []
