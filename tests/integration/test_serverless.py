"""The serverless transaction endpoint on a real port, in front of the fake upstream.

Requests are sent the way dify-plugin 0.10.2 sends them (the captured bytes of vectors
17/18, no Content-Type) and replies are read the way it reads them (httpx ``iter_lines``,
blank lines skipped, every line a ``backwards_response`` event). Expected events come from
the vectors: the transaction vectors' reply lines, and the ``plugin_receives`` of the
inner-API vectors (what the SDK got through the daemon), sent here as SDK payloads.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.types import Receive, Scope, Send

from gateway.app import Gateway, create_app
from gateway.config import ServerlessConfig, parse_config
from gateway.serverless.endpoint import ServerlessEndpoint
from gateway.serverless.wire import TRANSACTION_PATH
from gateway.usage.schema import usage
from tests.fakes.upstream import (
    Chat,
    Embeddings,
    FakeUpstream,
    HttpError,
    Speech,
    ToolCallSpec,
    fake_audio,
    fake_embedding,
)
from tests.support.server import AppServer
from tests.support.vectors import load_vector

KEY = "plugin-key-42"
KEYED_PREFIX = "/keyed"


class TransactionApp:
    """The gateway with the serverless endpoint mounted (unkeyed, and keyed under /keyed)."""

    def __init__(self, gateway: Gateway, heartbeat_s: float) -> None:
        self.gateway = gateway
        settings = {"enabled": True, "default_tenant": "tenant-1", "tenants": {"sess-other": "tenant-2"}}
        self.open = ServerlessEndpoint(
            gateway.services, ServerlessConfig.model_validate({**settings, "heartbeat_s": heartbeat_s})
        )
        self.keyed = ServerlessEndpoint(gateway.services, ServerlessConfig.model_validate({**settings, "api_key": KEY}))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith(TRANSACTION_PATH):
            keyed = scope["path"].startswith(KEYED_PREFIX)
            await (self.keyed if keyed else self.open)(scope, receive, send)
        else:
            await self.gateway(scope, receive, send)


class Server(AppServer):
    def __init__(self, app: TransactionApp) -> None:
        self.app = app
        super().__init__(app)


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream) -> Iterator[Server]:
    def route(model_type: str) -> dict[str, Any]:
        target = {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-test"}
        return {"match": {"type": model_type, "provider": "openai"}, "targets": [target]}

    routes = [route("llm"), route("text-embedding"), route("tts")]
    gateway = create_app(parse_config({"dify": {"inner_api_key": "inner"}, "routes": routes}, "<test>", env={}))
    with Server(TransactionApp(gateway, heartbeat_s=0.1)) as running:
        yield running


class Reply:
    def __init__(self, status: int, content_type: str, body: bytes, lines: list[dict[str, Any]]) -> None:
        self.status, self.content_type, self.body, self.lines = status, content_type, body, lines

    @property
    def events(self) -> list[dict[str, Any]]:
        """The inner events, as BackwardsInvocationResponseEvent sees them."""
        return [line["data"] for line in self.lines]


def send(
    server: Server, body: bytes, session_id: str = "sess-123", path: str = TRANSACTION_PATH, base: str | None = None
) -> Reply:
    """POST like the SDK (httpx, content bytes, only the session header), read like the SDK."""
    with (
        httpx.Client() as client,
        client.stream(
            "POST",
            (base or server.url) + path,
            headers={"Dify-Plugin-Session-ID": session_id},
            content=body,
            timeout=30,
        ) as response,
    ):
        raw = b""
        lines: list[dict[str, Any]] = []
        for line in response.iter_lines():
            raw += line.encode() + b"\n"
            if line:
                data = json.loads(line)
                assert data["event"] == "backwards_response" and isinstance(data["session_id"], str)
                assert set(data["data"]) == {"backwards_request_id", "event", "message", "data"}
                lines.append(data)
        return Reply(response.status_code, response.headers["content-type"], raw, lines)


def sdk_transaction(invoke_type: str, payload: dict[str, Any], request_id: str = "0123abcd") -> bytes:
    body = {
        "event": "session",
        "session_id": "sess-123",
        "data": {
            "type": "invoke",
            "data": {"type": invoke_type, "backwards_request_id": request_id, "request": payload},
        },
    }
    return json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def sdk_payload(inner_request: dict[str, Any], model_type: str) -> dict[str, Any]:
    """An inner-API vector request as the SDK would have sent it (no tenant/user/type, model_type)."""
    payload = {k: v for k, v in inner_request.items() if k not in ("tenant_id", "user_id", "type")}
    return {"provider": payload.pop("provider"), "model": payload.pop("model"), "model_type": model_type, **payload}


def without_latency(event: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(event)
    data = event.get("data") or {}
    usage = (data.get("delta") or {}).get("usage") or data.get("usage")
    if usage is not None:
        assert isinstance(usage.pop("latency"), float)
    return event


def ordered(value: Any) -> str:
    return json.dumps(value)  # key order matters: compare as text


# --- the transaction vectors ------------------------------------------------------------


def test_17_llm_non_stream_as_captured(server: Server, fake: FakeUpstream) -> None:
    vector = load_vector("17")
    fake.script("gpt-4o-mini", Chat(content_text="It is a red square.", usage=(812, 6)))
    with httpx.Client() as client:  # the captured bytes and headers exactly; no Content-Type
        response = client.post(
            server.url + vector["path"], content=vector["request_raw"].encode(), headers=vector["headers"], timeout=30
        )
    assert "content-type" not in {k.lower() for k in vector["headers"]}
    example = vector["response_example"]
    assert response.status_code == example["http_status"] == 200
    assert response.headers["content-type"].startswith(example["content_type"])
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    assert [ordered(without_latency(line["data"])) for line in lines] == [
        ordered(without_latency(line["data"])) for line in example["lines"]
    ]
    assert [ordered({**line, "data": None}) for line in lines] == [
        ordered({**line, "data": None}) for line in example["lines"]
    ]
    assert response.content.endswith(b"}\n\n") and b"\n\n\n" not in response.content.strip(b"\n")
    sent = fake.requests[-1].json
    assert sent["max_tokens"] == 256 and sent["temperature"] == 0.7 and not sent.get("stream")
    assert sent["messages"][1]["content"][1]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo="


def test_18_text_embedding_as_captured(server: Server, fake: FakeUpstream) -> None:
    vector = load_vector("18")
    fake.script("text-embedding-3-small", Embeddings(dims=3, usage_tokens=4))
    reply = send(server, vector["request_raw"].encode())
    expected = vector["response_example"]["lines"]
    assert reply.status == 200
    assert [line["session_id"] for line in reply.lines] == ["sess-123", "sess-123"]
    result, end = reply.events
    assert ordered(end) == ordered(expected[1]["data"])
    want = copy.deepcopy(expected[0]["data"])
    want["data"]["embeddings"] = [fake_embedding("hello world", 3)]  # the fake's vector, not the vector's
    assert ordered(without_latency(result)) == ordered(without_latency(want))
    assert fake.requests[-1].json["input"] == ["hello world"]


# --- the inner-API vectors' plugin_receives, through the transaction ----------------------


def expected_events(vector: dict[str, Any], request_id: str) -> list[dict[str, Any]]:
    return [{"backwards_request_id": request_id, **event} for event in vector["plugin_receives"]]


def test_01_llm_stream_matches_what_the_sdk_got_through_the_daemon(server: Server, fake: FakeUpstream) -> None:
    vector = load_vector("01")
    fake.script("gpt-4o-mini", Chat(deltas=["The picture", " shows a red square."], usage=(812, 7)))
    reply = send(server, sdk_transaction("llm", sdk_payload(vector["request"], "llm"), "r1"))
    assert reply.status == 200
    got = [ordered(without_latency(e)) for e in reply.events]
    assert got == [ordered(without_latency(e)) for e in expected_events(vector, "r1")]


def test_06_structured_output_stream(server: Server, fake: FakeUpstream) -> None:
    vector = load_vector("06")
    fake.script("gpt-4o-mini", Chat(deltas=['{"a":', "1}"], usage=(40, 5)))
    reply = send(server, sdk_transaction("llm_structured_output", sdk_payload(vector["request"], "llm"), "r6"))
    expected = expected_events(vector, "r6")
    assert [e["event"] for e in reply.events][-1] == "end" and reply.events[-1] == expected[-1]
    chunks = [e["data"] for e in reply.events if e["event"] == "response"]
    assert {e["message"] for e in reply.events if e["event"] == "response"} == {"stream"}
    # Text frames, then the structured_output frame; the gateway puts usage on a frame of
    # its own before that (the vector's Dify put it on the last text frame).
    assert "".join(c["delta"]["message"]["content"] for c in chunks) == '{"a":1}'
    assert ordered(chunks[-1]) == ordered(expected[-2]["data"])
    assert [without_latency({"data": c})["data"]["delta"]["usage"] for c in chunks if c["delta"]["usage"]] == [
        without_latency(expected[1])["data"]["delta"]["usage"]
    ]
    assert all(c["structured_output"] is None for c in chunks[:-1])


def test_tool_call_stream(server: Server, fake: FakeUpstream) -> None:
    vector = load_vector("03")
    call = ToolCallSpec("get_weather", '{"city":"Rome"}', id="call_9")
    fake.script("gpt-4o-mini", Chat(deltas=[], tool_calls=[call], tool_call_split=4, usage=(55, 17)))
    reply = send(server, sdk_transaction("llm", sdk_payload(vector["request"], "llm"), "r3"))
    assert [ordered(without_latency(e)) for e in reply.events] == [
        ordered(without_latency(e)) for e in expected_events(vector, "r3")
    ]


def test_tts_stream(server: Server, fake: FakeUpstream) -> None:
    vector = load_vector("12")
    fake.script("tts-1", Speech(size=6))
    reply = send(server, sdk_transaction("tts", sdk_payload(vector["request"], "tts"), "rt"))
    assert reply.events == [
        {"backwards_request_id": "rt", "event": "response", "message": "stream",
         "data": {"result": fake_audio(6).hex(), "mime_type": "audio/mpeg"}},
        {"backwards_request_id": "rt", "event": "end", "message": "", "data": None},
    ]  # fmt: skip
    assert fake.requests[-1].json["input"] == "Hello" and fake.requests[-1].json["voice"] == "alloy"


def test_long_tts_comes_in_several_chunks_in_order(server: Server, fake: FakeUpstream) -> None:
    fake.script("tts-1", Speech(size=80_000))
    payload = {"provider": "openai", "model": "tts-1", "model_type": "tts", "voice": "alloy", "content_text": "Hi."}
    reply = send(server, sdk_transaction("tts", payload))
    chunks = [e for e in reply.events if e["event"] == "response"]
    assert len(chunks) == 3 and {e["message"] for e in chunks} == {"stream"}
    assert "".join(e["data"]["result"] for e in chunks) == fake_audio(80_000).hex()
    assert reply.events[-1]["event"] == "end"


# --- errors ----------------------------------------------------------------------------


def test_error_mid_stream_is_an_error_event_then_end(server: Server, fake: FakeUpstream) -> None:
    vector = load_vector("04")
    fake.script("gpt-4o-mini", Chat(deltas=["Partial", " and more"], reset_after=1))
    reply = send(server, sdk_transaction("llm", sdk_payload(vector["request"], "llm"), "r4"))
    assert reply.status == 200
    expected = expected_events(vector, "r4")
    assert [e["event"] for e in reply.events] == ["response", "error", "end"]
    assert ordered(reply.events[0]) == ordered(expected[0]) and reply.events[2] == expected[2]
    message = reply.events[1]["message"]
    assert message.startswith("read llm model failed: request failed: upstream") and "Traceback" not in message
    assert "sk-test" not in reply.body.decode()


def test_error_before_the_stream_is_an_error_event_then_end(server: Server, fake: FakeUpstream) -> None:
    fake.script("gpt-4o-mini", HttpError(429, "Rate limit reached"))
    reply = send(server, sdk_transaction("llm", sdk_payload(load_vector("01")["request"], "llm"), "r5"))
    assert reply.status == 200
    error, end = reply.events
    assert error["event"] == "error" and error["data"] is None and error["backwards_request_id"] == "r5"
    assert error["message"].startswith("invoke llm model failed: request failed: ")
    assert "Rate limit reached" in error["message"] and "gpt-4o-mini" in error["message"]
    assert end == {"backwards_request_id": "r5", "event": "end", "message": "", "data": None}


def test_unknown_model_is_an_error_event(server: Server, fake: FakeUpstream) -> None:
    payload = {**load_vector("18")["request"]["data"]["data"]["request"], "provider": "acme"}
    reply = send(server, sdk_transaction("text_embedding", payload))
    assert [e["event"] for e in reply.events] == ["error", "end"]
    assert reply.events[0]["message"].startswith("invoke text-embedding model failed: request failed: no route")
    assert fake.requests == []


def test_unknown_session_without_a_tenant_is_refused(server: Server, fake: FakeUpstream) -> None:
    body = load_vector("18")["request_raw"].encode()
    # The open endpoint has a default tenant; the keyed one too. Use a config without one.
    endpoint = ServerlessEndpoint(server.app.gateway.services, ServerlessConfig(enabled=True, tenants={"sess-x": "t"}))
    app = TransactionApp(server.app.gateway, 0.1)
    app.open = endpoint
    with Server(app) as other:
        reply = send(other, body)
    assert reply.status == 403
    assert [e["event"] for e in reply.events] == ["error", "end"]
    assert "'sess-123' has no tenant" in reply.events[0]["message"]
    assert fake.requests == []


# --- heartbeats, disconnects, keys --------------------------------------------------------


def test_heartbeats_keep_a_slow_reply_alive(server: Server, fake: FakeUpstream) -> None:
    fake.script("gpt-4o-mini", Chat(deltas=["slow"], headers_delay_s=0.45))
    reply = send(server, sdk_transaction("llm", sdk_payload(load_vector("01")["request"], "llm")))
    assert reply.body.startswith(b"\n\n\n")  # blank lines before the first event (one per 0.1 s)
    assert [e["event"] for e in reply.events] == ["response", "response", "end"]


def test_a_plugin_that_stops_reading_cancels_the_upstream_call(server: Server, fake: FakeUpstream) -> None:
    fake.script("gpt-4o-mini", Chat(deltas=[f"part {n} " for n in range(40)], gap_s=0.05))
    body = sdk_transaction("llm", sdk_payload(load_vector("01")["request"], "llm"))
    with (
        httpx.Client() as client,
        client.stream("POST", server.url + TRANSACTION_PATH, content=body, timeout=30) as response,
    ):
        for line in response.iter_lines():
            if line:
                assert json.loads(line)["data"]["event"] == "response"
                break
    fake.wait_until(lambda: fake.requests[-1].outcome == "disconnected", within=3.0)


def test_key_in_the_url_user_info_as_the_sdk_sends_it(server: Server, fake: FakeUpstream) -> None:
    fake.script("text-embedding-3-small", Embeddings(dims=3))
    body = load_vector("18")["request_raw"].encode()
    host = server.url.removeprefix("http://")
    accepted = send(server, body, path=KEYED_PREFIX + TRANSACTION_PATH, base=f"http://plugin:{KEY}@{host}")
    assert accepted.status == 200 and [e["event"] for e in accepted.events] == ["response", "end"]
    assert accepted.events[0]["data"]["embeddings"] == [fake_embedding("hello world", 3)]
    refused = send(server, body, path=KEYED_PREFIX + TRANSACTION_PATH)
    assert refused.status == 401 and [e["event"] for e in refused.events] == ["error", "end"]
    # At most the accepted call went upstream (the module's gateway may have the vector cached).
    assert fake.count("/v1/embeddings") <= 1


def test_serverless_invocations_are_recorded_and_held_to_the_tenants_budget(tmp_path: Path, fake: FakeUpstream) -> None:
    """Answered by the gateway, so on the usage ledger and under the tenant's budgets like
    an inner-API call: one row with the reply's tokens, then a refusal event once over."""
    database = f"sqlite:///{tmp_path / 'usage.db'}"
    target = {"model": "openai/{model}", "api_base": fake.base_url, "api_key": "sk-test"}
    config = {
        "dify": {"inner_api_key": "inner"},
        "routes": [{"match": {"type": "llm", "provider": "openai"}, "targets": [target]}],
        "ledger": {"database_url": database, "flush_interval_ms": 50},
        "budgets": {"default": [{"period": "day", "usd": "0.01"}]},
    }
    fake.script("gpt-4o-mini", Chat(deltas=["spent"], usage=(100_000, 50_000)))  # ~$0.045
    payload = sdk_payload(load_vector("01")["request"], "llm")
    gateway = create_app(parse_config(config, "<test>", env={}))
    with Server(TransactionApp(gateway, heartbeat_s=0.1)) as running:
        first = send(running, sdk_transaction("llm", payload, "paid-1"))
        refused = None
        for i in range(20):  # the charge lands in the background, within moments
            reply = send(running, sdk_transaction("llm", payload, f"after-{i}"))
            if reply.events[0]["event"] == "error":
                refused = reply
                break
        calls = fake.count("/v1/chat/completions")
    assert [e["event"] for e in first.events][-1] == "end" and first.events[0]["event"] == "response"
    assert refused is not None, "the tenant was never refused"
    assert "daily budget" in refused.events[0]["message"] and "$0.01" in refused.events[0]["message"]
    assert calls <= 1 + 19
    engine = sa.create_engine(database)
    try:
        with engine.connect() as connection:
            rows = [dict(r._mapping) for r in connection.execute(sa.select(usage))]
    finally:
        engine.dispose()
    paid = [r for r in rows if r["request_id"] == "paid-1"]
    assert len(paid) == 1
    assert (paid[0]["tenant_id"], paid[0]["model_type"], paid[0]["outcome"]) == ("tenant-1", "llm", "ok")
    assert (paid[0]["tokens_in"], paid[0]["tokens_out"]) == (100_000, 50_000) and paid[0]["price_usd"] > 0
    assert any(r["outcome"] == "budget_exceeded" for r in rows)
