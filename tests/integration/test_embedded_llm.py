"""The embedded LLM (SmolLM2-135M-Instruct on llama.cpp) behind the gateway's embedded
defaults: real decoding through HTTP, read the way the daemon reads it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from tests.support.client import invoke_body, llm_request, post_stream, post_unary
from tests.support.daemon import FrameReader
from tests.support.sdk import run_scenarios, sdk_python
from tests.support.server import TEST_KEY, GatewayServer

LLM_PATH = "/inner/api/invoke/llm"
STRUCTURED_PATH = "/inner/api/invoke/llm/structured-output"
QUESTION = "What is the capital of France?"
ADMIN = "admin-key-for-the-console"


def wait_ready(server: GatewayServer) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "embedded models did not load"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayServer]:
    sdk_python()  # before the server starts: the first run creates the SDK's virtualenv
    config = {
        "dify": {"inner_api_key": TEST_KEY},
        "serverless": {"enabled": True, "default_tenant": "dev"},
        "console": {"enabled": True, "admin_key": ADMIN},
    }
    with GatewayServer(config) as server:
        wait_ready(server)
        yield server


def ask(text: str, stream: bool = True, **params: Any) -> dict[str, Any]:
    extra = {k: params.pop(k) for k in ("stop", "tools", "tool_choice") if k in params}
    return llm_request(
        stream=stream,
        prompt_messages=[{"role": "user", "content": text}],
        completion_params={"temperature": 0, **params},
        **extra,
    )


def test_readiness_lists_the_llm(gateway: GatewayServer) -> None:
    models = httpx.get(f"{gateway.url}/readyz").json()["embedded_models"]
    assert models["local/smollm2-135m-instruct"] == "ready"


def test_a_streamed_chat_arrives_token_by_token(gateway: GatewayServer) -> None:
    reply = post_stream(gateway.url, LLM_PATH, ask(QUESTION))
    outcome = reply.outcome
    assert reply.status == 200 and outcome.error is None and outcome.dropped == []
    texts = [c["delta"]["message"]["content"] for c in outcome.chunks]
    assert sum(1 for t in texts if t) >= 3  # several frames, as decoded
    assert "Paris" in reply.text
    usages = reply.usages
    assert len(usages) == 1 and outcome.chunks[-1]["delta"]["usage"] == usages[0]  # on the last only
    usage = usages[0]
    assert usage["prompt_tokens"] > 10 and 0 < usage["completion_tokens"] < 40
    assert usage["total_price"] == "0" and outcome.chunks[-1]["delta"]["finish_reason"] == "stop"


def test_stream_false_gives_the_same_answer_in_one_frame(gateway: GatewayServer) -> None:
    streamed = post_stream(gateway.url, LLM_PATH, ask(QUESTION)).text
    whole = post_stream(gateway.url, LLM_PATH, ask(QUESTION, stream=False))
    assert whole.outcome.error is None and len(whole.outcome.chunks) == 1
    assert whole.text == streamed  # greedy decoding: the same tokens


def test_a_stop_sequence_ends_the_answer_before_it(gateway: GatewayServer) -> None:
    prompt = "List the days of the week, one per line."
    full = post_stream(gateway.url, LLM_PATH, ask(prompt, max_tokens=60)).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert len(stop) == 3, full
    cut = post_stream(gateway.url, LLM_PATH, ask(prompt, max_tokens=60, stop=[stop]))
    assert cut.outcome.error is None
    assert cut.text == full[: full.index(stop)]
    assert cut.outcome.chunks[-1]["delta"]["finish_reason"] == "stop"


def test_max_tokens_ends_with_finish_reason_length(gateway: GatewayServer) -> None:
    reply = post_stream(gateway.url, LLM_PATH, ask("Write a long story about a dragon.", max_tokens=5))
    last = reply.outcome.chunks[-1]["delta"]
    assert last["finish_reason"] == "length" and last["usage"]["completion_tokens"] == 5


def test_completion_mode_continues_the_prompt(gateway: GatewayServer) -> None:
    body = ask("The quick brown fox", max_tokens=8)
    body["mode"] = "completion"
    reply = post_stream(gateway.url, LLM_PATH, body)
    assert reply.outcome.error is None and reply.text.strip()
    assert reply.usages[0]["prompt_tokens"] < 10  # the raw prompt: no chat template, no system prompt


def random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """An object schema of strings, numbers, integers, booleans, enums, arrays and nested objects."""
    leaves: list[dict[str, Any]] = [
        {"type": "string"},
        {"type": "number"},
        {"type": "integer"},
        {"type": "boolean"},
        {"type": "string", "enum": rng.sample(["red", "green", "blue", "small", "large"], 3)},
        {"type": "array", "items": {"type": rng.choice(["string", "integer"])}},
    ]
    properties: dict[str, Any] = {}
    for i in range(rng.randint(1, 4)):
        name = rng.choice(["name", "age", "city", "score", "tags", "size", "ok", "note"]) + str(i)
        if depth < 2 and rng.random() < 0.25:
            properties[name] = random_schema(rng, depth + 1)
        else:
            properties[name] = dict(rng.choice(leaves))
    required = [n for n in properties if rng.random() < 0.7]
    return {"type": "object", "properties": properties, "required": required}


def test_structured_output_always_validates_against_the_schema(gateway: GatewayServer) -> None:
    rng = random.Random(20261206)
    for n in range(20):
        schema = random_schema(rng)
        body = ask("Describe a person.", stream=n % 2 == 0, max_tokens=300)
        body["structured_output_schema"] = schema
        reply = post_stream(gateway.url, STRUCTURED_PATH, body, kind="llm_structured_output")
        assert reply.outcome.error is None, (schema, reply.outcome.error)
        found = [c["structured_output"] for c in reply.outcome.chunks if c.get("structured_output")]
        assert len(found) == 1, (schema, reply.outcome.chunks[-1])
        jsonschema.validate(found[0], schema)


WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ADD = {
    "name": "add_numbers",
    "description": "Add two numbers",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
}


@pytest.mark.parametrize("stream", [True, False])
def test_a_request_with_tools_gets_a_tool_call_of_a_tool_s_schema(gateway: GatewayServer, stream: bool) -> None:
    reply = post_stream(gateway.url, LLM_PATH, ask("What is the weather in Paris?", stream, tools=[WEATHER, ADD]))
    assert reply.outcome.error is None
    calls = [tc for c in reply.outcome.chunks for tc in c["delta"]["message"]["tool_calls"]]
    assert len(calls) == 1 and reply.text == ""
    call = calls[0]
    tool = {t["name"]: t for t in (WEATHER, ADD)}[call["function"]["name"]]
    jsonschema.validate(orjson.loads(call["function"]["arguments"]), tool["parameters"])
    assert call["id"].startswith("call_") and call["type"] == "function"
    if stream:
        assert reply.outcome.chunks[-1]["delta"]["finish_reason"] == "tool_calls"


def test_a_named_tool_choice_calls_that_tool(gateway: GatewayServer) -> None:
    choice = {"mode": "tool", "name": "add_numbers"}
    reply = post_stream(gateway.url, LLM_PATH, ask("Add 2 and 3.", tools=[WEATHER, ADD], tool_choice=choice))
    calls = [tc for c in reply.outcome.chunks for tc in c["delta"]["message"]["tool_calls"]]
    assert [c["function"]["name"] for c in calls] == ["add_numbers"]
    jsonschema.validate(orjson.loads(calls[0]["function"]["arguments"]), ADD["parameters"])


CALLED = {"name": "get_weather", "arguments": '{"city":"Paris"}'}


def test_after_a_tool_result_the_answer_is_text(gateway: GatewayServer) -> None:
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "Sunny, 21 degrees", "tool_call_id": "call_1", "name": "get_weather"},
    ]
    body = llm_request(prompt_messages=messages, tools=[WEATHER, ADD], completion_params={"temperature": 0})
    reply = post_stream(gateway.url, LLM_PATH, body)
    assert reply.outcome.error is None and reply.text.strip()
    assert all(not c["delta"]["message"]["tool_calls"] for c in reply.outcome.chunks)


def test_tool_choice_none_answers_in_text(gateway: GatewayServer) -> None:
    reply = post_stream(
        gateway.url, LLM_PATH, ask("What is the weather in Paris?", tools=[WEATHER], tool_choice={"mode": "none"})
    )
    assert reply.outcome.error is None and reply.text.strip()
    assert all(not c["delta"]["message"]["tool_calls"] for c in reply.outcome.chunks)


def test_image_content_is_refused_clearly(gateway: GatewayServer) -> None:
    image = {"type": "image", "data": "", "url": "https://example.com/cat.png", "mime_type": "image/png"}
    body = llm_request(prompt_messages=[{"role": "user", "content": [image]}])
    reply = post_stream(gateway.url, LLM_PATH, body)
    assert reply.outcome.error is not None and "reads text only" in str(reply.outcome.error)


async def stream_timings(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[float, float, str]:
    """(time of the first text frame, of the last text frame, the text)."""
    reader = FrameReader()
    first = last = 0.0
    texts = []
    async with client.stream("POST", url, json=body, headers={"X-Inner-Api-Key": TEST_KEY}) as response:
        async for data in response.aiter_bytes():
            for frame in reader.feed(data):
                chunk = orjson.loads(frame)["data"]
                text = chunk["delta"]["message"]["content"] if chunk else ""
                if text:
                    last = time.monotonic()
                    first = first or last
                    texts.append(text)
    return first, last, "".join(texts)


def test_concurrent_chats_on_one_instance_are_served_in_turn_and_the_loop_stays_free(
    gateway: GatewayServer,
) -> None:
    async def main() -> tuple[list[tuple[float, float, str]], float, float]:
        async with httpx.AsyncClient(timeout=120) as client:
            body = ask("Tell me about the history of Rome.", max_tokens=40)
            chats = [asyncio.create_task(stream_timings(client, f"{gateway.url}{LLM_PATH}", body)) for _ in range(4)]
            await asyncio.sleep(0.3)
            started = time.monotonic()
            embedding = await client.post(
                f"{gateway.url}/inner/api/invoke/text-embedding",
                json=invoke_body("text_embedding", texts=["hello"], input_type="query"),
                headers={"X-Inner-Api-Key": TEST_KEY},
            )
            embedded_at = time.monotonic()
            assert embedding.status_code == 200 and b"embeddings" in embedding.content
            results = await asyncio.gather(*chats)
        return results, started, embedded_at

    results, asked_at, embedded_at = asyncio.run(main())
    assert all(text for _, _, text in results)
    assert len({text for _, _, text in results}) == 1  # same greedy answer each time
    spans = sorted((first, last) for first, last, _ in results)
    for (_, previous_last), (next_first, _) in zip(spans, spans[1:], strict=False):
        assert next_first > previous_last  # one generation at a time
    # The embedding did not wait for the chats queued before it.
    assert embedded_at < spans[-1][0], (embedded_at - asked_at, spans)


def test_a_hang_up_stops_the_generation(gateway: GatewayServer) -> None:
    body = ask("Write a very long story about a dragon.", max_tokens=1500)
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{gateway.url}{LLM_PATH}", json=body, headers={"X-Inner-Api-Key": TEST_KEY}) as r:
            reader = FrameReader()
            for data in r.iter_bytes():
                if reader.feed(data):
                    break  # the first frame: then hang up
    # The instance is free again at once: 1,500 tokens would take far longer than this.
    started = time.monotonic()
    reply = post_stream(gateway.url, LLM_PATH, ask(QUESTION, max_tokens=5), timeout=60)
    assert reply.outcome.error is None and reply.text
    assert time.monotonic() - started < 10


def test_a_busy_instance_refuses_past_its_waiting_room() -> None:
    config = {"dify": {"inner_api_key": TEST_KEY}, "server": {"local_llm": {"max_waiting": 0}}}
    with GatewayServer(config) as server:
        wait_ready(server)

        async def main() -> tuple[str, Any]:
            async with httpx.AsyncClient(timeout=120) as client:
                long = asyncio.create_task(
                    stream_timings(client, f"{server.url}{LLM_PATH}", ask("Write a long story.", max_tokens=200))
                )
                await asyncio.sleep(1.0)  # the long one holds the only instance now
                second = await asyncio.to_thread(post_stream, server.url, LLM_PATH, ask(QUESTION))
                await long
                return (await long)[2], second

        long_text, second = asyncio.run(main())
    assert long_text
    assert second.outcome.error is not None
    assert "already waiting for the embedded LLM" in str(second.outcome.error)


def test_the_sdk_invokes_the_embedded_model_through_the_serverless_endpoint(gateway: GatewayServer) -> None:
    report = run_scenarios(sdk_python(), gateway.url, "sess-llm", ["llm_stream", "llm_nonstream"])
    streamed = report["llm_stream"]
    assert "ok" in streamed, streamed
    assert streamed["ok"]["types"] == ["LLMResultChunk"]
    assert sum(1 for t in streamed["ok"]["texts"] if t) >= 2 and len(streamed["ok"]["usages"]) == 1
    whole = report["llm_nonstream"]
    assert "ok" in whole, whole
    assert whole["ok"]["type"] == "LLMResult" and whole["ok"]["content"]
    assert whole["ok"]["usage"]["completion_tokens"] > 0 and whole["ok"]["usage"]["total_price"] == "0"


def test_unary_paths_are_unchanged(gateway: GatewayServer) -> None:
    """The LLM's process beside the others: an embedding still answers."""
    data = post_unary(gateway.url, "text-embedding", invoke_body("text_embedding", texts=["hi"], input_type="query"))
    assert len(data.ok()["embeddings"][0]) == 384


