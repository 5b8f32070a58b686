"""Every remote adapter against upstream failures, and its connection reuse.

One table of adapters, one table of faults: each failure must become the right
``UpstreamError`` after exactly one upstream attempt (the gateway owns retries), with a
message naming route, provider and model and never the API key, even when the upstream
echoes it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from gateway.adapters.base import (
    EmbeddingCall,
    MediaInput,
    ModerationCall,
    RerankCall,
    SpeechCall,
    TranscriptionCall,
    UpstreamContext,
)
from gateway.adapters.http_tei import TeiAdapter
from gateway.adapters.litellm_embedding import LiteLLMEmbeddingAdapter
from gateway.adapters.litellm_moderation import LiteLLMModerationAdapter
from gateway.adapters.litellm_rerank import LiteLLMRerankAdapter
from gateway.adapters.litellm_speech import LiteLLMSpeechAdapter
from gateway.adapters.litellm_transcription import LiteLLMTranscriptionAdapter
from gateway.audio import MP3
from gateway.config import TargetConfig
from gateway.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.http_client import HttpClient
from gateway.routing import Target
from tests.fakes.upstream import Behaviour, FakeUpstream, Hang, HttpError, Reset

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "sk-never-show-me-1234"
CTX = UpstreamContext(route="r-err", provider="langgenius/acme/acme", model="m-err")
HANG_TIMEOUT_S = 0.5
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(16)).decode()


@dataclass
class Adapters:
    embedding: LiteLLMEmbeddingAdapter
    rerank: LiteLLMRerankAdapter
    speech: LiteLLMSpeechAdapter
    transcription: LiteLLMTranscriptionAdapter
    moderation: LiteLLMModerationAdapter
    tei: TeiAdapter


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def adapters() -> AsyncIterator[Adapters]:
    http = HttpClient()
    adapters = Adapters(
        LiteLLMEmbeddingAdapter(),
        LiteLLMRerankAdapter(),
        LiteLLMSpeechAdapter(),
        LiteLLMTranscriptionAdapter(),
        LiteLLMModerationAdapter(),
        TeiAdapter(http),
    )
    yield adapters
    await adapters.speech.aclose()
    await adapters.transcription.aclose()
    await adapters.moderation.aclose()
    await http.aclose()


def target(model: str, api_base: str) -> Target:
    return Target(config=TargetConfig(model=model, api_base=api_base, api_key=SecretStr(SECRET)), model=model)


Invoke = Callable[[Adapters, FakeUpstream, float], Awaitable[Any]]


def _embed(model: str, base: str, inputs: list[MediaInput] | None = None) -> Invoke:
    def invoke(a: Adapters, fake: FakeUpstream, timeout: float) -> Awaitable[Any]:
        t = target(model, fake.root_url + base)
        adapter = a.tei if model.startswith("tei/") else a.embedding
        items = inputs or [MediaInput.text("hello"), MediaInput.text("world")]
        return adapter.embed(EmbeddingCall(t, CTX, items, "query", timeout))

    return invoke


def _rerank(model: str, base: str) -> Invoke:
    def invoke(a: Adapters, fake: FakeUpstream, timeout: float) -> Awaitable[Any]:
        t = target(model, fake.root_url + base)
        adapter = a.tei if model.startswith("tei/") else a.rerank
        docs = [MediaInput.text("a"), MediaInput.text("b")]
        return adapter.rerank(RerankCall(t, CTX, MediaInput.text("b"), docs, None, timeout))

    return invoke


def _speech(a: Adapters, fake: FakeUpstream, timeout: float) -> Awaitable[Any]:
    return a.speech.speak(SpeechCall(target("openai/tts-1", fake.base_url), CTX, "Hello.", "alloy", timeout))


def _transcription(a: Adapters, fake: FakeUpstream, timeout: float) -> Awaitable[Any]:
    t = target("openai/whisper-1", fake.base_url)
    return a.transcription.transcribe(TranscriptionCall(t, CTX, b"ID3\x03\x00" + bytes(32), MP3, timeout))


def _moderation(a: Adapters, fake: FakeUpstream, timeout: float) -> Awaitable[Any]:
    t = target("openai/omni-moderation-latest", fake.base_url)
    return a.moderation.moderate(ModerationCall(t, CTX, "some text", timeout))


CASES: dict[str, Invoke] = {
    "embed-openai": _embed("openai/text-embedding-3-small", "/v1"),
    "embed-cohere": _embed("cohere/embed-english-v3.0", ""),
    "embed-voyage": _embed("voyage/voyage-3", "/v1"),
    "embed-jina-image": _embed("jina_ai/jina-clip-v2", "/v1", [MediaInput.text("a"), MediaInput("image", PNG)]),
    "embed-gemini": _embed("gemini/text-embedding-004", ""),
    "embed-tei": _embed("tei/bge-small", ""),
    "rerank-cohere": _rerank("cohere/rerank-v3.5", ""),
    "rerank-jina": _rerank("jina_ai/jina-reranker-v2-base-multilingual", "/v1"),
    "rerank-hosted_vllm": _rerank("hosted_vllm/bge-reranker-v2-m3", "/v1"),
    "rerank-xinference": _rerank("xinference/bge-reranker-v2-m3", ""),
    "rerank-tei": _rerank("tei/bge-reranker-base", ""),
    "speech": _speech,
    "transcription": _transcription,
    "moderation": _moderation,
}

FAULTS: dict[str, tuple[Behaviour, type[UpstreamError], int | None]] = {
    "401": (
        HttpError(401, body={"error": {"message": f"Incorrect API key provided: {SECRET}"}}),
        UpstreamAuthError,
        401,
    ),
    "400": (HttpError(400), UpstreamBadRequest, 400),
    "422": (HttpError(422), UpstreamBadRequest, 422),
    "429": (HttpError(429, headers={"Retry-After": "1"}), UpstreamRateLimited, 429),
    "500": (HttpError(500), UpstreamUnavailable, 500),
    "503-html": (HttpError(503, body="<html>Service Unavailable</html>"), UpstreamUnavailable, 503),
    "reset": (Reset(), UpstreamUnavailable, None),
}


def assert_clean_message(err: UpstreamError) -> None:
    message = err.message
    assert "route 'r-err'" in message, message
    assert "provider 'langgenius/acme/acme'" in message, message
    assert "model 'm-err'" in message, message
    assert SECRET not in message and SECRET not in str(err), message


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("case", CASES)
async def test_upstream_failures_map_after_one_attempt(
    adapters: Adapters, fake: FakeUpstream, case: str, fault: str
) -> None:
    behaviour, expected, status = FAULTS[fault]
    fake.default(behaviour)
    with pytest.raises(UpstreamError) as info:
        await CASES[case](adapters, fake, 10.0)
    assert type(info.value) is expected, info.value.message
    if status is not None:
        assert info.value.upstream_status == status
    assert_clean_message(info.value)
    # Exactly one: litellm's own re-sends (its HTTP client after a reset, the OpenAI path
    # after a 422) are turned off; retries are the gateway's.
    assert len(fake.requests) == 1, [r.path for r in fake.requests]


@pytest.mark.parametrize("case", CASES)
async def test_a_hanging_upstream_times_out_within_the_bound(adapters: Adapters, fake: FakeUpstream, case: str) -> None:
    fake.default(Hang())
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        await CASES[case](adapters, fake, HANG_TIMEOUT_S)
    elapsed = time.monotonic() - started
    assert HANG_TIMEOUT_S * 0.9 <= elapsed < HANG_TIMEOUT_S + 1.0
    assert_clean_message(info.value)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("case", CASES)
async def test_connections_are_reused(adapters: Adapters, fake: FakeUpstream, case: str) -> None:
    for _ in range(20):
        await CASES[case](adapters, fake, 10.0)
    ports = {r.client_port for r in fake.requests}
    assert len(fake.requests) == 20
    assert len(ports) <= 2, f"{len(ports)} connections for 20 sequential calls"
