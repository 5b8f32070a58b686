"""The dispatch table of gateway/adapters/registry.py: every backend kind x capability, the kinds
derived from today's model prefixes, and explicit ``backend:`` kinds."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.adapters.http_tei import TeiAdapter
from gateway.adapters.litellm_chat import LiteLLMChatAdapter
from gateway.adapters.litellm_embedding import LiteLLMEmbeddingAdapter
from gateway.adapters.litellm_moderation import LiteLLMModerationAdapter
from gateway.adapters.litellm_rerank import LiteLLMRerankAdapter
from gateway.adapters.litellm_speech import LiteLLMSpeechAdapter
from gateway.adapters.litellm_transcription import LiteLLMTranscriptionAdapter
from gateway.adapters.local.chat import LocalChat
from gateway.adapters.native_rerank import NativeRerank
from gateway.adapters.openai_compat import OpenAICompatChat, OpenAICompatEmbedding
from gateway.adapters.registry import Backends, uses_litellm
from gateway.config import TargetConfig
from gateway.config.backends import BACKEND_KINDS, KIND_TYPES
from gateway.errors import NoRoute
from gateway.routing import Target

CAPABILITIES = {
    "llm": "chat",
    "text-embedding": "embedding",
    "rerank": "rerank",
    "tts": "speech",
    "speech2text": "transcription",
    "moderation": "moderation",
}

# (kind, capability) -> the adapter class; a missing pair cannot be served.
EXPECTED: dict[tuple[str, str], type] = {
    ("litellm", "llm"): LiteLLMChatAdapter,
    ("litellm", "text-embedding"): LiteLLMEmbeddingAdapter,
    ("litellm", "rerank"): LiteLLMRerankAdapter,
    ("litellm", "tts"): LiteLLMSpeechAdapter,
    ("litellm", "speech2text"): LiteLLMTranscriptionAdapter,
    ("litellm", "moderation"): LiteLLMModerationAdapter,
    ("openai", "llm"): OpenAICompatChat,
    ("openai", "text-embedding"): OpenAICompatEmbedding,
    ("tei", "text-embedding"): TeiAdapter,
    ("tei", "rerank"): TeiAdapter,
    ("rerank", "rerank"): NativeRerank,
}


def target(model: str, **config: Any) -> Target:
    return Target(config=TargetConfig(model=model, **config), model=model)


@pytest.fixture
def backends() -> Backends:
    return Backends()


@pytest.mark.parametrize("kind", [k for k in BACKEND_KINDS if k != "local"])
@pytest.mark.parametrize("capability", list(CAPABILITIES))
def test_every_kind_and_capability(backends: Backends, kind: str, capability: str) -> None:
    t = target("openai/m", backend=kind, api_base="http://upstream")
    method = getattr(backends, CAPABILITIES[capability])
    expected = EXPECTED.get((kind, capability))
    if expected is None:
        assert capability not in KIND_TYPES[kind]  # type: ignore[index]
        with pytest.raises(NoRoute, match=f"backend {kind} cannot serve {capability}"):
            method(t)
    else:
        assert capability in KIND_TYPES[kind]  # type: ignore[index]
        assert type(method(t)) is expected


def test_local_llm_is_the_embedded_chat(backends: Backends) -> None:
    assert type(backends.chat(target("local/smollm2-135m-instruct"))) is LocalChat


@pytest.mark.parametrize(
    ("model", "config", "kind", "clients"),
    [
        ("openai/gpt-4o-mini", {}, "openai", {"llm": "openai", "text-embedding": "openai", "rerank": "litellm"}),
        ("openai/gpt-4o-mini", {"native": False}, "litellm", {"llm": "litellm", "text-embedding": "litellm"}),
        ("openai/gpt-4o-mini", {"api_version": "2024"}, "litellm", {"llm": "litellm"}),
        ("openai/gpt-4o-mini", {"litellm_params": {"x": 1}}, "litellm", {"llm": "litellm"}),
        ("anthropic/claude", {"native": True, "api_base": "http://a"}, "openai", {"llm": "openai", "tts": "litellm"}),
        ("hosted_vllm/m", {"api_base": "http://v"}, "openai", {"llm": "openai", "rerank": "rerank", "tts": "litellm"}),
        ("hosted_vllm/m", {}, "openai", {"llm": "openai", "rerank": "litellm"}),
        ("cohere/rerank-v3.5", {"api_key": "k"}, "rerank", {"rerank": "rerank", "llm": "litellm"}),
        ("cohere/rerank-v3.5", {}, "litellm", {"rerank": "litellm"}),
        ("xinference/bge", {"api_base": "http://x"}, "rerank", {"rerank": "rerank", "text-embedding": "litellm"}),
        ("xinference/bge", {"api_base": "http://x", "native": False}, "litellm", {"rerank": "litellm"}),
        ("tei/bge", {"api_base": "http://t"}, "tei", {"text-embedding": "tei", "rerank": "tei", "llm": None}),
        ("local/multilingual-e5-small", {}, "local", {"text-embedding": "local", "tts": "local", "llm": "local"}),
        ("voyage/voyage-3", {}, "litellm", {"text-embedding": "litellm", "rerank": "litellm"}),
    ],
)
def test_derived_kinds_match_the_prefix_rules(
    model: str, config: dict[str, Any], kind: str, clients: dict[str, str | None]
) -> None:
    backend = target(model, **config).backend
    assert backend.kind == kind
    for capability, client in clients.items():
        assert backend.client(capability) == client


def test_explicit_kind_decides_every_capability() -> None:
    backend = target("hosted_vllm/m", backend="litellm", api_base="http://v").backend
    assert backend.kind == "litellm"
    assert {backend.client(t) for t in CAPABILITIES} == {"litellm"}
    assert target("hosted_vllm/m", backend="rerank", api_base="http://v").backend.client("llm") is None


def test_uses_litellm_is_resolved_with_the_target() -> None:
    assert not uses_litellm(target("openai/m"))
    assert uses_litellm(target("openai/m", mode="completion"))  # the native client hands it to litellm
    assert not uses_litellm(target("tei/b", api_base="http://t"), ["text-embedding", "rerank"])
    assert not uses_litellm(target("local/multilingual-e5-small"), ["text-embedding", "tts"])
    native = target("cohere/r", api_key="k")
    assert not uses_litellm(native, ["rerank"])
    assert uses_litellm(native, ["multimodal-rerank"])  # image documents go through litellm
    assert uses_litellm(target("anthropic/claude"))
