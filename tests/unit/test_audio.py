"""gateway.audio: the audio format told by the first bytes."""

from __future__ import annotations

import io
import wave

import pytest

from gateway.audio import FLAC, M4A, MP3, OGG, WAV, WEBM, audio_seconds, sniff_audio


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"ID3\x03\x00\x00", MP3),
        (b"\xff\xfb\x90\x64", MP3),
        (b"\xff\xf3\x80\xc4", MP3),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", WAV),
        (b"OggS\x00\x02", OGG),
        (b"fLaC\x00\x00", FLAC),
        (b"\x1a\x45\xdf\xa3\x9f", WEBM),
        (b"\x00\x00\x00\x20ftypM4A ", M4A),
        (b"\xff\xf1\x50\x80", None),  # AAC ADTS: not MPEG layer III
        (b"hello world", None),
        (b"", None),
    ],
)
def test_sniff_audio(head: bytes, expected: object) -> None:
    assert sniff_audio(head) == expected


def _wav(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * channels * int(rate * seconds))
    return buffer.getvalue()


def _flac_head(rate: int, samples: int) -> bytes:
    # fLaC, a STREAMINFO block header, then its fields: rate (20 bits), channels-1 (3), bits-1 (5), samples (36).
    fields = (rate << 44) | (0 << 41) | (15 << 36) | samples
    return b"fLaC" + b"\x00\x00\x00\x22" + b"\x00" * 10 + fields.to_bytes(8, "big") + b"\x00" * 16


@pytest.mark.parametrize(("seconds", "rate", "channels"), [(2.0, 16000, 1), (0.5, 44100, 2), (7.25, 8000, 1)])
def test_audio_seconds_of_wav(seconds: float, rate: int, channels: int) -> None:
    assert audio_seconds(_wav(seconds, rate, channels)) == pytest.approx(seconds, abs=1e-3)


def test_audio_seconds_of_flac_from_its_stream_info() -> None:
    assert audio_seconds(_flac_head(48000, 48000 * 3)) == pytest.approx(3.0)
    assert audio_seconds(_flac_head(48000, 0)) is None  # "unknown" in the header


@pytest.mark.parametrize(("rate", "kbps"), [(16000, 64), (44100, 128), (22050, 32)])
def test_audio_seconds_of_constant_bit_rate_mp3(rate: int, kbps: int) -> None:
    import lameenc  # the local extra's MP3 encoder makes the sample

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(1)
    encoder.set_quality(7)
    mp3 = bytes(encoder.encode(b"\0\0" * rate * 3) + encoder.flush())
    assert audio_seconds(mp3) == pytest.approx(3.0, abs=0.15)  # the encoder pads a frame or two
    tagged = b"ID3\x03\x00\x00\x00\x00\x00\x05" + b"title" + mp3
    assert audio_seconds(tagged) == pytest.approx(audio_seconds(mp3))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage" * 100,
        b"RIFF\xff\xff\xff\xffWAVE",
        b"fLaC",
        b"ID3\x7f\x7f\x7f\x7f",
        _wav(1.0)[:30],
        b"\xff" * 5000,
    ],
)
def test_audio_seconds_is_none_when_the_header_does_not_say(data: bytes) -> None:
    assert audio_seconds(data) is None
