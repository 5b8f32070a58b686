"""The LLM response cache through the running gateway: a repeated request is answered with no
upstream call, in the shape the daemon reads; only whole greedy answers are kept."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from gateway.usage.schema import usage
from tests.fakes.upstream import Chat, FakeUpstream, ToolCallSpec
from tests.support.client import llm_request, post_stream
from tests.support.redis import RedisProcess, delete_prefix
from tests.support.server import GatewayServer, gateway_config

LLM = "/inner/api/invoke/llm"
STRUCTURED = "/inner/api/invoke/llm/structured-output"
CHAT = "/v1/chat/completions"
GREEDY = {"temperature": 0}
REQUEST_LOG = "dify_gateway.request"


def cached_routes(upstream: FakeUpstream) -> list[dict[str, Any]]:
    def route(name: str, model: str, cache: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": name,
            "match": {"type": "llm", "provider": "openai", "model": model},
            "targets": [{"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-cache"}],
        }
        if cache is not None:
            body["cache"] = cache
        return body

    return [
        route("any-temperature", "any-*", {"any_temperature": True}),
        route("per-tenant", "own-*", {"per_tenant": True}),
        route("uncached", "plain-*", None),
        route("cached", "*", {"ttl_s": 60}),
    ]


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayServer]:
    config = gateway_config(cached_routes(upstream), cache={"key_prefix": f"rc{uuid.uuid4().hex[:8]}:"})
    with GatewayServer(config) as server:
        yield server


def ask(gateway: GatewayServer, model: str, stream: bool = True, path: str = LLM, **fields: Any) -> Any:
    fields.setdefault("completion_params", GREEDY)
    kind = "llm_structured_output" if path == STRUCTURED else "llm"
    if path == STRUCTURED:
        fields["type"] = kind
    reply = post_stream(gateway.url, path, llm_request(model, stream=stream, **fields), kind=kind)
    assert reply.status == 200
    assert reply.outcome.dropped == [], f"the daemon would drop frames: {reply.outcome.dropped}"
    return reply.outcome


def text_of(outcome: Any) -> str:
    return "".join(c["delta"]["message"]["content"] for c in outcome.chunks)


def sent(fake: FakeUpstream, model: str) -> int:
    return fake.count(CHAT, model)


def test_a_repeated_greedy_request_is_answered_without_an_upstream_call(
    gateway: GatewayServer, fake: FakeUpstream
) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    fake.script(model, Chat(deltas=["The capital", " is", " Paris."], usage=(21, 4), system_fingerprint="fp_c"))
    first = ask(gateway, model)
    assert first.error is None and text_of(first) == "The capital is Paris."
    assert sent(fake, model) == 1
    assert first.chunks[-1]["delta"]["usage"]["total_tokens"] == 25

    again = ask(gateway, model)
    assert again.error is None
    assert sent(fake, model) == 1, "the repeat reached the upstream"
    assert text_of(again) == "The capital is Paris."
    last = again.chunks[-1]["delta"]
    assert last["finish_reason"] == "stop"
    assert [c["delta"]["index"] for c in again.chunks] == list(range(len(again.chunks)))
    assert [c["delta"]["usage"] is not None for c in again.chunks] == [False] * (len(again.chunks) - 1) + [True]
    # The answer's tokens, at no price.
    assert (last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"]) == (21, 4)
    assert (last["usage"]["prompt_price"], last["usage"]["completion_price"], last["usage"]["total_price"]) == (
        "0",
        "0",
        "0",
    )
    assert again.chunks[0]["system_fingerprint"] == "fp_c"

    # A non-stream request shares the answer: one frame.
    whole = ask(gateway, model, stream=False)
    assert whole.error is None
    (chunk,) = whole.chunks
    assert chunk["delta"]["message"]["content"] == "The capital is Paris."
    assert chunk["delta"]["finish_reason"] == ""
    assert sent(fake, model) == 1


def test_a_long_answer_replays_in_pieces_and_whole(gateway: GatewayServer, fake: FakeUpstream) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    long_text = "".join(f"word{i} " for i in range(400))  # ~3,000 characters, unicode-free
    fake.script(model, Chat(deltas=[long_text[:1000], long_text[1000:], "ü€😀"], usage=(5, 700)))
    first = ask(gateway, model)
    again = ask(gateway, model)
    assert sent(fake, model) == 1
    assert text_of(again) == text_of(first) == long_text + "ü€😀"
    assert len(again.chunks) > 3  # pieces, then the final chunk


def test_any_other_difference_is_a_miss(gateway: GatewayServer, fake: FakeUpstream) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    ask(gateway, model)
    assert sent(fake, model) == 1
    other_question = [
        {"role": "user", "content": "Something else?", "name": "", "tool_calls": None, "tool_call_id": ""}
    ]
    ask(gateway, model, prompt_messages=other_question)
    assert sent(fake, model) == 2
    ask(gateway, model, completion_params={"temperature": 0, "max_tokens": 7})
    assert sent(fake, model) == 3
    ask(gateway, model, stop=["\n"])
    assert sent(fake, model) == 4
    # Another tenant shares the route's answers (per_tenant is false here).
    ask(gateway, model, tenant_id="tenant-other")
    assert sent(fake, model) == 4


@pytest.mark.parametrize("params", [{"temperature": 0.7}, {}, {"temperature": "0"}])
def test_requests_that_are_not_greedy_are_not_cached(
    gateway: GatewayServer, fake: FakeUpstream, params: dict[str, Any]
) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    ask(gateway, model, completion_params=params)
    ask(gateway, model, completion_params=params)
    assert sent(fake, model) == 2


def test_any_temperature_caches_every_request(gateway: GatewayServer, fake: FakeUpstream) -> None:
    model = f"any-{uuid.uuid4().hex[:6]}"
    ask(gateway, model, completion_params={"temperature": 0.9})
    ask(gateway, model, completion_params={"temperature": 0.9})
    assert sent(fake, model) == 1


def test_per_tenant_answers_are_not_shared(gateway: GatewayServer, fake: FakeUpstream) -> None:
    model = f"own-{uuid.uuid4().hex[:6]}"
    ask(gateway, model, tenant_id="t-a")
    ask(gateway, model, tenant_id="t-b")
    assert sent(fake, model) == 2
    ask(gateway, model, tenant_id="t-a")
    ask(gateway, model, tenant_id="t-b")
    assert sent(fake, model) == 2


def test_a_route_without_cache_always_calls_the_upstream(gateway: GatewayServer, fake: FakeUpstream) -> None:
    model = f"plain-{uuid.uuid4().hex[:6]}"
    ask(gateway, model)
    ask(gateway, model)
    assert sent(fake, model) == 2


@pytest.mark.parametrize("first_stream", [True, False])
def test_tool_calls_are_replayed_complete(gateway: GatewayServer, fake: FakeUpstream, first_stream: bool) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    fake.script(model, Chat(deltas=[], tool_calls=[ToolCallSpec("get_weather", '{"city": "Rome"}', id="call_w")]))
    tools = [{"name": "get_weather", "description": "", "parameters": {"type": "object", "properties": {}}}]
    first = ask(gateway, model, stream=first_stream, tools=tools)
    again = ask(gateway, model, stream=not first_stream, tools=tools)
    assert sent(fake, model) == 1
    for outcome in (first, again):
        calls = [call for c in outcome.chunks for call in c["delta"]["message"]["tool_calls"]]
        assert calls == [
            {"id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
        ]
    streamed = again if first_stream is False else first
    assert streamed.chunks[-1]["delta"]["finish_reason"] == "tool_calls"


def test_structured_output_is_replayed_parsed(gateway: GatewayServer, fake: FakeUpstream) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    fake.script(model, Chat(deltas=['{"city": ', '"Paris"}'], content_text='{"city": "Paris"}'))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    first = ask(gateway, model, path=STRUCTURED, structured_output_schema=schema)
    again = ask(gateway, model, path=STRUCTURED, structured_output_schema=schema)
    whole = ask(gateway, model, stream=False, path=STRUCTURED, structured_output_schema=schema)
    assert sent(fake, model) == 1
    for outcome in (first, again, whole):
        assert outcome.error is None
        assert outcome.chunks[-1]["structured_output"] == {"city": "Paris"}


@pytest.mark.parametrize(
    "broken", [Chat(deltas=["a", "b", "c", "d"], reset_after=2), Chat(deltas=["a", "b", "c", "d"], truncate_after=2)]
)
def test_a_stream_that_failed_is_not_stored(gateway: GatewayServer, fake: FakeUpstream, broken: Chat) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    fake.script(model, broken, Chat(deltas=["whole"]))
    failed = ask(gateway, model)
    assert failed.error is not None  # the partial stream ended with an error frame
    complete = ask(gateway, model)
    assert complete.error is None and text_of(complete) == "whole"
    again = ask(gateway, model)
    assert text_of(again) == "whole"
    assert sent(fake, model) == 2


def test_hits_and_misses_are_counted_in_metrics_and_the_request_log(
    gateway: GatewayServer, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    def lookups() -> dict[str, float]:
        text = httpx.get(f"{gateway.url}/metrics").text
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("dify_gateway_llm_response_cache_lookups_total{"):
                result = line.split('result="', 1)[1].split('"', 1)[0]
                found[result] = float(line.rsplit(" ", 1)[1])
        return found

    before = lookups()
    model = f"m-{uuid.uuid4().hex[:6]}"

    def logged() -> list[str | None]:
        return [getattr(r, "response_cache", None) for r in caplog.records if r.name == REQUEST_LOG]

    with caplog.at_level(logging.INFO, logger=REQUEST_LOG):
        ask(gateway, model)
        ask(gateway, model)
        # The request log line is written once the reply has gone out, so it can trail the client.
        deadline = time.monotonic() + 10
        while logged()[-2:] != ["miss", "hit"] and time.monotonic() < deadline:
            time.sleep(0.02)
    after = lookups()
    assert after["hit"] - before.get("hit", 0) == 1
    assert after["miss"] - before.get("miss", 0) == 1
    assert logged()[-2:] == ["miss", "hit"]


def test_a_hit_is_recorded_as_cached_tokens_in_the_ledger(tmp_path: Path, fake: FakeUpstream) -> None:
    database = f"sqlite:///{tmp_path / 'usage.db'}"
    config = gateway_config(
        cached_routes(fake),
        ledger={"database_url": database, "flush_interval_ms": 50},
        cache={"key_prefix": f"rc{uuid.uuid4().hex[:8]}:"},
    )
    model = "gpt-4o-mini"  # priced in litellm's bundled map
    fake.script(model, Chat(deltas=["Yes."], usage=(30, 2)))
    with GatewayServer(config) as server:
        ask(server, model, tenant_id="t-ledger")
        ask(server, model, tenant_id="t-ledger")
    engine = sa.create_engine(database)
    try:
        with engine.connect() as connection:
            rows = [dict(r._mapping) for r in connection.execute(sa.select(usage).order_by(usage.c.created_at))]
    finally:
        engine.dispose()
    assert [(r["tokens_in"], r["tokens_out"], r["cached_tokens"]) for r in rows] == [(30, 2, 0), (0, 0, 32)]
    assert rows[1]["price_usd"] == 0 and rows[0]["price_usd"] > 0


def test_replicas_share_answers_through_redis_and_a_paused_redis_is_a_miss(
    private_redis: RedisProcess, fake: FakeUpstream
) -> None:
    prefix = f"rc{uuid.uuid4().hex[:8]}:"
    settings = {"key_prefix": prefix, "redis_url": private_redis.url, "timeout_ms": 200}
    config = gateway_config(cached_routes(fake), cache=settings)
    model = f"m-{uuid.uuid4().hex[:6]}"
    with GatewayServer(config) as one, GatewayServer(config) as two:
        ask(one, model)
        _wait_for_key(private_redis.url, prefix)
        ask(two, model)
        assert sent(fake, model) == 1, "the second replica did not find the first one's answer"

        private_redis.pause()
        try:
            paused_model = f"m-{uuid.uuid4().hex[:6]}"
            started = time.monotonic()
            outcome = ask(two, paused_model)
            assert outcome.error is None and text_of(outcome) == "Hello world"
            assert time.monotonic() - started < 10
            assert sent(fake, paused_model) == 1
        finally:
            private_redis.resume()
    delete_prefix(private_redis.url, prefix)


def _wait_for_key(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 5
        while not list(client.scan_iter(match=f"{prefix}r1:*")):
            assert time.monotonic() < deadline, "the answer was not written to Redis"
            time.sleep(0.01)
    finally:
        client.close()
