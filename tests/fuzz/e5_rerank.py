"""Fuzz target: rerank-shaped e5 calls (one query vector, then the documents' vectors)."""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.e5_embed import load
from tests.fuzz.strategies import texts

DEFAULT_EXAMPLES = 10
CRASHERS = [("\ufdfa" * 8, ["doc"]), ("query", ["doc", "\ufdfa" * 9])]

__all__ = ["check", "load", "payloads"]


def payloads() -> st.SearchStrategy[tuple[str, list[str]]]:
    return st.tuples(texts(), st.lists(texts(), min_size=1, max_size=3))


def check(engine: Any, payload: tuple[str, list[str]]) -> None:
    import numpy as np

    query, docs = payload
    query_vector, _ = engine.encode([query], is_query=True)
    doc_vectors, _ = engine.encode(docs, is_query=False)
    scores = doc_vectors @ query_vector[0]
    assert scores.shape == (len(docs),)
    assert np.isfinite(scores).all() and (np.abs(scores) <= 1.0 + 1e-3).all()


if __name__ == "__main__":
    sys.exit(harness.main("e5_rerank", payloads, DEFAULT_EXAMPLES, explicit=CRASHERS))
