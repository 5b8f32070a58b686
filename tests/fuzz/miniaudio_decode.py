"""Fuzz target: decoding malformed mp3, wav, flac and ogg files (miniaudio first, then PyAV)."""

from __future__ import annotations

import re
import sys
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.strategies import miniaudio_seeds, mutated

DEFAULT_EXAMPLES = 150
# Messages that once carried decoder error numbers ("[Errno 1094995529] Invalid data ...").
EXPLICIT = [("garbage", b"OggS" + bytes(500)), ("garbage", b"RIFF\x10\x00\x00\x00WAVE" + bytes(100))]
# The fuzzed cap is short so that decompression bombs are cut quickly; the guard is the same.
MAX_SECONDS = 120.0
# What a caller must never read in an error: decoder error numbers, exception class names.
INTERNAL = re.compile(r"errno|error code|[A-Za-z]+(Error|Exception)\b|0x[0-9a-f]|, -\d+\)|\(\s*'|<none>", re.IGNORECASE)


def load() -> Any:
    import av  # noqa: F401  # both decoders loaded once, outside the timed calls
    import miniaudio  # noqa: F401

    return None


def payloads() -> st.SearchStrategy[tuple[str, bytes]]:
    return mutated(miniaudio_seeds())


def check(_engine: Any, payload: tuple[str, bytes]) -> None:
    check_decode(payload[1])


def check_decode(data: bytes) -> Any:
    import numpy as np

    from gateway.adapters.local.audio_decode import SAMPLE_RATE, decode_to_pcm16k
    from gateway.audio import sniff_audio
    from gateway.errors import BadRequest

    try:
        samples = decode_to_pcm16k(data, sniff_audio(data), max_seconds=MAX_SECONDS)
    except BadRequest as exc:
        assert not INTERNAL.search(exc.message), exc.message
        return None
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) <= MAX_SECONDS * SAMPLE_RATE
    assert np.isfinite(samples).all()
    return samples


if __name__ == "__main__":
    sys.exit(harness.main("miniaudio_decode", payloads, DEFAULT_EXAMPLES, explicit=EXPLICIT))
