"""Speech, transcription and moderation adapters against the loopback fake upstream, real litellm."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from gateway.adapters.base import (
    AudioFormat,
    ModerationCall,
    SpeechCall,
    TranscriptionCall,
    UpstreamContext,
)
from gateway.adapters.litellm_moderation import LiteLLMModerationAdapter
from gateway.adapters.litellm_speech import LiteLLMSpeechAdapter
from gateway.adapters.litellm_transcription import LiteLLMTranscriptionAdapter
from gateway.audio import MP3, WAV
from gateway.config import TargetConfig
from gateway.routing import Target
from tests.fakes.upstream import FakeUpstream, Moderation, Speech, Transcription, fake_audio

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "sk-audio-secret-3"
CTX = UpstreamContext(route="r-audio", provider="langgenius/openai/openai", model="tts-1")
WAV_BYTES = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)


def target(model: str, api_base: str | None, **config: Any) -> Target:
    return Target(config=TargetConfig(model=model, api_base=api_base, api_key=SecretStr(SECRET), **config), model=model)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def moderation() -> AsyncIterator[LiteLLMModerationAdapter]:
    adapter = LiteLLMModerationAdapter()
    yield adapter
    await adapter.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def speech() -> AsyncIterator[LiteLLMSpeechAdapter]:
    adapter = LiteLLMSpeechAdapter()
    yield adapter
    await adapter.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def transcription() -> AsyncIterator[LiteLLMTranscriptionAdapter]:
    adapter = LiteLLMTranscriptionAdapter()
    yield adapter
    await adapter.aclose()


async def test_speech_returns_mp3_by_default(speech: LiteLLMSpeechAdapter, fake: FakeUpstream) -> None:
    fake.default(Speech(size=5000))
    out = await speech.speak(
        SpeechCall(target=target("openai/tts-1", fake.base_url), context=CTX, text="Hello there.", voice="alloy")
    )
    assert out.audio == fake_audio(5000)
    assert out.mime_type == "audio/mpeg"
    (rec,) = fake.requests
    assert rec.path == "/v1/audio/speech"
    assert rec.json == {"model": "tts-1", "input": "Hello there.", "voice": "alloy", "response_format": "mp3"}


async def test_speech_format_and_speed_from_target_params(speech: LiteLLMSpeechAdapter, fake: FakeUpstream) -> None:
    fake.default(Speech(size=100, chunk_size=30, content_type="audio/ogg"))
    t = target("openai/gpt-4o-mini-tts", fake.base_url, params={"response_format": "opus", "speed": 1.25})
    out = await speech.speak(SpeechCall(target=t, context=CTX, text="Hi", voice="nova"))
    assert out.audio == fake_audio(100)  # a chunked body arrives whole
    assert out.mime_type == "audio/ogg"
    sent = fake.requests[-1].json
    assert sent["response_format"] == "opus" and sent["speed"] == 1.25


@pytest.mark.parametrize(("fmt", "data"), [(MP3, b"ID3\x03\x00" + bytes(64)), (WAV, WAV_BYTES)])
async def test_transcription_uploads_a_named_file(
    transcription: LiteLLMTranscriptionAdapter, fake: FakeUpstream, fmt: AudioFormat, data: bytes
) -> None:
    fake.default(Transcription(text="hello from the fake"))
    call = TranscriptionCall(target=target("openai/whisper-1", fake.base_url), context=CTX, audio=data, format=fmt)
    assert await transcription.transcribe(call) == "hello from the fake"
    (rec,) = fake.requests
    assert rec.path == "/v1/audio/transcriptions"
    assert rec.form["model"] == "whisper-1"
    (upload,) = rec.files
    assert (upload.field, upload.filename, upload.content_type) == ("file", f"audio.{fmt.extension}", fmt.mime_type)
    assert upload.data == data


async def test_transcription_params_reach_the_form(
    transcription: LiteLLMTranscriptionAdapter, fake: FakeUpstream
) -> None:
    t = target("openai/whisper-1", fake.base_url, params={"language": "de", "response_format": "text"})
    call = TranscriptionCall(target=t, context=CTX, audio=b"ID3\x03\x00", format=MP3)
    assert await transcription.transcribe(call) == "hello world"
    form = fake.requests[-1].form
    assert form["language"] == "de" and form["response_format"] == "text"


async def test_moderation_flags_with_category_names(moderation: LiteLLMModerationAdapter, fake: FakeUpstream) -> None:
    fake.default(Moderation(flag_words=("forbidden",), category="self-harm/intent"))
    t = target("openai/omni-moderation-latest", fake.base_url)
    out = await moderation.moderate(ModerationCall(target=t, context=CTX, text="a forbidden thing"))
    assert out.flagged is True
    assert out.categories == ["self-harm/intent"]
    clean = await moderation.moderate(ModerationCall(target=t, context=CTX, text="a nice thing"))
    assert (clean.flagged, clean.categories) == (False, [])
    assert [r.json for r in fake.requests] == [
        {"input": "a forbidden thing", "model": "omni-moderation-latest"},
        {"input": "a nice thing", "model": "omni-moderation-latest"},
    ]


async def test_configured_headers_reach_openai_audio_endpoints(
    speech: LiteLLMSpeechAdapter, transcription: LiteLLMTranscriptionAdapter, fake: FakeUpstream
) -> None:
    headers = {"X-Tenant": "t1"}
    await speech.speak(SpeechCall(target("openai/tts-1", fake.base_url, headers=headers), CTX, "Hi.", "alloy"))
    t = target("openai/whisper-1", fake.base_url, headers=headers)
    await transcription.transcribe(TranscriptionCall(t, CTX, b"ID3\x03\x00", MP3))
    assert [r.headers.get("x-tenant") for r in fake.requests] == ["t1", "t1"]
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in fake.requests)


async def test_moderation_sends_organization_and_headers(
    moderation: LiteLLMModerationAdapter, fake: FakeUpstream
) -> None:
    t = target("openai/omni-moderation-latest", fake.base_url, organization="org-1", headers={"X-Tenant": "t1"})
    await moderation.moderate(ModerationCall(target=t, context=CTX, text="x"))
    headers = fake.requests[-1].headers
    assert headers["openai-organization"] == "org-1"
    assert headers["x-tenant"] == "t1"
    assert headers["authorization"] == f"Bearer {SECRET}"
