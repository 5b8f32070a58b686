"""Calls on the embedded models and the spoken test sentence in the audio containers Dify may send,
shared by the tests of the local adapters."""

from __future__ import annotations

import functools
import io
import re
import wave
from typing import Any

import miniaudio
import numpy as np
import numpy.typing as npt

from gateway.adapters.base import EmbeddingCall, MediaInput, TranscriptionCall, UpstreamContext
from gateway.adapters.local.runtime import LocalModels
from gateway.adapters.local.speech import load_espeak
from gateway.audio import FLAC, M4A, MP3, OGG, WAV, WEBM
from gateway.catalog import EMBEDDING_MODEL, STT_MODEL
from gateway.config import TargetConfig
from gateway.routing import Target
from tests.fuzz.strategies import av_bytes

CONTEXT = UpstreamContext(route="local-test", provider="langgenius/openai/openai", model="test-model")


# Whisper tiny.en transcribes this espeak sentence word for word; 70 % leaves room for a
# slip without letting a broken pipeline (wrong sample rate, clipped audio) pass.
SENTENCE = "Please send the quarterly report to the finance team before Friday."


MIN_WORD_SHARE = 0.7


def target(model: str) -> Target:
    return Target(config=TargetConfig(model=model), model=model)


async def embed(models: LocalModels, texts: list[str], input_type: str = "document") -> list[list[float]]:
    call = EmbeddingCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        inputs=[MediaInput.text(t) for t in texts],
        input_type="query" if input_type == "query" else "document",
    )
    return (await models.embedding().embed(call)).vectors


@functools.cache
def tts_mp3(text: str, voice: str = "en-us") -> bytes:
    return load_espeak().synthesize_mp3(text, voice)


def pcm16(mp3: bytes, rate: int = 22050) -> npt.NDArray[np.int16]:
    decoded = miniaudio.decode(mp3, output_format=miniaudio.SampleFormat.SIGNED16, nchannels=1, sample_rate=rate)
    return np.frombuffer(decoded.samples, dtype=np.int16)


def wav_bytes(samples: npt.NDArray[np.int16], rate: int = 22050) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


# name -> (the reported format, a function of the reference PCM that builds the file)
CONTAINERS: dict[str, tuple[Any, Any]] = {
    "mp3": (MP3, lambda pcm: tts_mp3(SENTENCE)),
    "wav": (WAV, wav_bytes),
    "flac": (FLAC, lambda pcm: av_bytes(pcm, "flac", "flac")),
    "ogg-vorbis": (OGG, lambda pcm: av_bytes(pcm, "ogg", "vorbis")),
    "ogg-opus": (OGG, lambda pcm: av_bytes(pcm, "ogg", "libopus")),
    "webm-opus": (WEBM, lambda pcm: av_bytes(pcm, "webm", "libopus")),
    "m4a-aac": (M4A, lambda pcm: av_bytes(pcm, "ipod", "aac")),
}


@functools.cache
def sentence_file(container: str) -> bytes:
    _fmt, build = CONTAINERS[container]
    return bytes(build(pcm16(tts_mp3(SENTENCE))))


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def word_share(expected: str, actual: str) -> float:
    heard = set(words(actual))
    wanted = words(expected)
    return sum(word in heard for word in wanted) / len(wanted)


async def transcribe(models: LocalModels, audio: bytes, fmt: Any, timeout_s: float = 230.0) -> str:
    call = TranscriptionCall(target=target(STT_MODEL), context=CONTEXT, audio=audio, format=fmt, timeout_s=timeout_s)
    return await models.transcription().transcribe(call)
