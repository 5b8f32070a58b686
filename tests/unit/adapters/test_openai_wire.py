"""gateway.adapters.openai_wire: OpenAI chat replies to ``ChatEvent``, from parsed JSON (the native
client) and from response objects (litellm's own types, and any object with the same attributes)."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from gateway.adapters.base import ChatEvent, TokenUsage, ToolCallDelta
from gateway.adapters.litellm_loader import load_litellm_sync
from gateway.adapters.openai_wire import WireError, chunk_event, completion_event, field, merged, tool_deltas, usage


@pytest.fixture(scope="module")
def lt() -> ModuleType:
    """litellm's response types (``litellm.types.utils``), litellm configured as the gateway does."""
    load_litellm_sync()
    import litellm.types.utils as types

    return types


def chunk(**choice: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m-1", "choices": [{"index": 0, **choice}]}


# -- field ---------------------------------------------------------------------------------


def test_field_reads_a_key_or_an_attribute() -> None:
    assert field({"model": "m"}, "model") == "m"
    assert field(SimpleNamespace(model="m"), "model") == "m"
    assert field({}, "model") is None
    assert field(SimpleNamespace(), "model") is None
    assert field(None, "model") is None


@pytest.mark.parametrize("empty", ["", [], 0, False])
def test_an_empty_json_value_reads_as_an_absent_object(empty: Any) -> None:
    assert field(empty, "content") is None


@pytest.mark.parametrize(("value", "kind"), [("abc", "str"), ([1], "list"), (3, "int"), (1.5, "float"), (True, "bool")])
def test_a_json_value_where_an_object_belongs_is_an_error(value: Any, kind: str) -> None:
    # Read as an attribute, "abc".index would be a method: a JSON value never is.
    with pytest.raises(WireError, match=f"a {kind} where an object with 'index' belongs"):
        field(value, "index")


# -- usage and tool calls ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}, TokenUsage(12, 3)),
        ({"prompt_tokens": 12}, TokenUsage(12, 0)),
        ({"completion_tokens": 3, "prompt_tokens": None}, TokenUsage(0, 3)),
        ({"prompt_tokens": 7.0, "completion_tokens": "2"}, TokenUsage(7, 2)),
        ({"prompt_tokens": None, "completion_tokens": None}, None),
        ({}, None),
        (None, None),
        ("12", None),  # usage is advisory: a reply stays valid without a readable one
        ([12, 3], None),
        (SimpleNamespace(prompt_tokens=4, completion_tokens=5), TokenUsage(4, 5)),
        (SimpleNamespace(), None),
    ],
)
def test_usage(raw: Any, expected: TokenUsage | None) -> None:
    assert usage(raw) == expected


def test_usage_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(WireError, match="usage counts 'many', 3 are not numbers"):
        usage({"prompt_tokens": "many", "completion_tokens": 3})


def test_litellm_usage(lt: ModuleType) -> None:
    assert usage(lt.Usage(prompt_tokens=9, completion_tokens=1)) == TokenUsage(9, 1)


def test_tool_deltas_from_json() -> None:
    raw = [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}},
        {"index": 1, "function": {"arguments": 'ty": "Rome"}'}},
        {"id": "", "function": {"name": "", "arguments": None}},  # empty id/name are absent, not ""
        {"index": "7", "id": "call_d"},  # an index that is not a number: numbered by position
    ]
    assert tool_deltas(raw) == [
        ToolCallDelta(index=0, id="call_a", name="get_weather", arguments='{"ci'),
        ToolCallDelta(index=1, id=None, name=None, arguments='ty": "Rome"}'),
        ToolCallDelta(index=2, id=None, name=None, arguments=None),
        ToolCallDelta(index=3, id="call_d", name=None, arguments=None),
    ]


@pytest.mark.parametrize("raw", [None, [], {"index": 0}, "call"])
def test_tool_calls_that_are_not_a_list_are_none(raw: Any) -> None:
    assert tool_deltas(raw) is None


def test_a_tool_call_that_is_not_an_object_is_an_error() -> None:
    with pytest.raises(WireError, match="a str where an object with 'function' belongs"):
        tool_deltas(["get_weather"])
    with pytest.raises(WireError, match="a str where an object with 'name' belongs"):
        tool_deltas([{"function": "get_weather"}])


