"""gateway.adapters.local.transcription, run for real: Whisper hears the spoken test sentence."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.adapters.local.runtime import LocalModels
from gateway.audio import MP3, WAV
from gateway.errors import BadRequest, UpstreamTimeout
from tests.unit.adapters.local.helpers import (
    CONTAINERS,
    MIN_WORD_SHARE,
    SENTENCE,
    sentence_file,
    transcribe,
    wav_bytes,
    word_share,
)


@pytest.mark.asyncio
@pytest.mark.parametrize("container", ["mp3", "wav", "flac", "ogg-opus"])
async def test_speech_round_trips_through_transcription(models: LocalModels, container: str) -> None:
    fmt, _build = CONTAINERS[container]
    transcript = await transcribe(models, sentence_file(container), fmt)
    assert word_share(SENTENCE, transcript) >= MIN_WORD_SHARE, transcript


@pytest.mark.asyncio
async def test_silence_and_empty_audio_transcribe_to_nothing(models: LocalModels) -> None:
    assert await transcribe(models, wav_bytes(np.zeros(16000 * 2, dtype=np.int16), 16000), WAV) == ""
    assert await transcribe(models, wav_bytes(np.zeros(0, dtype=np.int16), 16000), WAV) == ""
    assert await transcribe(models, b"", MP3) == ""


@pytest.mark.asyncio
async def test_undecodable_audio_is_a_bad_request(models: LocalModels) -> None:
    garbage = b"RIFF\x10\x00\x00\x00WAVEthis is not a wave file at all" * 20
    with pytest.raises(BadRequest, match=r"local/whisper-tiny\.en: could not decode the audio \(format: wav\)"):
        await transcribe(models, garbage, WAV)


@pytest.mark.asyncio
async def test_a_call_that_waits_past_its_timeout_is_dropped(models: LocalModels) -> None:
    audio = sentence_file("wav")
    busy = asyncio.create_task(transcribe(models, audio, WAV))
    with pytest.raises(UpstreamTimeout, match="local/whisper-tiny.en: no result within 0.05 s"):
        await transcribe(models, audio, WAV, timeout_s=0.05)
    assert word_share(SENTENCE, await busy) >= MIN_WORD_SHARE
