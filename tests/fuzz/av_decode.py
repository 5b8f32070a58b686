"""Fuzz target: decoding malformed webm, m4a and ogg opus files (PyAV first, then miniaudio)."""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.miniaudio_decode import check_decode, load
from tests.fuzz.strategies import av_seeds, mutated

DEFAULT_EXAMPLES = 150

__all__ = ["check", "load", "payloads"]


def payloads() -> st.SearchStrategy[tuple[str, bytes]]:
    return mutated(av_seeds())


def check(_engine: Any, payload: tuple[str, bytes]) -> None:
    check_decode(payload[1])


if __name__ == "__main__":
    sys.exit(harness.main("av_decode", payloads, DEFAULT_EXAMPLES))
