"""gateway.keys: the one key comparison."""

from __future__ import annotations

import pytest

from gateway.keys import keys_match


@pytest.mark.parametrize(
    ("supplied", "expected", "matches"),
    [
        ("s3cret", b"s3cret", True),
        (b"s3cret", b"s3cret", True),
        ("s3cre", b"s3cret", False),  # a prefix of the key
        ("s3cretx", b"s3cret", False),  # the key and more
        ("S3CRET", b"s3cret", False),  # case matters
        ("", b"s3cret", False),
        (b"", b"s3cret", False),
        (None, b"s3cret", False),
        ("", b"", False),  # an empty key never opens anything
        ("kéy", "kéy".encode(), True),  # text compares as UTF-8
        ("kéy", "kéy".encode("latin-1"), False),
    ],
)
def test_keys_match(supplied: str | bytes | None, expected: bytes, matches: bool) -> None:
    assert keys_match(supplied, expected) is matches
