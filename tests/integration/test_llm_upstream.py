"""The LLM endpoints against a scripted OpenAI-compatible upstream on loopback.

Every reply is read the way the plugin daemon reads it: a frame the daemon would drop
fails the test, and so does a stream that ends without a final frame or error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.fakes.upstream import Chat, Completion, FakeUpstream, HttpError, Reset, ToolCallSpec
from tests.support.client import llm_request, post_stream
from tests.support.server import TEST_KEY, GatewayServer, gateway_config

LLM = "/inner/api/invoke/llm"
STRUCTURED = "/inner/api/invoke/llm/structured-output"
SECRET = "sk-upstream-secret-123"


@pytest.fixture(scope="module", params=["native", "litellm"])
def gateway(upstream: FakeUpstream, request: pytest.FixtureRequest) -> Iterator[GatewayServer]:
    """Every test runs against both chat clients: the native OpenAI-compatible one and litellm."""
    native = request.param == "native"
    routes = [
        {
            "name": "prompted",
            "match": {"type": "llm", "provider": "openai", "model": "prompted-*"},
            "targets": [
                {
                    "model": "openai/{model}",
                    "api_base": upstream.base_url,
                    "api_key": SECRET,
                    "structured_output": "prompt",
                    "native": native,
                }
            ],
        },
        {
            "name": "slow",
            "match": {"type": "llm", "provider": "openai", "model": "slow-*"},
            "targets": [
                {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": SECRET, "native": native}
            ],
            "timeouts": {"total_s": 1.0},
        },
        {
            "name": "openai-all",
            "match": {"type": "llm", "provider": "openai"},
            "targets": [
                {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": SECRET, "native": native}
            ],
        },
    ]
    with GatewayServer(gateway_config(routes)) as server:
        yield server


def assert_clean(reply_error: str | None, dropped: list[tuple[bytes, str]]) -> None:
    assert dropped == [], f"the daemon would drop frames: {dropped}"
    assert reply_error is None, reply_error


def test_stream_one_frame_per_delta_and_usage_on_the_last(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("gpt-4o-mini", Chat(deltas=["Hel", "lo", " world"], usage=(12, 3), system_fingerprint="fp_1"))
    reply = post_stream(gateway.url, LLM, llm_request("gpt-4o-mini"))
    assert reply.status == 200
    assert reply.content_type.startswith("text/event-stream")
    assert_clean(reply.outcome.error, reply.outcome.dropped)
    chunks = reply.outcome.chunks
    assert [c["delta"]["message"]["content"] for c in chunks] == ["Hel", "lo", " world", ""]
    assert [c["delta"]["index"] for c in chunks] == [0, 1, 2, 3]
    assert [c["delta"]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert [c["delta"]["usage"] is not None for c in chunks] == [False, False, False, True]
    usage = chunks[-1]["delta"]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (12, 3, 15)
    # gpt-4o-mini in litellm's bundled map: $0.15 / $0.60 per million tokens.
    assert (usage["prompt_unit_price"], usage["prompt_price_unit"], usage["prompt_price"]) == (
        "0.15",
        "0.000001",
        "0.0000018",
    )
    assert (usage["completion_unit_price"], usage["completion_price"], usage["total_price"]) == (
        "0.6",
        "0.0000018",
        "0.0000036",
    )
    assert usage["currency"] == "USD" and usage["latency"] > 0
    assert all(c["model"] == "gpt-4o-mini" for c in chunks)
    assert chunks[0]["system_fingerprint"] == "fp_1"
    sent = fake.requests[-1].json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["temperature"] == 0.1
    assert sent["messages"][1] == {"role": "user", "content": "Hello?"}


def test_non_stream_is_exactly_one_frame(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("gpt-4o-mini", Chat(content_text="It is a red square.", usage=(812, 6)))
    reply = post_stream(gateway.url, LLM, llm_request("gpt-4o-mini", stream=False))
    assert reply.status == 200
    assert_clean(reply.outcome.error, reply.outcome.dropped)
    (chunk,) = reply.outcome.chunks
    assert chunk["delta"]["message"]["content"] == "It is a red square."
    assert chunk["delta"]["finish_reason"] == ""
    assert chunk["delta"]["index"] == 0
    assert chunk["delta"]["usage"]["prompt_price"] == "0.0001218"
    assert chunk["delta"]["usage"]["total_tokens"] == 818
    assert not fake.requests[-1].json.get("stream")


@pytest.mark.parametrize("stream", [True, False])
def test_tool_calls_are_assembled_complete_in_one_chunk(
    gateway: GatewayServer, fake: FakeUpstream, stream: bool
) -> None:
    calls = (
        ToolCallSpec("get_weather", '{"city": "Rome", "unit": "celsius"}', id="call_a"),
        ToolCallSpec("get_time", '{"tz": "Europe/Rome"}', id="call_b"),
    )
    fake.script("tools-model", Chat(deltas=[], tool_calls=calls, tool_call_split=7))
    tools = [{"name": "get_weather", "description": "w", "parameters": {"type": "object", "properties": {}}}]
    body = llm_request("tools-model", stream=stream, tools=tools, tool_choice={"mode": "auto"})
    reply = post_stream(gateway.url, LLM, body)
    assert_clean(reply.outcome.error, reply.outcome.dropped)
    with_calls = [c for c in reply.outcome.chunks if c["delta"]["message"]["tool_calls"]]
    assert len(with_calls) == 1
    assert with_calls[0]["delta"]["message"]["content"] == ""
    assert with_calls[0]["delta"]["message"]["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Rome", "unit": "celsius"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "Europe/Rome"}'}},
    ]
    assert with_calls[0]["delta"]["finish_reason"] == ("tool_calls" if stream else "")
    sent = fake.requests[-1].json
    assert sent["tool_choice"] == "auto"
    assert sent["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("status", "expected_status", "expected_text", "attempts"),
    [
        (429, 429, "HTTP 429", 3),
        (500, 502, "HTTP 500", 3),
        (503, 502, "HTTP 503", 3),
        (400, 400, "HTTP 400", 1),
        (401, 502, "HTTP 401", 1),
        (404, 400, "HTTP 404", 1),
    ],
)
def test_upstream_error_before_the_stream_is_a_non_200_envelope(
    gateway: GatewayServer, fake: FakeUpstream, status: int, expected_status: int, expected_text: str, attempts: int
) -> None:
    model = f"err-{status}"  # one backend per case: breakers are per backend
    fake.script(model, HttpError(status, headers={"Retry-After": "1"}))
    reply = post_stream(gateway.url, LLM, llm_request(model))
    assert reply.status == expected_status
    envelope = orjson.loads(reply.body)
    assert envelope["data"] is None
    assert expected_text in envelope["error"]
    assert "route 'openai-all'" in envelope["error"] and f"'{model}'" in envelope["error"]
    assert reply.outcome.error is not None
    assert reply.outcome.error.startswith(f"request failed with status code: {expected_status}")
    # The gateway's own retries (route default: 2) and nothing else: no hidden retries in
    # litellm or the OpenAI SDK; request errors are never retried.
    assert fake.count(model=model) == attempts
    assert reply.headers["x-dify-gateway-attempts"] == str(attempts)


def test_connection_reset_before_headers(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("reset-model", Reset())
    reply = post_stream(gateway.url, LLM, llm_request("reset-model"))
    assert reply.status == 502
    assert "unreachable or failed" in orjson.loads(reply.body)["error"]
    assert fake.count(model="reset-model") == 3  # the first attempt and the route's 2 retries


@pytest.mark.parametrize("k", [2, 3, 4])
def test_reset_mid_stream_ends_with_one_error_frame(gateway: GatewayServer, fake: FakeUpstream, k: int) -> None:
    fake.script("midreset", Chat(deltas=["a", "b", "c", "d", "e"], reset_after=k))
    reply = post_stream(gateway.url, LLM, llm_request("midreset"))
    assert reply.status == 200
    assert reply.outcome.dropped == []
    assert reply.outcome.error is not None and reply.outcome.error.startswith("request failed: ")
    assert "route 'openai-all'" in reply.outcome.error
    assert reply.text == "abcde"[: len(reply.outcome.chunks)]  # one frame per delta (under a backlog's size)
    assert 1 <= len(reply.outcome.chunks) <= k
    assert reply.usages == []


def test_truncated_stream_is_reported_not_silently_cut(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("trunc", Chat(deltas=["one", " two", " three"], truncate_after=2))
    reply = post_stream(gateway.url, LLM, llm_request("trunc"))
    assert reply.outcome.dropped == []
    assert reply.outcome.error is not None
    assert "ended before the answer was finished" in reply.outcome.error
    assert reply.text == "one two"


def test_malformed_sse_gives_valid_frames_or_a_clean_error(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("malformed", Chat(deltas=["x", "y", "z"], malformed_after=2))
    reply = post_stream(gateway.url, LLM, llm_request("malformed"))
    assert reply.status == 200
    assert reply.outcome.dropped == []
    if reply.outcome.error is None:
        assert reply.text == "xyz"
        assert len(reply.usages) == 1
    else:
        assert reply.outcome.error.startswith("request failed: ")


def test_stalled_stream_hits_the_total_deadline(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("slow-stall", Chat(deltas=["a", "b", "c"], stall_after=2))
    started = time.monotonic()
    reply = post_stream(gateway.url, LLM, llm_request("slow-stall"))
    elapsed = time.monotonic() - started
    assert reply.outcome.dropped == []
    assert reply.outcome.error is not None and "deadline" in reply.outcome.error
    assert elapsed < 3.0


def test_slow_headers_are_waited_for(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("latency", Chat(deltas=["ok"], headers_delay_s=0.3, gap_s=0.05))
    reply = post_stream(gateway.url, LLM, llm_request("latency"))
    assert_clean(reply.outcome.error, reply.outcome.dropped)
    assert reply.text == "ok"


@pytest.mark.parametrize("stream", [True, False])
def test_completion_mode_uses_the_completions_api(gateway: GatewayServer, fake: FakeUpstream, stream: bool) -> None:
    fake.script("instruct", Completion(deltas=["Once", " upon"], content_text="Once upon"))
    reply = post_stream(gateway.url, LLM, llm_request("instruct", stream=stream, mode="completion"))
    assert_clean(reply.outcome.error, reply.outcome.dropped)
    assert reply.text == "Once upon"
    assert len(reply.usages) == 1
    request = fake.requests[-1]
    assert request.path == "/v1/completions"
    assert request.json["prompt"] == "You are terse.\nHello?"


def test_upstream_error_messages_never_carry_the_key(gateway: GatewayServer, fake: FakeUpstream) -> None:
    body = {"error": {"message": f"Incorrect API key provided: {SECRET}", "type": "invalid_request_error"}}
    fake.script("leaky", HttpError(401, body=body))
    reply = post_stream(gateway.url, LLM, llm_request("leaky"))
    assert SECRET not in reply.body.decode()
    assert "Incorrect API key provided: ***" in reply.body.decode()


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_structured_output_stream_native(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("gpt-4o-mini", Chat(deltas=['{"a":', "1}"], usage=(40, 5)))
    body = llm_request("gpt-4o-mini", type="llm_structured_output", structured_output_schema=SCHEMA)
    reply = post_stream(gateway.url, STRUCTURED, body, kind="llm_structured_output")
    assert_clean(reply.outcome.error, reply.outcome.dropped)
    chunks = reply.outcome.chunks
    assert [c["structured_output"] for c in chunks] == [None, None, None, {"a": 1}]
    assert [c["delta"]["message"]["content"] for c in chunks] == ['{"a":', "1}", "", ""]
    assert chunks[-1]["delta"]["finish_reason"] is None and chunks[-1]["delta"]["index"] == 0
    assert len(reply.usages) == 1
    sent = fake.requests[-1].json
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "llm_response", "schema": SCHEMA}}


def test_structured_output_prompt_mode_non_stream(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("prompted-x", Chat(content_text='```json\n{"a": 2}\n```'))
    body = llm_request("prompted-x", stream=False, structured_output_schema=SCHEMA)
    reply = post_stream(gateway.url, STRUCTURED, body, kind="llm_structured_output")
    assert_clean(reply.outcome.error, reply.outcome.dropped)
    (chunk,) = reply.outcome.chunks
    assert chunk["structured_output"] == {"a": 2}
    assert chunk["delta"]["finish_reason"] == ""
    assert chunk["delta"]["usage"] is not None
    sent = fake.requests[-1].json
    assert "response_format" not in sent
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"].startswith("You are terse.")
    assert '"required":["a"]' in sent["messages"][0]["content"]


def test_structured_output_that_is_not_an_object_is_an_error(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("prompted-bad", Chat(deltas=["[1, ", "2]"]))
    body = llm_request("prompted-bad", structured_output_schema=SCHEMA)
    reply = post_stream(gateway.url, STRUCTURED, body, kind="llm_structured_output")
    assert reply.outcome.dropped == []
    assert reply.outcome.error is not None and "not a JSON object" in reply.outcome.error
    assert reply.text == "[1, 2]"


def test_no_route_is_a_clear_pre_stream_error(gateway: GatewayServer) -> None:
    reply = post_stream(gateway.url, LLM, llm_request("claude", provider="anthropic"))
    assert reply.status == 404
    assert "no route for llm provider 'anthropic' model 'claude'" in orjson.loads(reply.body)["error"]


@pytest.mark.parametrize(
    ("headers", "content", "status", "message"),
    [
        ({"X-Inner-Api-Key": "wrong"}, b"{}", 401, "unauthorized"),
        ({}, b"{}", 401, "unauthorized"),
        ({"X-Inner-Api-Key": TEST_KEY}, b"{not json", 400, "invalid JSON body"),
        ({"X-Inner-Api-Key": TEST_KEY}, b"[1]", 400, "expected a JSON object"),
        ({"X-Inner-Api-Key": TEST_KEY}, b"", 400, "body is empty"),
        ({"X-Inner-Api-Key": TEST_KEY}, orjson.dumps(llm_request(tenant_id="")), 400, "tenant_id"),
        ({"X-Inner-Api-Key": TEST_KEY}, orjson.dumps(llm_request(mode="chatty")), 400, "mode"),
        ({"X-Inner-Api-Key": TEST_KEY}, orjson.dumps({**llm_request(), "model": None}), 400, "model"),
    ],
)
def test_bad_requests_get_envelope_errors(
    gateway: GatewayServer, headers: dict[str, str], content: bytes, status: int, message: str
) -> None:
    response = httpx.post(f"{gateway.url}{LLM}", content=content, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["data"] is None and message in body["error"]


def test_unknown_paths_and_methods(gateway: GatewayServer) -> None:
    headers = {"X-Inner-Api-Key": TEST_KEY}
    unknown = httpx.post(f"{gateway.url}/inner/api/invoke/nope", json={}, headers=headers)
    assert unknown.status_code == 404 and "does not serve" in unknown.json()["error"]
    get = httpx.get(f"{gateway.url}{LLM}", headers=headers)
    assert get.status_code == 405
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/readyz").json()["status"] == "ready"


def test_path_prefix_before_inner_api_is_accepted(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("prefixed", Chat(deltas=["ok"]))
    reply = post_stream(gateway.url, "/dify/inner/api/invoke/llm", llm_request("prefixed"))
    assert_clean(reply.outcome.error, reply.outcome.dropped)
    assert reply.text == "ok"


def test_body_size_limit(fake: FakeUpstream) -> None:
    config = gateway_config([], server={"max_body_bytes": 2048})
    with GatewayServer(config) as server:
        big = llm_request(prompt_messages=[{"role": "user", "content": "x" * 5000}])
        response = httpx.post(f"{server.url}{LLM}", json=big, headers={"X-Inner-Api-Key": TEST_KEY})
        assert response.status_code == 413
        assert "too large" in response.json()["error"]