def test_tool_deltas_from_litellm_objects(lt: ModuleType) -> None:
    delta = lt.Delta(tool_calls=[{"index": 1, "id": "call_b", "function": {"name": "f", "arguments": "{}"}}])
    assert tool_deltas(delta.tool_calls) == [ToolCallDelta(index=1, id="call_b", name="f", arguments="{}")]


# -- stream chunks -------------------------------------------------------------------------


def test_a_content_chunk() -> None:
    raw = {**chunk(delta={"content": "Hel"}, finish_reason=None), "system_fingerprint": "fp_1", "usage": None}
    assert chunk_event(raw) == ChatEvent(text="Hel", model="m-1", system_fingerprint="fp_1")


def test_a_finishing_chunk_with_an_empty_delta() -> None:
    assert chunk_event(chunk(delta={}, finish_reason="stop")) == ChatEvent(finish_reason="stop", model="m-1")


def test_a_tool_call_chunk_has_null_content() -> None:
    raw = chunk(delta={"role": "assistant", "content": None, "tool_calls": [{"index": 0, "id": "call_0"}]})
    assert chunk_event(raw) == ChatEvent(tool_calls=[ToolCallDelta(index=0, id="call_0")], model="m-1")


def test_the_usage_chunk_has_no_choices() -> None:
    raw = {"model": "m-1", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
    # Only the usage: model and fingerprint of a usage-only chunk are not passed on.
    assert chunk_event(raw) == ChatEvent(usage=TokenUsage(10, 5))


@pytest.mark.parametrize("raw", [{"model": "m"}, {"choices": [], "usage": None}, {"choices": None, "usage": {}}])
def test_a_chunk_with_nothing_is_none(raw: dict[str, Any]) -> None:
    assert chunk_event(raw) is None


@pytest.mark.parametrize("delta", [None, {}, ""])
def test_an_absent_delta_is_an_empty_one(delta: Any) -> None:
    # Chat chunks are read from the delta only, even when the choice also has a text.
    assert chunk_event(chunk(delta=delta, text="ignored")) == ChatEvent(model="m-1")


def test_content_that_is_not_text_is_empty() -> None:
    assert chunk_event(chunk(delta={"content": ["a", "b"]})) == ChatEvent(model="m-1")


def test_a_text_completion_chunk_reads_the_choice_text() -> None:
    raw = {"object": "text_completion", "model": "m-1", "choices": [{"index": 0, "text": "Hi", "finish_reason": None}]}
    assert chunk_event(raw, text_completion=True) == ChatEvent(text="Hi", model="m-1")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"choices": "abc"}, "'choices' is a str, not a list"),
        ({"choices": {"0": {}}}, "'choices' is a dict, not a list"),
        ({"choices": [1]}, "a choice or its delta is not an object"),
        ({"choices": [{"delta": "Hel"}]}, "a choice or its delta is not an object"),
        ({"choices": [{"delta": {"tool_calls": [{"function": "f"}]}}]}, "a str where an object with 'name' belongs"),
    ],
)
def test_a_chunk_not_shaped_like_one_is_an_error(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(WireError, match=message):
        chunk_event(raw)


def test_a_chunk_read_from_attributes() -> None:
    delta = SimpleNamespace(content="Hel", tool_calls=None)
    raw = SimpleNamespace(model="m-1", choices=[SimpleNamespace(delta=delta, finish_reason="length")])
    assert chunk_event(raw) == ChatEvent(text="Hel", finish_reason="length", model="m-1")


STREAM = [
    chunk(delta={"role": "assistant", "content": "Hel"}, finish_reason=None),
    chunk(delta={"content": ""}, finish_reason=None),
    chunk(delta={"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"a'}}]}),
    chunk(delta={"tool_calls": [{"index": 0, "function": {"arguments": '": 1}'}}]}),
    {**chunk(delta={}, finish_reason="tool_calls"), "system_fingerprint": "fp_9"},
]


@pytest.mark.parametrize("raw", STREAM)
def test_litellm_stream_chunks_read_as_their_json(lt: ModuleType, raw: dict[str, Any]) -> None:
    """A chunk as JSON and as litellm's ``ModelResponseStream`` built from it are one event."""
    assert chunk_event(lt.ModelResponseStream(**raw)) == chunk_event(raw)


def test_litellm_usage_chunk(lt: ModuleType) -> None:
    last = lt.ModelResponseStream(model="m-1", choices=[])
    last.usage = lt.Usage(prompt_tokens=10, completion_tokens=5)  # how litellm's stream wrapper sets it
    assert chunk_event(last) == ChatEvent(usage=TokenUsage(10, 5))
    assert chunk_event(lt.ModelResponseStream(model="m-1", choices=[])) is None


def test_litellm_text_completion_chunk(lt: ModuleType) -> None:
    raw = lt.TextCompletionResponse(model="m-1", choices=[lt.TextChoices(text="Hi", finish_reason="length")])
    # litellm's text completions always carry a usage object, zero until it knows better.
    assert chunk_event(raw, text_completion=True) == ChatEvent(
        text="Hi", finish_reason="length", usage=TokenUsage(0, 0), model="m-1"
    )


# -- whole replies -------------------------------------------------------------------------

REPLY: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "m-1",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 812, "completion_tokens": 6, "total_tokens": 818},
}
WHOLE = ChatEvent(
    text="Let me look.",
    tool_calls=[ToolCallDelta(index=0, id="call_a", name="f", arguments="{}")],
    finish_reason="tool_calls",
    usage=TokenUsage(812, 6),
    model="m-1",
    system_fingerprint="fp_1",
)


def test_a_whole_reply() -> None:
    assert completion_event(REPLY) == WHOLE


def test_litellm_whole_reply_reads_as_its_json(lt: ModuleType) -> None:
    assert completion_event(lt.ModelResponse(**REPLY)) == WHOLE


@pytest.mark.parametrize("choices", [None, []])
def test_a_reply_without_choices_is_empty(choices: Any) -> None:
    assert completion_event({"model": "m-1", "choices": choices}) == ChatEvent(model="m-1")


def test_a_reply_with_null_content_and_no_usage() -> None:
    raw = {"model": "m-1", "choices": [{"message": {"content": None}, "finish_reason": "stop"}]}
    assert completion_event(raw) == ChatEvent(finish_reason="stop", model="m-1")


def test_a_whole_text_completion(lt: ModuleType) -> None:
    raw = {"model": "m-1", "choices": [{"text": "Hi there", "finish_reason": "stop"}], "usage": {"prompt_tokens": 2}}
    expected = ChatEvent(text="Hi there", finish_reason="stop", usage=TokenUsage(2, 0), model="m-1")
    assert completion_event(raw, text_completion=True) == expected
    assert completion_event(lt.TextCompletionResponse(**raw), text_completion=True) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"choices": "abc"}, "'choices' is a str, not a list"),
        ({"choices": [{"message": "hi"}]}, "a str where an object with 'content' belongs"),
        ({"choices": [{"message": {"tool_calls": ["f"]}}]}, "a str where an object with 'function' belongs"),
    ],
)
def test_a_reply_not_shaped_like_one_is_an_error(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(WireError, match=message):
        completion_event(raw)


def test_merged_joins_deltas_in_order_and_keeps_the_last_finish_usage_and_fingerprint() -> None:
    opening = ToolCallDelta(index=0, id="call_a", name="f", arguments='{"a"')
    rest = ToolCallDelta(index=0, arguments=": 1}")
    first = ChatEvent(text="Hel", model="m-1", system_fingerprint="fp_1")
    calls = ChatEvent(tool_calls=[opening])
    more = ChatEvent(text="lo", tool_calls=[rest], system_fingerprint="fp_2")
    last = ChatEvent(finish_reason="tool_calls", usage=TokenUsage(3, 4), model="m-2")
    together = merged([first, calls, more, last])
    assert together == ChatEvent(
        text="Hello",
        tool_calls=[opening, rest],
        finish_reason="tool_calls",
        usage=TokenUsage(3, 4),
        model="m-1",
        system_fingerprint="fp_2",
    )


def test_merged_of_one_event_is_that_event_and_empty_pieces_stay_empty() -> None:
    only = ChatEvent(text="x")
    assert merged([only]) is only
    assert merged([ChatEvent(), ChatEvent(text="")]) == ChatEvent(text="", tool_calls=None)


def test_tool_call_arguments_sent_as_an_object_become_json_text() -> None:
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": {"city": "Rome", "n": [1, 2]}}}
    (delta,) = tool_deltas([call]) or []
    assert delta.arguments == '{"city":"Rome","n":[1,2]}'
    with pytest.raises(WireError, match="tool call arguments are a int"):
        tool_deltas([{"index": 0, "function": {"name": "f", "arguments": 7}}])
