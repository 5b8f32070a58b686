"""A fast upstream's backlog goes out merged (native client): fewer frames, the same answer.

The daemon reads frames into a 1,024-entry channel and drops the overflow silently when
the plugin reads slowly; a frame per delta from an upstream that delivers hundreds of
deltas at once would overrun it. Chunks already waiting together at one read
(``MERGE_FROM`` or more) become one frame; fewer go out one frame each.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.adapters.openai_compat import MERGE_FROM
from tests.fakes.upstream import Chat, FakeUpstream, ToolCallSpec
from tests.support.client import StreamReply, llm_request, post_stream
from tests.support.server import GatewayServer, gateway_config

LLM = "/inner/api/invoke/llm"
DELTAS = [f"token{i} " for i in range(60)]
CALLS = (
    ToolCallSpec("get_weather", '{"city": "Rome", "unit": "celsius"}', id="call_a"),
    ToolCallSpec("get_time", '{"tz": "Europe/Rome"}', id="call_b"),
)


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayServer]:
    target = {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-x", "native": True}
    routes = [{"match": {"type": "llm", "provider": "openai"}, "targets": [target]}]
    with GatewayServer(gateway_config(routes)) as server:
        yield server


def ask(gateway: GatewayServer, model: str) -> StreamReply:
    tools = [{"name": "get_weather", "description": "w", "parameters": {"type": "object", "properties": {}}}]
    reply = post_stream(gateway.url, LLM, llm_request(model, tools=tools, tool_choice={"mode": "auto"}))
    assert reply.status == 200
    assert reply.outcome.dropped == [], "the daemon would drop frames"
    assert reply.outcome.error is None, reply.outcome.error
    return reply


def answer(reply: StreamReply) -> tuple[str, list[Any], Any, list[str | None]]:
    chunks = reply.outcome.chunks
    calls = [c["delta"]["message"]["tool_calls"] for c in chunks if c["delta"]["message"]["tool_calls"]]
    usage = {k: chunks[-1]["delta"]["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_price")}
    return reply.text, calls, usage, [c["delta"]["finish_reason"] for c in chunks[-1:]]


def test_a_backlog_goes_out_merged_with_the_same_answer(gateway: GatewayServer, fake: FakeUpstream) -> None:
    script = {"deltas": DELTAS, "tool_calls": CALLS, "tool_call_split": 5, "usage": (30, 60)}
    fake.script("paced", Chat(**script, gap_s=0.02))
    fake.script("burst", Chat(**script, one_write=True))
    paced, burst = ask(gateway, "paced"), ask(gateway, "burst")

    assert len(paced.outcome.chunks) == len(DELTAS) + 1  # the upstream's pace: one frame per delta, then the last
    assert len(burst.outcome.chunks) <= 5 < len(DELTAS)  # all waiting at once: merged
    assert answer(burst) == answer(paced)
    assert burst.text == "".join(DELTAS)
    assert [c["function"]["name"] for c in answer(burst)[1][0]] == ["get_weather", "get_time"]
    assert [c["delta"]["index"] for c in burst.outcome.chunks] == list(range(len(burst.outcome.chunks)))


def test_a_few_waiting_chunks_go_out_one_frame_each(gateway: GatewayServer, fake: FakeUpstream) -> None:
    few = DELTAS[: MERGE_FROM - 3]  # with the finish and usage chunks, one short of MERGE_FROM in one read
    fake.script("few", Chat(deltas=few, one_write=True))
    reply = ask(gateway, "few")
    assert [c["delta"]["message"]["content"] for c in reply.outcome.chunks] == [*few, ""]


def test_a_fault_after_a_backlog_still_delivers_what_came_before(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("broken", Chat(deltas=DELTAS, malformed_after=30, one_write=True))
    reply = post_stream(gateway.url, LLM, llm_request("broken"))
    assert reply.outcome.dropped == []
    assert reply.outcome.error is not None and "a chunk is not JSON" in reply.outcome.error
    assert reply.text == "".join(DELTAS[:30])  # the 30 chunks before the bad line, merged, then the error frame
    assert len(reply.outcome.chunks) <= 3
