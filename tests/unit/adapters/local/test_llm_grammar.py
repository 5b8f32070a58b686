"""The embedded LLM's grammars and JSON-end detection, with llama.cpp's real schema converter."""

from __future__ import annotations

import re

import pytest
from cyllama.llama import llama_cpp  # the local extra: scripts/test installs it
from hypothesis import given, strategies as st

from gateway.adapters.local.llm_grammar import (
    MAX_ITEMS,
    MAX_STRING,
    JsonEnd,
    ToolSpec,
    bounded,
    structured_grammar,
    tool_grammar,
)

to_grammar = llama_cpp.json_schema_to_grammar


def test_root_has_no_trailing_whitespace_rule() -> None:
    grammar = structured_grammar({"type": "object", "properties": {"a": {"type": "string"}}}, to_grammar)
    root = next(line for line in grammar.splitlines() if line.startswith("root ::="))
    assert not root.rstrip().endswith("space")


def test_a_schema_the_converter_refuses_becomes_any_object() -> None:
    grammar = structured_grammar({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}, to_grammar)
    assert grammar.startswith(("root", "array", "boolean", "char", "decimal", "integral", "null", "number", "object"))
    assert "root ::=" in grammar


def test_bounds_are_added_only_where_none_are_set() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "few": {"type": "array", "minItems": 7, "items": {"type": "integer"}},
            "capped": {"type": "array", "maxItems": 2},
            "color": {"type": "string", "enum": ["red"]},
            "code": {"type": "string", "pattern": "^[A-Z]+$"},
        },
        "required": ["tags"],
    }
    out = bounded(schema)
    props = out["properties"]
    assert props["tags"]["maxItems"] == MAX_ITEMS and props["tags"]["items"]["maxLength"] == MAX_STRING
    assert props["few"]["maxItems"] == 7  # never below minItems: the bounded schema stays satisfiable
    assert props["capped"]["maxItems"] == 2
    assert "maxLength" not in props["color"] and "maxLength" not in props["code"]
    assert out["required"] == ["tags"] and schema["properties"]["tags"] == {
        "type": "array",
        "items": {"type": "string"},
    }


def test_tool_grammars_name_every_tool() -> None:
    tools = [
        ToolSpec("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        ToolSpec("add", {"type": "object", "properties": {"x": {"type": "number"}}}),
    ]
    required = tool_grammar(tools, "required", to_grammar)
    assert '\\"get_weather\\"' in required and '\\"add\\"' in required and "plain-text" not in required
    auto = tool_grammar(tools, "auto", to_grammar)
    assert auto.startswith("root ::= tool-call | plain-text\n")
    assert len(re.findall(r"(?m)^root ::=", auto)) == 1 and re.search(r"(?m)^tool-call ::=", auto)


def test_a_parameters_schema_the_converter_refuses_still_gives_a_call_grammar() -> None:
    tools = [ToolSpec("odd", {"type": "object", "properties": {"a": {"$ref": "#/missing"}}})]
    grammar = tool_grammar(tools, "required", to_grammar)
    assert '\\"odd\\"' in grammar


@pytest.mark.parametrize(
    ("text", "end"),
    [
        ('{"a": 1}', 8),
        ('  {"a": "}"} trailing', 12),
        ('{"a": "\\"}"}', 12),
        ('{"a": [1, {"b": 2}]}   ', 20),
        ('{"a": ', None),
        ("[1, 2] x", 6),
    ],
)
def test_json_end(text: str, end: int | None) -> None:
    assert JsonEnd().feed(text) == end


LEAF = st.integers(-(10**9), 10**9) | st.text(max_size=5) | st.booleans() | st.none()


@given(st.lists(LEAF | st.lists(LEAF, max_size=3) | st.dictionaries(st.text(max_size=4), LEAF, max_size=3), max_size=4))
def test_json_end_fed_piece_by_piece_finds_the_end_of_any_array(value: object) -> None:
    import orjson

    text = orjson.dumps([value]).decode() + "  tail"
    tracker = JsonEnd()
    found = None
    for i in range(1, len(text) + 1):
        found = tracker.feed(text[:i])
        if found is not None:
            break
    assert found == len(text) - len("  tail")
