"""gateway.adapters.local.speech, run for real: espeak-ng speech as MP3, its voices and its lock."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gateway.adapters.base import SpeechCall
from gateway.adapters.local.runtime import LocalModels
from gateway.adapters.local.speech import load_espeak
from gateway.audio import MP3, sniff_audio
from gateway.catalog import TTS_MODEL
from gateway.errors import BadRequest
from tests.unit.adapters.local.helpers import CONTEXT, SENTENCE, pcm16, target, words


async def speak(models: LocalModels, text: str, voice: str = "en-us") -> bytes:
    call = SpeechCall(target=target(TTS_MODEL), context=CONTEXT, text=text, voice=voice)
    out = await models.speech().speak(call)
    assert out.mime_type == "audio/mpeg"
    return out.audio


@pytest.mark.asyncio
async def test_speech_is_a_complete_mp3_of_plausible_length(models: LocalModels) -> None:
    audio = await speak(models, SENTENCE)
    assert audio.startswith(b"ID3") or (audio[0] == 0xFF and audio[1] & 0xE0 == 0xE0)
    assert sniff_audio(audio) == MP3
    seconds = len(pcm16(audio, 16000)) / 16000
    # 11 words at 150 words a minute is ~4.4 s; allow a wide margin for pauses.
    expected = len(words(SENTENCE)) / 150 * 60
    assert expected * 0.5 < seconds < expected * 2
    assert np.abs(pcm16(audio)).max() > 3000  # speech, not silence


def seconds(mp3: bytes) -> float:
    return len(pcm16(mp3)) / 22050


def test_voice_names_resolve_to_espeak_voices_or_the_default() -> None:
    engine = load_espeak()
    assert engine.resolve_voice("en-us") == b"gmw/en-US"
    for fallback in ("alloy", "nova", "", "  ", "xx-unknown"):  # Dify's OpenAI voice names and junk
        assert engine.resolve_voice(fallback) == b"gmw/en-US"
    assert engine.resolve_voice("en_GB") == engine.resolve_voice("en-gb") == b"gmw/en"
    assert engine.resolve_voice("de") == engine.resolve_voice("German") == b"gmw/de"
    assert engine.resolve_voice("fr") == b"roa/fr"


@pytest.mark.asyncio
async def test_the_voice_reaches_the_synthesiser(models: LocalModels) -> None:
    # espeak-ng jitters a little between calls, so the voice shows in the length, not the bytes:
    # this sentence lasts ~2.5 s in en-us and ~11 % longer in German.
    text = "The rain in Spain stays mainly in the plain."
    default = seconds(await speak(models, text, "en-us"))
    assert abs(seconds(await speak(models, text, "alloy")) - default) < 0.05
    assert seconds(await speak(models, text, "de")) > default * 1.05


@pytest.mark.asyncio
async def test_empty_text_still_gives_a_valid_mp3(models: LocalModels) -> None:
    audio = await speak(models, "")
    assert sniff_audio(audio) == MP3
    assert len(pcm16(audio)) < 22050  # under a second of (silent) audio


@pytest.mark.asyncio
async def test_text_over_the_limit_is_a_bad_request(models: LocalModels) -> None:
    with pytest.raises(BadRequest, match="over the 50000"):
        await speak(models, "a" * 50_001)


def test_concurrent_synthesis_from_many_threads_is_serialised() -> None:
    engine = load_espeak()
    # Both ~10 % longer in German, so a voice switch leaking into another call would show.
    texts = ["The rain in Spain stays mainly in the plain.", "Seventeen thousand people attended the festival."]
    expected = [seconds(engine.synthesize_mp3(t, "en-us")) for t in texts]
    results: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(6):
                which = (n + i) % 2
                results.append((which, engine.synthesize_mp3(texts[which], "en-us")))
                engine.synthesize_mp3(texts[which], "de")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(results) == 24
    for which, audio in results:
        assert sniff_audio(audio) == MP3
        assert abs(seconds(audio) - expected[which]) < 0.06  # one MP3 frame (26 ms) of jitter, not more