def test_the_console_s_try_it_streams_a_real_answer(gateway: GatewayServer) -> None:
    form = {"type": "llm", "route": "local-llm", "text": QUESTION, "stream": True, "temperature": 0}
    reply = httpx.post(f"{gateway.url}/console/api/try", json=form, headers={"X-Admin-Key": ADMIN}, timeout=60)
    assert reply.status_code == 200
    events = [orjson.loads(line) for line in reply.content.splitlines() if line.strip()]
    frames = [e["frame"]["data"] for e in events if e["event"] == "frame" and e["frame"].get("data")]
    text = "".join(f["delta"]["message"]["content"] for f in frames)
    assert len(frames) >= 3 and "Paris" in text, text
    assert frames[-1]["delta"]["usage"]["completion_tokens"] > 0


def test_a_cached_route_replays_the_embedded_answer() -> None:
    route = {"match": {"type": "llm"}, "targets": [{"model": "local/smollm2-135m-instruct"}], "cache": {}}
    with GatewayServer({"dify": {"inner_api_key": TEST_KEY}, "routes": [route]}) as server:
        wait_ready(server)
        first = post_stream(server.url, LLM_PATH, ask(QUESTION))
        again = post_stream(server.url, LLM_PATH, ask(QUESTION))
        metrics = httpx.get(f"{server.url}/metrics").text
    assert first.outcome.error is None and again.outcome.error is None
    assert "Paris" in first.text and again.text == first.text
    assert again.usages[0]["completion_tokens"] == first.usages[0]["completion_tokens"] > 0
    assert 'dify_gateway_llm_response_cache_lookups_total{result="hit"} 1.0' in metrics
