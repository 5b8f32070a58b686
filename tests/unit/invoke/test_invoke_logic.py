"""Pure pieces of the non-LLM invocations: rerank ordering, text splitting, hex audio, sniffing."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given, strategies as st

from gateway.adapters.base import ScoredDoc
from gateway.adapters.registry import Backends
from gateway.audio import FLAC, M4A, MP3, OGG, WAV, WEBM, sniff_audio
from gateway.config import TargetConfig
from gateway.errors import BadRequest, UpstreamUnavailable
from gateway.invoke.common import gather_all
from gateway.invoke.embedding import batch_size
from gateway.invoke.rerank import rank
from gateway.invoke.speech2text import decode_hex_audio
from gateway.invoke.summary import split_pieces, tokens
from gateway.invoke.text_split import sentences, speech_pieces
from gateway.routing import Target

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


def test_sentences_split_latin_and_cjk() -> None:
    assert sentences("Hi there. How are you?  Fine!") == ["Hi there.", "How are you?", "Fine!"]
    assert sentences("你好。今天很好！") == ["你好。", "今天很好！"]
    assert sentences("version 1.5 is out") == ["version 1.5 is out"]


def test_speech_pieces_first_piece_is_short_and_text_is_kept() -> None:
    text = "This is the opening sentence of a long reply. " + "Another sentence follows here, with details. " * 60
    pieces = speech_pieces(text, first_limit=160, limit=600)
    assert len(pieces[0]) <= 160
    assert all(len(p) <= 600 for p in pieces)
    assert len(pieces) < 10  # grouped, not one call per sentence
    assert re.sub(r"\s+", " ", " ".join(pieces)) == re.sub(r"\s+", " ", text.strip())


def test_speech_pieces_split_a_sentence_without_punctuation() -> None:
    pieces = speech_pieces("word " * 1000, first_limit=100, limit=300)
    assert len(pieces[0]) <= 100 and all(len(p) <= 300 for p in pieces)
    assert " ".join(pieces).split() == ["word"] * 1000


def test_speech_pieces_of_blank_text_is_empty() -> None:
    assert speech_pieces(" \n ") == []


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


def test_decode_hex_audio() -> None:
    assert decode_hex_audio("4944330300") == b"ID3\x03\x00"
    assert decode_hex_audio("FFFB") == b"\xff\xfb"
    for bad, why in [("", "empty"), ("abc", "odd length"), ("zz", "non-hex")]:
        with pytest.raises(BadRequest, match=why):
            decode_hex_audio(bad)


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


def test_batch_size_by_provider_and_override() -> None:
    def target(model: str, **kw: object) -> Target:
        return Target(config=TargetConfig(model=model, **kw), model=model)  # type: ignore[arg-type]

    backends = Backends()

    def size(t: Target) -> int:
        return batch_size(t, backends.embedding(t))

    assert size(target("openai/text-embedding-3-small")) == 2048
    assert size(target("cohere/embed-english-v3.0")) == 96
    assert size(target("hosted_vllm/bge")) == 256
    assert size(target("cohere/embed-english-v3.0", max_batch_size=10)) == 10
    assert size(target("tei/bge", api_base="http://tei")) == 32
    assert size(target("tei/bge", api_base="http://tei", max_batch_size=8)) == 8


@pytest.mark.asyncio
async def test_gather_all_cancels_the_rest_after_a_failure() -> None:
    started: list[int] = []
    gate = asyncio.Semaphore(2)

    async def piece(n: int) -> int:
        async with gate:
            started.append(n)
            await asyncio.sleep(0.01)
            if n == 0:
                raise UpstreamUnavailable("piece 0 failed")
            return n

    with pytest.raises(UpstreamUnavailable):
        await gather_all(piece(n) for n in range(40))
    await asyncio.sleep(0.1)
    assert len(started) <= 4  # not all 40 went on to call the upstream
    assert await gather_all(piece(n) for n in range(1, 5)) == [1, 2, 3, 4]
