from __future__ import annotations

from typing import Any

import pytest

from gateway.invoke.structured import StructuredOutputError, parse_object


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ("{'a': 1,}", {"a": 1}),
        ('{"a": [1, 2', {"a": [1, 2]}),
        ('  {"nested": {"b": true}}  ', {"nested": {"b": True}}),
    ],
)
def test_parses_and_repairs(text: str, expected: dict[str, Any]) -> None:
    assert parse_object(text, "here") == expected


@pytest.mark.parametrize("text", ["[1, 2]", '"just a string"', "", "42", "no json at all"])
def test_non_objects_are_clear_errors(text: str) -> None:
    with pytest.raises(StructuredOutputError, match="not a JSON object.*here"):
        parse_object(text, "here")
