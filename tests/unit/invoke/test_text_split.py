"""gateway.invoke.text_split: sentences and the pieces text-to-speech is called with."""

from __future__ import annotations

import re

from gateway.invoke.text_split import sentences, speech_pieces


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
