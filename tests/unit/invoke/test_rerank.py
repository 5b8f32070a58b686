"""gateway.invoke.rerank: ordering, threshold and top_n over the backend's scores."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from gateway.adapters.base import ScoredDoc
from gateway.errors import UpstreamUnavailable
from gateway.invoke.rerank import rank

TEXTS = ["a", "b", "c", "d"]


def scored(*pairs: tuple[int, float]) -> list[ScoredDoc]:
    return [ScoredDoc(i, s) for i, s in pairs]


def test_rank_sorts_by_score_and_keeps_request_indices() -> None:
    out = rank(scored((0, 0.1), (1, 0.9), (2, 0.5), (3, 0.7)), TEXTS, None, None, "w")
    got = [(d["index"], d["text"], d["score"]) for d in out]
    assert got == [(1, "b", 0.9), (3, "d", 0.7), (2, "c", 0.5), (0, "a", 0.1)]


def test_rank_equal_scores_keep_request_order() -> None:
    out = rank(scored((2, 0.5), (0, 0.5), (1, 0.5)), TEXTS[:3], None, None, "w")
    assert [d["index"] for d in out] == [0, 1, 2]


def test_rank_threshold_keeps_scores_at_or_above() -> None:
    out = rank(scored((0, 0.1), (1, 0.9), (2, 0.5)), TEXTS[:3], 0.5, None, "w")
    assert [d["index"] for d in out] == [1, 2]


def test_rank_zero_threshold_and_top_n_mean_unset() -> None:
    out = rank(scored((0, -2.0), (1, 3.0)), TEXTS[:2], 0.0, 0, "w")
    assert [d["index"] for d in out] == [1, 0]  # negative logits survive a threshold of 0


def test_rank_top_n_after_threshold() -> None:
    out = rank(scored((0, 0.1), (1, 0.9), (2, 0.5), (3, 0.7)), TEXTS, 0.2, 2, "w")
    assert [d["index"] for d in out] == [1, 3]


@pytest.mark.parametrize("bad", [[(4, 0.5)], [(-1, 0.5)], [(0, 0.5), (0, 0.4)]])
def test_rank_rejects_bad_indices_from_the_backend(bad: list[tuple[int, float]]) -> None:
    with pytest.raises(UpstreamUnavailable, match="index"):
        rank(scored(*bad), TEXTS, None, None, "route 'r'")


@given(st.lists(st.floats(-10, 10, allow_nan=False), max_size=30), st.floats(0, 1), st.integers(0, 40))
def test_rank_properties(scores: list[float], threshold: float, top_n: int) -> None:
    texts = [f"doc {i}" for i in range(len(scores))]
    out = rank([ScoredDoc(i, s) for i, s in enumerate(scores)], texts, threshold, top_n, "w")
    got = [d["score"] for d in out]
    assert got == sorted(got, reverse=True)
    if threshold:
        assert all(s >= threshold for s in got)
    if top_n:
        assert len(out) <= top_n
    expected = sorted((s for s in scores if not threshold or s >= threshold), reverse=True)
    assert got == (expected[:top_n] if top_n else expected)
    assert all(texts[d["index"]] == d["text"] for d in out)
