"""Fuzz target: Whisper (CTranslate2) on odd decoded audio: silence, noise, clipping, NaN and
infinities, denormals, clicks, very short and empty arrays, and real decoded files."""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.miniaudio_decode import check_decode
from tests.fuzz.strategies import av_seeds, miniaudio_seeds, mutated

DEFAULT_EXAMPLES = 6
# 400 NaN samples kept the unguarded engine busy past the 180 s deadline.
HANGS = [("nan", 400, 160)]
KINDS = ["zeros", "noise", "sine", "nan", "inf", "huge", "denormal", "clicks", "dc", "mixed-nan"]


def load() -> Any:
    from gateway.adapters.local.transcription import WhisperEngine

    return WhisperEngine(cpu_threads=1)


def payloads() -> st.SearchStrategy[Any]:
    synthetic = st.tuples(
        st.sampled_from(KINDS), st.sampled_from([0, 1, 2, 160, 400, 8000, 16000, 16000 * 4]), st.integers(0, 2**16)
    )
    decoded = mutated(miniaudio_seeds()[:6] + av_seeds()[:3]).map(lambda pair: ("file", pair[1]))
    return st.one_of(synthetic, decoded)


def _samples(payload: Any) -> Any:
    import numpy as np

    kind, size, seed = payload
    rng = np.random.default_rng(seed)
    t = np.arange(size, dtype=np.float32) / 16000
    audio = {
        "zeros": lambda: np.zeros(size),
        "noise": lambda: rng.standard_normal(size) * 0.3,
        "sine": lambda: np.sin(2 * np.pi * 440 * t),
        "nan": lambda: np.full(size, np.nan),
        "inf": lambda: np.where(rng.random(size) < 0.5, np.inf, -np.inf),
        "huge": lambda: rng.standard_normal(size) * 1e30,
        "denormal": lambda: np.full(size, 1e-45),
        "clicks": lambda: (rng.random(size) < 0.01).astype(np.float64) * 1e4,
        "dc": lambda: np.ones(size),
        "mixed-nan": lambda: np.where(rng.random(size) < 0.1, np.nan, np.sin(2 * np.pi * 300 * t)),
    }[kind]()
    return np.asarray(audio, dtype=np.float32)


def check(engine: Any, payload: Any) -> None:
    if payload[0] == "file":
        samples = check_decode(payload[1])
        if samples is None:
            return
    else:
        samples = _samples(payload)
    text = engine.transcribe(samples)
    assert isinstance(text, str)


if __name__ == "__main__":
    sys.exit(harness.main("whisper_transcribe", payloads, DEFAULT_EXAMPLES, call_timeout_s=180.0, explicit=HANGS))
