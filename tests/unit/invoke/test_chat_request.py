from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import BadRequest
from gateway.invoke import chat_request
from gateway.protocol.requests import LLMInvokeRequest, PromptMessage, ToolChoice


def message(**fields: Any) -> PromptMessage:
    base: dict[str, Any] = {"name": "", "tool_calls": None, "tool_call_id": ""}
    return PromptMessage.model_validate({**base, **fields})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"role": "system", "content": "be terse"}, {"role": "system", "content": "be terse"}),
        ({"role": "user", "content": None}, {"role": "user", "content": ""}),
        ({"role": "user", "content": "hi", "name": "bob"}, {"role": "user", "content": "hi", "name": "bob"}),
        (
            {"role": "user", "content": [{"type": "text", "data": "a"}, {"type": "text", "data": "b"}]},
            {"role": "user", "content": "ab"},
        ),
        (
            {
                "role": "user",
                "content": [
                    {"type": "text", "data": "look"},
                    {"type": "image", "base64_data": "iVBO", "mime_type": "image/png", "detail": "low", "url": ""},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}},
                ],
            },
        ),
        (
            {"role": "user", "content": [{"type": "image", "url": "https://x/y.png", "base64_data": "", "detail": ""}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        ),
        (
            {"role": "user", "content": [{"type": "image", "data": "data:image/jpeg;base64,/9j/"}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}]},
        ),
        (
            {
                "role": "user",
                "content": [{"type": "audio", "base64_data": "UklG", "mime_type": "audio/wav", "format": "wav"}],
            },
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]},
        ),
        (
            {
                "role": "user",
                "content": [
                    {"type": "document", "base64_data": "JVBE", "mime_type": "application/pdf", "filename": "a.pdf"}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,JVBE",
                            "filename": "a.pdf",
                            "format": "application/pdf",
                        },
                    }
                ],
            },
        ),
        (
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
            },
        ),
        ({"role": "assistant", "content": "ok", "tool_calls": []}, {"role": "assistant", "content": "ok"}),
        (
            {"role": "tool", "content": '{"t":1}', "tool_call_id": "c1"},
            {"role": "tool", "content": '{"t":1}', "tool_call_id": "c1"},
        ),
    ],
)
def test_messages_become_openai_messages(given: dict[str, Any], expected: dict[str, Any]) -> None:
    assert chat_request.chat_messages([message(**given)]) == [expected]


def test_media_item_without_payload_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="image content item has no url"):
        chat_request.chat_messages([message(role="user", content=[{"type": "image", "url": "", "base64_data": ""}])])


def test_completion_prompt_joins_text() -> None:
    msgs = [message(role="system", content="S"), message(role="user", content=[{"type": "text", "data": "U"}])]
    assert chat_request.completion_prompt(msgs) == "S\nU"


@pytest.mark.parametrize(
    ("params", "defaults", "expected"),
    [
        ({"temperature": 0.2, "max_tokens": 10}, {}, {"temperature": 0.2, "max_tokens": 10}),
        ({"top_k": 3, "unknown": 1, "temperature": None}, {}, {}),
        ({"temperature": 0.2}, {"temperature": 1.0, "top_p": 0.5}, {"temperature": 0.2, "top_p": 0.5}),
        ({"response_format": "JSON"}, {}, {"response_format": {"type": "json_object"}}),
        ({"response_format": "text"}, {}, {}),
        (
            {"response_format": "json_schema", "json_schema": '{"name":"n","schema":{"type":"object"}}'},
            {},
            {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}},
        ),
        (
            {"json_schema": {"type": "object"}},
            {},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "llm_response", "schema": {"type": "object"}},
                }
            },
        ),
    ],
)
def test_completion_params(params: dict[str, Any], defaults: dict[str, Any], expected: dict[str, Any]) -> None:
    assert chat_request.completion_params(params, defaults) == expected


def test_invalid_json_schema_param_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="json_schema is not valid JSON"):
        chat_request.completion_params({"json_schema": "{nope"}, {})


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ({"mode": "auto"}, "auto"),
        ({"mode": "none"}, "none"),
        ({"mode": "required"}, "required"),
        ({"mode": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any] | None, expected: object) -> None:
    parsed = ToolChoice.model_validate(choice) if choice else None
    assert chat_request.tool_choice(parsed) == expected


def test_tool_choice_tool_needs_a_name() -> None:
    with pytest.raises(BadRequest):
        chat_request.tool_choice(ToolChoice(mode="tool"))


def test_tools_become_functions() -> None:
    request = LLMInvokeRequest.model_validate(
        {
            "tenant_id": "t",
            "provider": "openai",
            "model": "m",
            "mode": "chat",
            "tools": [{"name": "f", "description": "d", "parameters": {"type": "object"}}, {"name": "g"}],
        }
    )
    assert chat_request.tools(request) == [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}},
        {
            "type": "function",
            "function": {"name": "g", "description": "", "parameters": {"type": "object", "properties": {}}},
        },
    ]
