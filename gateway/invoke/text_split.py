"""Splitting long text at sentence boundaries, for streamed speech and for summaries."""

from __future__ import annotations

import re

# After sentence-ending punctuation (Latin followed by a space, CJK/fullwidth directly).
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；])|\n+")
_CJK_END = frozenset("。！？；，、")
_SOFT_BREAK = re.compile(r"(?<=[,，、])\s*|\s+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _hard_split(sentence: str, limit: int) -> list[str]:
    """A sentence longer than ``limit``: cut at commas or spaces, else every ``limit`` chars."""
    parts: list[str] = []
    current = ""
    for word in _SOFT_BREAK.split(sentence):
        if not word:
            continue
        while len(word) > limit:
            if current:
                parts.append(current)
                current = ""
            parts.append(word[:limit])
            word = word[limit:]
        joined = f"{current} {word}" if current else word
        if len(joined) > limit:
            parts.append(current)
            current = word
        else:
            current = joined
    if current:
        parts.append(current)
    return parts


def _join(left: str, right: str) -> str:
    if not left:
        return right
    return left + right if left[-1] in _CJK_END else f"{left} {right}"


def speech_pieces(text: str, first_limit: int = 160, limit: int = 600) -> list[str]:
    """Pieces of ``text`` to synthesise one by one, in order.

    The first piece is short so the first audio arrives early; the rest group whole
    sentences up to ``limit`` characters so there are few upstream calls.
    """
    units = [part for s in sentences(text) for part in (_hard_split(s, limit) if len(s) > limit else [s])]
    if not units:
        return []
    if len(units[0]) > first_limit:
        units[:1] = _hard_split(units[0], first_limit)  # the later parts regroup below
    pieces = [units[0]]
    current = ""
    for unit in units[1:]:
        joined = _join(current, unit)
        if current and len(joined) > limit:
            pieces.append(current)
            current = unit
        else:
            current = joined
    if current:
        pieces.append(current)
    return pieces
