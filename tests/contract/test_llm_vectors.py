"""The shared protocol vectors for the LLM paths, sent to a running gateway.

Each vector's request body is posted exactly as the daemon sends it; the fake upstream is
scripted to produce the vector's content; the reply is read the way the daemon reads it
and compared with what the real SDK received in the vector (``plugin_receives``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import Chat, FakeUpstream, HttpError, ToolCallSpec
from tests.support.client import post_stream
from tests.support.daemon import read_unary_reply
from tests.support.server import TEST_KEY, GatewayServer, gateway_config
from tests.support.vectors import load_vector


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayServer]:
    routes = [
        {
            "match": {"type": "llm", "provider": "openai"},
            "targets": [{"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-x"}],
        }
    ]
    with GatewayServer(gateway_config(routes)) as server:
        yield server


def responses(vector: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["data"] for e in vector["plugin_receives"] if e["event"] == "response"]


def without_latency(chunk: dict[str, Any]) -> dict[str, Any]:
    chunk = copy.deepcopy(chunk)
    usage = chunk["delta"]["usage"]
    if usage is not None:
        assert isinstance(usage.pop("latency"), float)
    return chunk


def test_01_chat_stream(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("01")
    fake.script("gpt-4o-mini", Chat(deltas=["The picture", " shows a red square."], usage=(812, 7)))
    reply = post_stream(gateway.url, vector["path"], vector["request"])
    assert reply.status == 200 and reply.outcome.error is None and reply.outcome.dropped == []
    assert [without_latency(c) for c in reply.outcome.chunks] == [without_latency(c) for c in responses(vector)]
    sent = fake.requests[-1].json
    assert sent["max_tokens"] == 256 and sent["temperature"] == 0.7 and sent["stop"] == ["\n\n"]
    assert sent["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
    }
    assert sent["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent["messages"][3] == {"role": "tool", "content": '{"temp":21}', "tool_call_id": "call_1"}


def test_02_chat_non_stream(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("02")
    fake.script("gpt-4o-mini", Chat(content_text="It is a red square.", usage=(812, 6)))
    reply = post_stream(gateway.url, vector["path"], vector["request"])
    assert reply.status == 200 and reply.outcome.error is None and reply.outcome.dropped == []
    expected = load_vector("17")["response_example"]["lines"][0]["data"]["data"]  # the SDK's view of vector 02
    assert [without_latency(c) for c in reply.outcome.chunks] == [without_latency(expected)]


def test_03_tool_call_stream(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("03")
    call = ToolCallSpec("get_weather", '{"city":"Rome"}', id="call_9")
    fake.script("gpt-4o-mini", Chat(deltas=[], tool_calls=[call], tool_call_split=4, usage=(55, 17)))
    reply = post_stream(gateway.url, vector["path"], vector["request"])
    assert reply.status == 200 and reply.outcome.error is None and reply.outcome.dropped == []
    assert [without_latency(c) for c in reply.outcome.chunks] == [without_latency(c) for c in responses(vector)]


def test_04_error_mid_stream(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("04")
    fake.script("gpt-4o-mini", Chat(deltas=["Partial", " and more"], reset_after=1))
    reply = post_stream(gateway.url, vector["path"], vector["request"])
    assert reply.status == 200 and reply.outcome.dropped == []
    assert reply.outcome.chunks == responses(vector)
    assert reply.outcome.error is not None and reply.outcome.error.startswith("request failed: upstream")
    assert reply.body.endswith(b'"}\n\n') and b'{"data":null,"error":"upstream' in reply.body


def test_05_error_before_stream(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("05")
    fake.script("gpt-4o-mini", HttpError(400))
    reply = post_stream(gateway.url, vector["path"], vector["request"])
    assert reply.status == 400 and reply.outcome.chunks == []
    assert reply.outcome.error is not None
    assert reply.outcome.error.startswith(
        'request failed with status code: 400 and respond with: {"data":null,"error":'
    )


def test_06_structured_output_stream(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("06")
    fake.script("gpt-4o-mini", Chat(deltas=['{"a":', "1}"], usage=(40, 5)))
    reply = post_stream(gateway.url, vector["path"], vector["request"], kind="llm_structured_output")
    assert reply.status == 200 and reply.outcome.error is None and reply.outcome.dropped == []
    expected = responses(vector)
    chunks = reply.outcome.chunks
    assert "".join(c["delta"]["message"]["content"] for c in chunks) == '{"a":1}'
    assert chunks[-1] == expected[-1]
    assert [without_latency(c)["delta"]["usage"] for c in chunks if c["delta"]["usage"]] == [
        without_latency(expected[1])["delta"]["usage"]
    ]
    assert [c["delta"]["finish_reason"] for c in chunks][-2:] == ["stop", None]


@pytest.mark.parametrize("path", ["/inner/api/invoke/moderation", "/inner/api/invoke/llm"])
def test_16_wrong_key(gateway: GatewayServer, path: str) -> None:
    vector = load_vector("16")
    response = httpx.post(f"{gateway.url}{path}", json=vector["request"], headers={"X-Inner-Api-Key": "wrong"})
    assert response.status_code == 401
    data, error = read_unary_reply(response.content, "moderation")
    assert data is None
    assert error == "request failed: unauthorized: missing or wrong X-Inner-Api-Key"
    assert TEST_KEY not in response.text
