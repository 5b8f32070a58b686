"""Runs the real dify-plugin SDK (0.10.2, Python 3.12) against a gateway's serverless
endpoint and prints what the SDK yields, as one JSON object, for the tests to check.

Usage (by tests/contract/test_sdk_serverless.py, in the SDK's own virtualenv):
    python driver.py <gateway url> <session id> <scenario> [<scenario> ...]

Each scenario's outcome is {"ok": <summary of what the SDK returned>} or {"error": "..."}.
This file must stay importable on Python 3.12 only: it is not part of the test process.
"""

from __future__ import annotations

import io
import json
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from queue import Queue
from typing import Any

from dify_plugin.config.config import InstallMethod
from dify_plugin.core.runtime import Session
from dify_plugin.core.server.__base.request_reader import RequestReader
from dify_plugin.core.server.serverless.response_writer import ServerlessResponseWriter
from dify_plugin.entities.model.llm import LLMModelConfig
from dify_plugin.entities.model.message import PromptMessageTool, SystemPromptMessage, UserPromptMessage
from dify_plugin.entities.model.moderation import ModerationModelConfig
from dify_plugin.entities.model.rerank import RerankModelConfig
from dify_plugin.entities.model.speech2text import Speech2TextModelConfig
from dify_plugin.entities.model.text_embedding import TextEmbeddingModelConfig
from dify_plugin.entities.model.tts import TTSModelConfig


class NoReader(RequestReader):  # the HTTP transaction path never reads from it
    def _read_stream(self):  # type: ignore[no-untyped-def]
        return iter(())


def session(url: str, session_id: str) -> Session:
    return Session(
        session_id=session_id,
        executor=ThreadPoolExecutor(1),
        reader=NoReader(),
        writer=ServerlessResponseWriter(Queue()),
        install_method=InstallMethod.Serverless,
        dify_plugin_daemon_url=url,
        max_invocation_timeout=60,
    )


LLM = LLMModelConfig(provider="openai", model="gpt-4o-mini", mode="chat", completion_params={"temperature": 0.1})
MESSAGES = [SystemPromptMessage(content="You are terse."), UserPromptMessage(content="Hello?")]
WEATHER = PromptMessageTool(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def usage(u: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "total_price": str(u.total_price),
        "currency": u.currency,
        "latency": u.latency,
    }


def tool_calls(calls: Any) -> list[dict[str, Any]]:
    return [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in calls]


def llm_stream(s: Session) -> Any:
    chunks = list(s.model.llm.invoke(LLM, MESSAGES, stream=True))
    return {
        "types": sorted({type(c).__name__ for c in chunks}),
        "texts": [c.delta.message.content for c in chunks],
        "usages": [usage(c.delta.usage) for c in chunks if c.delta.usage is not None],
        "finish_reasons": [c.delta.finish_reason for c in chunks],
        "model": chunks[-1].model,
    }


def llm_nonstream(s: Session) -> Any:
    result = s.model.llm.invoke(LLM, MESSAGES, stream=False)
    return {
        "type": type(result).__name__,
        "content": result.message.content,
        "usage": usage(result.usage),
        "tool_calls": tool_calls(result.message.tool_calls),
    }


def llm_tools_stream(s: Session) -> Any:
    chunks = list(s.model.llm.invoke(LLM, MESSAGES, tools=[WEATHER], stream=True))
    return {"tool_calls": [tool_calls(c.delta.message.tool_calls) for c in chunks if c.delta.message.tool_calls]}


def llm_tools_nonstream(s: Session) -> Any:
    result = s.model.llm.invoke(LLM, MESSAGES, tools=[WEATHER], stream=False)
    return {"tool_calls": tool_calls(result.message.tool_calls), "usage": usage(result.usage)}


SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def structured_stream(s: Session) -> Any:
    chunks = list(s.model.llm_structured_output.invoke(LLM, MESSAGES, SCHEMA, stream=True))
    return {
        "types": sorted({type(c).__name__ for c in chunks}),
        "text": "".join(str(c.delta.message.content) for c in chunks),
        "structured": [c.structured_output for c in chunks if c.structured_output is not None],
        "usages": [usage(c.delta.usage) for c in chunks if c.delta.usage is not None],
    }


def structured_nonstream(s: Session) -> Any:
    result = s.model.llm_structured_output.invoke(LLM, MESSAGES, SCHEMA, stream=False)
    return {"type": type(result).__name__, "structured": result.structured_output, "usage": usage(result.usage)}


def text_embedding(s: Session) -> Any:
    config = TextEmbeddingModelConfig(provider="openai", model="text-embedding-3-small")
    result = s.model.text_embedding.invoke(config, ["hello world", "second text"])
    return {
        "type": type(result).__name__,
        "model": result.model,
        "embeddings": result.embeddings,
        "tokens": result.usage.tokens,
        "total_price": str(result.usage.total_price),
    }


def rerank(s: Session) -> Any:
    config = RerankModelConfig(provider="cohere", model="rerank-v3.5", score_threshold=0.1, top_n=2)
    result = s.model.rerank.invoke(config, ["a cat sat", "dogs bark", "the cat"], "cat")
    return {"type": type(result).__name__, "docs": [d.model_dump() for d in result.docs]}


def tts(s: Session) -> Any:
    config = TTSModelConfig(provider="openai", model="tts-1", voice="alloy")
    chunks = list(s.model.tts.invoke(config, "Hello there. This is the gateway."))
    return {"types": sorted({type(c).__name__ for c in chunks}), "bytes": b"".join(chunks).hex()}


def speech2text(s: Session) -> Any:
    config = Speech2TextModelConfig(provider="openai", model="whisper-1")
    return {"text": s.model.speech2text.invoke(config, io.BytesIO(b"ID3\x03\x00fake mp3 bytes"))}


def moderation(s: Session) -> Any:
    config = ModerationModelConfig(provider="openai", model="omni-moderation-latest")
    return {
        "clean": s.model.moderation.invoke(config, "a friendly text"),
        "flagged": s.model.moderation.invoke(config, "this is forbidden"),
    }


def summary(s: Session) -> Any:
    long_text = "\n".join(f"Paragraph {n}: the gateway answers model calls for plugins." for n in range(40))
    return {
        "short": s.model.summary.invoke("too short to summarise", ""),
        "long": s.model.summary.invoke(long_text, "brief"),
    }


def error_unknown_model(s: Session) -> Any:
    config = TextEmbeddingModelConfig(provider="acme", model="nope")
    return s.model.text_embedding.invoke(config, ["x"]).model


SCENARIOS: dict[str, Callable[[Session], Any]] = {
    f.__name__: f
    for f in (
        llm_stream,
        llm_nonstream,
        llm_tools_stream,
        llm_tools_nonstream,
        structured_stream,
        structured_nonstream,
        text_embedding,
        rerank,
        tts,
        speech2text,
        moderation,
        summary,
        error_unknown_model,
    )
}


def main() -> None:
    url, session_id, *names = sys.argv[1:]
    s = session(url, session_id)
    report: dict[str, Any] = {}
    for name in names:
        try:
            report[name] = {"ok": SCENARIOS[name](s)}
        except Exception as exc:  # what the plugin would see
            report[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
