"""gateway.invoke.summary: pieces that fit the model's context."""

from __future__ import annotations

from gateway.invoke.summary import split_pieces, tokens


def test_summary_pieces_fit_the_budget_and_keep_every_line() -> None:
    lines = [f"Line {i}: " + "text " * (i % 7 + 3) for i in range(400)]
    text = "\n".join(lines)
    pieces = split_pieces(text, context_tokens=2048, system_tokens=100)
    assert len(pieces) > 1
    assert all(100 + tokens(p) <= 2048 * 0.7 for p in pieces)
    assert "\n".join(pieces).split("\n") == lines


def test_summary_pieces_cut_an_overlong_line() -> None:
    pieces = split_pieces("x" * 20_000, context_tokens=2048, system_tokens=100)
    assert "".join(pieces).replace("\n", "") == "x" * 20_000
    assert all(100 + tokens(p) <= 2048 * 0.7 for p in pieces)
