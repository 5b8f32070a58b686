"""Fuzz target: espeak-ng synthesis and LAME encoding of hostile text and voice names."""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.strategies import SPECIAL, texts

DEFAULT_EXAMPLES = 40
# Refused once normalised (54,000 characters), not synthesised for an hour.
EXPLICIT = [("\ufdfa" * 3000, "en-us"), ("a <break time='99999s'/> b", "en-us")]

VOICES = [
    "en-us",
    "en-gb",
    "de",
    "fr",
    "ar",
    "he",
    "zh",
    "ja",
    "hi",
    "ru",
    "alloy",
    "",
    "gmw/en-US",
    "English (America)",
]


def load() -> Any:
    from gateway.adapters.local.speech import load_espeak

    return load_espeak()


def payloads() -> st.SearchStrategy[tuple[str, str]]:
    voice = st.one_of(st.sampled_from(VOICES), st.sampled_from(SPECIAL), st.text(max_size=12))
    # Synthesis time grows with what is spoken: shorter runs than the embedding targets.
    return st.tuples(texts(max_repeat=400, large=(150, 300)), voice)


def check(engine: Any, payload: tuple[str, str]) -> None:
    from gateway.audio import MP3, sniff_audio
    from gateway.errors import BadRequest

    text, voice = payload
    try:
        audio = engine.synthesize_mp3(text, voice)
    except BadRequest as exc:
        assert "characters" in exc.message, exc.message  # only ever a too-long text
        return
    assert isinstance(audio, bytes)
    assert not audio or sniff_audio(audio) == MP3, audio[:16]


if __name__ == "__main__":
    sys.exit(harness.main("espeak_synth", payloads, DEFAULT_EXAMPLES, explicit=EXPLICIT))
