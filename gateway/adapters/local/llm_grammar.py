"""Constrained decoding for the embedded LLM: JSON-schema and tool-call grammars, and where
a JSON answer ends.

llama.cpp turns a JSON schema into a GBNF grammar; the sampler then only picks tokens that
keep the answer inside it, so a structured answer always parses and a tool call always names
a tool with arguments of its schema. The converter is passed in (``to_grammar``) so these
functions stay plain Python, testable without the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

ToGrammar = Callable[[str], str]
ToolMode = Literal["auto", "required"]

# Any JSON object: for ``response_format: json_object`` and schemas the converter refuses.
ANY_OBJECT: dict[str, Any] = {"type": "object"}

# Plain text that is not a tool call: it must not start with "{" (a call) or whitespace
# (which would let the model put off the choice).
_TEXT_RULES = "plain-text ::= [^{ \\t\\r\\n] [^\\x00]*"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    parameters: dict[str, Any]
    description: str = ""


# Bounds given to arrays and strings that have none: a small model decoding greedily repeats
# an item or a word until max_tokens, and a cut answer is not JSON. A bounded value still
# matches the schema.
MAX_ITEMS = 5
MAX_STRING = 80


def structured_grammar(schema: dict[str, Any], to_grammar: ToGrammar) -> str:
    """The grammar of one JSON value matching ``schema`` (any object if the converter refuses it)."""
    return _trim_root_space(_convert(bounded(schema), to_grammar))


def bounded(schema: Any) -> Any:
    """``schema`` with ``maxItems``/``maxLength`` on the arrays and free strings that lack them."""
    if isinstance(schema, list):
        return [bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: bounded(value) if key not in ("const", "enum", "default", "examples") else value
        for key, value in schema.items()
    }
    kinds = out.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "array" in kinds and "maxItems" not in out:
        out["maxItems"] = max(MAX_ITEMS, _int(out.get("minItems")))
    free = not any(key in out for key in ("enum", "const", "pattern", "format", "maxLength"))
    if "string" in kinds and free:
        out["maxLength"] = max(MAX_STRING, _int(out.get("minLength")))
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def tool_call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """One of the tools' calls: ``{"name": <a tool>, "arguments": <its parameters>}``."""
    shapes = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": bounded(_object_schema(tool.parameters))},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return shapes[0] if len(shapes) == 1 else {"oneOf": shapes}


def tool_grammar(tools: Sequence[ToolSpec], mode: ToolMode, to_grammar: ToGrammar) -> str:
    """A tool call (``required``), or a tool call or plain text (``auto``)."""
    schema = tool_call_schema(tools)
    try:
        grammar = to_grammar(orjson.dumps(schema).decode())
    except Exception:  # llama.cpp's converter raises ValueError, RuntimeError, even AssertionError
        # A parameters schema the converter does not take: any arguments object instead.
        grammar = to_grammar(orjson.dumps(tool_call_schema([ToolSpec(t.name, ANY_OBJECT) for t in tools])).decode())
    grammar = _trim_root_space(grammar)
    if mode == "required":
        return grammar
    renamed = re.sub(r"(?m)^root ::=", "tool-call ::=", grammar)
    return f"root ::= tool-call | plain-text\n{_TEXT_RULES}\n{renamed}"


def _convert(schema: dict[str, Any], to_grammar: ToGrammar) -> str:
    try:
        return to_grammar(orjson.dumps(schema).decode())
    except Exception:  # llama.cpp's converter raises ValueError, RuntimeError, even AssertionError
        return to_grammar(orjson.dumps(ANY_OBJECT).decode())


def _object_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    return parameters if isinstance(parameters, dict) and parameters else {"type": "object", "properties": {}}


def _trim_root_space(grammar: str) -> str:
    """Drop the whitespace the converter allows after the whole value: sampling would pad it
    up to ``max_tokens`` (the end of the value is also detected, see ``JsonEnd``)."""
    return re.sub(r"(?m)^(root ::= .*?) space\s*$", r"\1", grammar, count=1)


class JsonEnd:
    """Finds where the first complete JSON object or array in a growing text ends."""

    __slots__ = ("_depth", "_in_string", "_escaped", "_started", "_seen")

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._started = False
        self._seen = 0  # characters of the text consumed so far

    def feed(self, text: str) -> int | None:
        """``text`` is the whole answer so far (it only grows); the index just past the
        value's end once it has ended, else None."""
        for index in range(self._seen, len(text)):
            char = text[index]
            self._seen = index + 1
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
                self._started = True
            elif char in "}]":
                self._depth -= 1
                if self._started and self._depth <= 0:
                    return index + 1
        return None
