"""ResponseCache: what its keys cover, how answers are stored, and what counts as greedy."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.adapters.base import ChatCall, UpstreamContext
from gateway.cache.memory import MemoryStore
from gateway.cache.response_cache import CachedAnswer, ResponseCache, deterministic
from gateway.config import TargetConfig
from gateway.routing import Target

TARGET = Target(config=TargetConfig(model="openai/gpt-4o-mini"), model="openai/gpt-4o-mini")
ANSWER = CachedAnswer(
    text="Paris ü 😀",
    tool_calls=[("call_1", "get_weather", '{"city": "Rome"}')],
    prompt_tokens=12,
    completion_tokens=3,
    finish_reason="tool_calls",
    system_fingerprint="fp_1",
)


def call(**changes: Any) -> ChatCall:
    base = ChatCall(
        target=TARGET,
        context=UpstreamContext(route="r", provider="openai", model="gpt-4o-mini"),
        messages=[{"role": "user", "content": "Capital of France?"}],
        stream=True,
        params={"temperature": 0},
    )
    return dataclasses.replace(base, **changes)


def cache() -> ResponseCache:
    return ResponseCache(MemoryStore(1 << 20), "p:")


def test_an_answer_survives_encoding() -> None:
    assert CachedAnswer.decode(ANSWER.encode()) == ANSWER


@pytest.mark.parametrize("value", [b"", b"e1xxxx", b"r1not-zlib", b"r1" + b"x\x9c\x03\x00\x00\x00\x00\x01"])
def test_a_value_this_version_did_not_write_decodes_to_none(value: bytes) -> None:
    assert CachedAnswer.decode(value) is None


def test_the_key_covers_what_changes_the_answer_and_not_the_stream_flag() -> None:
    responses = cache()
    key = responses.key(call(), None)
    assert key.startswith("p:r1:_:")
    assert responses.key(call(stream=False, timeout_s=5), None) == key
    changed = [
        call(messages=[{"role": "user", "content": "Capital of Spain?"}]),
        call(params={"temperature": 0, "max_tokens": 5}),
        call(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        call(tool_choice="required"),
        call(stop=["\n"]),
        call(prompt="Once upon", messages=[]),
        call(target=Target(config=TargetConfig(model="openai/gpt-4o"), model="openai/gpt-4o")),
        call(
            target=Target(
                config=TargetConfig(model="openai/gpt-4o-mini", api_base="http://other:8000/v1"),
                model="openai/gpt-4o-mini",
            )
        ),
    ]
    keys = {responses.key(c, None) for c in changed}
    assert key not in keys and len(keys) == len(changed)


def test_keys_per_tenant_differ_and_never_hold_the_raw_id() -> None:
    responses = cache()
    tenant = "tenant:with:colons" + "x" * 200
    a, b = responses.key(call(), tenant), responses.key(call(), "other")
    assert a != b != responses.key(call(), None)
    assert tenant not in a and len(a) < 200


def test_api_keys_do_not_change_the_key() -> None:
    responses = cache()
    keyed = Target(config=TargetConfig(model="openai/gpt-4o-mini", api_key="sk-1"), model="openai/gpt-4o-mini")
    assert responses.key(call(target=keyed), None) == responses.key(call(), None)


@pytest.mark.asyncio
async def test_get_counts_hits_misses_and_corrupt_values() -> None:
    responses = cache()
    key = responses.key(call(), None)
    assert await responses.get(key) is None
    responses.put(key, ANSWER, 60)
    assert await responses.get(key) == ANSWER
    responses.store.put_many([(key, b"r1garbage")], 60)
    assert await responses.get(key) is None
    stats = responses.stats
    assert (stats.hits, stats.misses, stats.corrupt, stats.stored) == (1, 2, 1, 1)


@pytest.mark.parametrize(
    ("params", "greedy"),
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.0, "top_p": 0.5}, True),
        ({"temperature": 0.1}, False),
        ({}, False),
        ({"temperature": "0"}, False),
        ({"temperature": False}, False),
        ({"temperature": None}, False),
    ],
)
def test_only_temperature_zero_is_greedy(params: dict[str, Any], greedy: bool) -> None:
    assert deterministic(params) is greedy
