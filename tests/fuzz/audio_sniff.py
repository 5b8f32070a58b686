"""Fuzz target: the container sniffer on arbitrary and mutated bytes (pure Python, but it
decides which decoder sees the bytes first)."""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.strategies import av_seeds, miniaudio_seeds, mutated

DEFAULT_EXAMPLES = 200


def load() -> Any:
    return None


def payloads() -> st.SearchStrategy[bytes]:
    seeds = miniaudio_seeds() + av_seeds()
    return st.one_of(st.binary(max_size=64), mutated(seeds).map(lambda pair: pair[1]))


def check(_engine: Any, data: bytes) -> None:
    from gateway.audio import FLAC, M4A, MP3, OGG, WAV, WEBM, sniff_audio

    assert sniff_audio(data) in (None, MP3, WAV, OGG, FLAC, WEBM, M4A)
    assert sniff_audio(bytearray(data)) == sniff_audio(data)


if __name__ == "__main__":
    sys.exit(harness.main("audio_sniff", payloads, DEFAULT_EXAMPLES))
