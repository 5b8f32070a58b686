"""The usage command's formatting: dollars for a reader, and identity values made safe for one terminal cell."""

from __future__ import annotations

import argparse
from decimal import Decimal

import pytest

from gateway.usage.report_cli import add_usage_arguments, terminal_text, usd


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0", "0.00"),
        ("0.5", "0.50"),
        ("0.0123", "0.0123"),
        ("12.355", "12.36"),
        ("1234567.891", "1,234,567.89"),
        ("0.000012", "0.000012"),
        ("0.00123456", "0.0012"),
        ("0.000000000001", "0.000000000001"),
    ],
)
def test_usd(value: str, shown: str) -> None:
    assert usd(Decimal(value)) == shown


def test_terminal_text_escapes_control_characters_and_cuts_long_values() -> None:
    assert terminal_text("a\x1b[2Jb\nc") == "a\\x1b[2Jb\\nc"
    assert terminal_text("x" * 100, limit=10) == "x" * 9 + "…"
    assert terminal_text("租户" * 10, limit=10) == "租户租户…"  # wide characters take two columns
    assert terminal_text("<script>") == "<script>"


def test_arguments_and_their_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_usage_arguments(parser)
    args = parser.parse_args([])
    assert (args.since, args.until, args.by, args.tenant, args.format, args.limit) == (
        "7d",
        None,
        "tenant",
        None,
        "table",
        None,
    )
    args = parser.parse_args(["--by", "model", "--format", "csv", "--limit", "5", "--tenant", "t"])
    assert (args.by, args.format, args.limit, args.tenant) == ("model", "csv", 5, "t")
    with pytest.raises(SystemExit):
        parser.parse_args(["--by", "user"])
