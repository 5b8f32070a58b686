"""The serverless transaction endpoint's pieces: the SDK's request as captured in vectors
17/18, the event lines, the daemon's re-emitted result shapes, tenant mapping, refusals.

Requests go through ``httpx.ASGITransport`` to a ``ServerlessEndpoint`` over a gateway with
no routes (nothing here reaches a backend; ``tests/integration/test_serverless.py`` does).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncGenerator
from typing import Any, cast

import httpx
import orjson
import pytest
from pydantic import ValidationError

from gateway.adapters.base import TokenUsage
from gateway.app import Gateway, create_app
from gateway.config import ServerlessConfig, parse_config
from gateway.endpoints import BY_INVOKE_TYPE
from gateway.errors import BadRequest, Forbidden
from gateway.invoke.llm_reply import ChunkBuilder, llm_usage
from gateway.protocol import plugin_view
from gateway.protocol.envelope import data_frame
from gateway.protocol.framing import decode_frames
from gateway.protocol.requests import (
    LLMInvokeRequest,
    MultimodalEmbeddingInvokeRequest,
    MultimodalRerankInvokeRequest,
    TextEmbeddingInvokeRequest,
)
from gateway.protocol.results import LLMUsageDict, ToolCallDict
from gateway.serverless.endpoint import ServerlessEndpoint, build_invocation
from gateway.serverless.wire import TRANSACTION_PATH, EventWriter, encode_line, parse_transaction, request_ids
from tests.support import daemon
from tests.support.vectors import load_vector

KEY = "serverless-key-123"


def raw_request(prefix: str) -> bytes:
    return str(load_vector(prefix)["request_raw"]).encode()


def make_gateway(**extra: Any) -> Gateway:
    return create_app(parse_config({"dify": {"inner_api_key": "inner-key"}, "routes": [], **extra}, "<test>", env={}))


def make_endpoint(gateway: Gateway | None = None, **config: Any) -> ServerlessEndpoint:
    settings: dict[str, Any] = {"enabled": True, "default_tenant": "tenant-default", **config}
    return ServerlessEndpoint((gateway or make_gateway()).services, ServerlessConfig.model_validate(settings))


async def post(
    endpoint: ServerlessEndpoint,
    body: bytes,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> httpx.Response:
    transport = httpx.ASGITransport(app=endpoint)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        sent = {"Dify-Plugin-Session-ID": "sess-123", **(headers or {})}
        return await client.request(method, TRANSACTION_PATH, content=body, headers=sent)


def events(body: bytes) -> list[dict[str, Any]]:
    """The lines the SDK parses (httpx iter_lines semantics: str.splitlines, blanks skipped)."""
    return [json.loads(line) for line in body.decode().splitlines() if line]


def inner(body: bytes) -> list[dict[str, Any]]:
    return [e["data"] for e in events(body)]


def transaction(invoke_type: str, request: dict[str, Any], session_id: str = "sess-123") -> bytes:
    body = {
        "event": "session",
        "session_id": session_id,
        "data": {"type": "invoke", "data": {"type": invoke_type, "backwards_request_id": "rid-1", "request": request}},
    }
    return json.dumps(body).encode() + b"\n\n"


# --- the SDK's request ---------------------------------------------------------------


def test_vector_17_request_bytes_parse_into_an_llm_invocation() -> None:
    raw = raw_request("17")
    assert raw.endswith(b"}\n\n")
    tx = parse_transaction(orjson.loads(raw))
    assert (tx.session_id, tx.invoke_type, tx.backwards_request_id) == (
        "sess-123",
        "llm",
        "adebf6b11094454ca014c005621d144a",
    )
    invocation = build_invocation(BY_INVOKE_TYPE["llm"], tx.request, "tenant-7")
    assert isinstance(invocation, LLMInvokeRequest) and type(invocation) is LLMInvokeRequest
    assert (invocation.tenant_id, invocation.user_id) == ("tenant-7", "")
    assert (invocation.provider, invocation.model, invocation.mode) == (
        "langgenius/openai/openai",
        "gpt-4o-mini",
        "chat",
    )
    assert invocation.completion_params == {"temperature": 0.7, "max_tokens": 256}
    assert invocation.tools == [] and invocation.stop == [] and invocation.stream is False
    system, user = invocation.prompt_messages
    assert (system.role, system.content, system.name) == ("system", "You are terse.", None)
    assert isinstance(user.content, list)
    text, image = user.content
    assert (text.type, text.data) == ("text", "What is in this picture?")
    assert (image.type, image.base64_data, image.mime_type, image.detail) == (
        "image",
        "iVBORw0KGgo=",
        "image/png",
        "low",
    )


def test_vector_18_request_bytes_parse_into_a_text_embedding_invocation() -> None:
    tx = parse_transaction(orjson.loads(raw_request("18")))
    assert (tx.invoke_type, tx.backwards_request_id) == ("text_embedding", "7cf59060ae4e49129e1529645f72e028")
    invocation = build_invocation(BY_INVOKE_TYPE["text_embedding"], tx.request, "t")
    assert isinstance(invocation, TextEmbeddingInvokeRequest)
    assert (invocation.model, invocation.texts, invocation.input_type) == (
        "text-embedding-3-small",
        ["hello world"],
        "query",
    )


def test_invoke_kinds_are_the_sdk_model_invoke_types() -> None:
    # dify_plugin.core.entities.invocation.InvokeType (0.10.2), the model ones.
    assert set(BY_INVOKE_TYPE) == {
        "llm",
        "llm_structured_output",
        "text_embedding",
        "multimodal_embedding",
        "rerank",
        "multimodal_rerank",
        "tts",
        "speech2text",
        "moderation",
        "system_summary",
    }
    assert {name for name, e in BY_INVOKE_TYPE.items() if e.reply == "stream"} == {
        "llm",
        "llm_structured_output",
        "tts",
    }


def test_the_plugins_tenant_id_is_replaced_and_null_rerank_limits_become_zero() -> None:
    sdk_payload = {
        "provider": "jina",
        "model": "jina-embeddings-v4",
        "model_type": "text-embedding",
        "tenant_id": "chosen-by-the-plugin",
        "documents": [{"content": "a cat", "content_type": "text"}],
        "input_type": "document",
    }
    embedding = build_invocation(BY_INVOKE_TYPE["multimodal_embedding"], sdk_payload, "mapped")
    assert isinstance(embedding, MultimodalEmbeddingInvokeRequest) and embedding.tenant_id == "mapped"
    rerank_payload = {
        "provider": "jina",
        "model": "m",
        "model_type": "rerank",
        "score_threshold": None,
        "top_n": None,
        "query": {"content": "q", "content_type": "text"},
        "docs": [{"content": "d", "content_type": "text"}],
    }
    rerank = build_invocation(BY_INVOKE_TYPE["multimodal_rerank"], rerank_payload, "t")
    assert isinstance(rerank, MultimodalRerankInvokeRequest)
    assert (rerank.score_threshold, rerank.top_n) == (0, 0)


def test_invalid_payloads_are_bad_requests() -> None:
    with pytest.raises(BadRequest, match="mode"):
        build_invocation(BY_INVOKE_TYPE["llm"], {"provider": "openai", "model": "m"}, "t")
    with pytest.raises(BadRequest, match="event"):
        parse_transaction({"event": "request", "session_id": "s", "data": {}})
    with pytest.raises(BadRequest, match="backwards_request_id"):
        parse_transaction(
            {"event": "session", "session_id": "s", "data": {"type": "invoke", "data": {"type": "llm", "request": {}}}}
        )


def test_an_empty_session_id_is_allowed() -> None:
    body = orjson.loads(raw_request("18"))
    assert parse_transaction({**body, "session_id": ""}).session_id == ""
    assert ServerlessConfig(enabled=True, default_tenant="d").tenant_for("") == "d"


def test_request_ids_are_found_in_broken_bodies() -> None:
    assert request_ids({"session_id": "s", "data": {"data": {"backwards_request_id": "r"}}}, "h") == ("s", "r")
    assert request_ids({"data": "nonsense"}, "from-header") == ("from-header", "")
    assert request_ids([1, 2], "") == ("", "")


# --- events --------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["17", "18"])
def test_events_encode_to_the_vectors_bytes(prefix: str) -> None:
    example = load_vector(prefix)["response_example"]
    first = example["lines"][0]["data"]
    writer = EventWriter(example["lines"][0]["session_id"], first["backwards_request_id"])
    encoded = writer.response(first["message"], first["data"]) + writer.end()
    assert encoded == example["raw"].encode()
    assert [json.loads(line) for line in encoded.decode().splitlines() if line] == example["lines"]


def test_error_event_shape() -> None:
    line = EventWriter("s", "r").error("boom")
    assert line.endswith(b"}\n\n") and line.count(b"\n") == 2
    assert json.loads(line)["data"] == {"backwards_request_id": "r", "event": "error", "message": "boom", "data": None}


def test_lines_never_contain_characters_the_sdk_splits_on() -> None:
    text = "a\u2028b\u2029c\x85d\x0be\x1cf\rg\nh"
    line = encode_line({"content": text, "ok": "é"})
    decoded = line.decode()
    assert decoded.splitlines() == [decoded.removesuffix("\n\n"), ""]  # one line, then the blank line
    assert json.loads(line) == {"content": text, "ok": "é"}


def test_numpy_vectors_are_encoded_as_arrays() -> None:
    np = pytest.importorskip("numpy")
    result = plugin_view.embedding_result(
        {
            "model": "m",
            "embeddings": [np.array([0.5, 0.25], dtype=np.float32)],
            "usage": {
                "tokens": 1,
                "total_tokens": 1,
                "unit_price": "0",
                "price_unit": "0.000001",
                "total_price": "0",
                "currency": "USD",
                "latency": 0.1,
            },
        }
    )
    assert json.loads(EventWriter("s", "r").response("struct", result))["data"]["data"]["embeddings"] == [[0.5, 0.25]]


# --- results as the daemon re-emits them ----------------------------------------------


def gateway_llm_chunks(structured: bool) -> list[dict[str, Any]]:
    """Chunks exactly as the gateway's LLM service builds them and the HTTP edge frames them."""
    writer = ChunkBuilder("gpt-4o-mini", structured)
    usage = llm_usage(TokenUsage(812, 6), None, 0.5)
    calls: list[ToolCallDict] = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    frames = [data_frame(writer.chunk("It is")), data_frame(writer.chunk(" red.", calls, usage, "tool_calls"))]
    if structured:
        frames.append(data_frame(writer.structured_chunk({"a": 1})))
    return [orjson.loads(p)["data"] for p in decode_frames(b"".join(frames))]


@pytest.mark.parametrize("structured", [False, True])
def test_llm_chunks_match_the_daemons_re_emission(structured: bool) -> None:
    for chunk in gateway_llm_chunks(structured):
        view = plugin_view.llm_chunk(chunk, structured)
        expected = daemon.reemit_llm_chunk(chunk, structured_output=structured)
        assert json.dumps(view) == json.dumps(expected)  # key order included


def test_vector_17_chunk_from_the_gateways_shape() -> None:
    expected = load_vector("17")["response_example"]["lines"][0]["data"]["data"]
    writer = ChunkBuilder("gpt-4o-mini", False)
    usage = cast(LLMUsageDict, {**expected["delta"]["usage"], "prompt_price": "0.00012180"})  # zeros get trimmed
    (payload,) = decode_frames(data_frame(writer.chunk("It is a red square.", [], usage, "")))
    view = plugin_view.llm_chunk(orjson.loads(payload)["data"])
    assert json.dumps(view) == json.dumps(expected)


def test_unary_results_match_the_daemons_re_emission() -> None:
    usage = {
        "tokens": 4,
        "total_tokens": 4,
        "unit_price": "0.02",
        "price_unit": "0.000001",
        "total_price": "0.00000008",
        "currency": "USD",
        "latency": 0.112,
    }
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        (
            "text_embedding",
            {"model": "m", "embeddings": [[0.1, -0.2]], "usage": usage},
            plugin_view.embedding_result({"model": "m", "embeddings": [[0.1, -0.2]], "usage": usage}),
        ),
        (
            "rerank",
            {"model": "m", "docs": [{"index": 1, "text": "b", "score": 0.9}]},
            plugin_view.rerank_result({"model": "m", "docs": [{"index": 1, "text": "b", "score": 0.9}]}),
        ),
        ("speech2text", {"result": "hi"}, plugin_view.text_result({"result": "hi"})),
        ("moderation", {"result": True}, plugin_view.moderation_result({"result": True})),
        ("system_summary", {"summary": "s"}, plugin_view.summary_result({"summary": "s"})),
        (
            "tts",
            {"result": "00ff", "mime_type": "audio/mpeg"},
            plugin_view.tts_chunk({"result": "00ff", "mime_type": "audio/mpeg"}),
        ),
        ("tts", {"result": "00ff", "mime_type": ""}, plugin_view.tts_chunk({"result": "00ff", "mime_type": ""})),
    ]
    for kind, data, view in cases:
        assert json.dumps(view) == json.dumps(daemon.reemit(kind, data)), kind


def test_decimals_are_plain_strings() -> None:
    assert [plugin_view.decimal_text(v) for v in ("0.15", 1e-7, "0.000010", None, 2)] == [
        "0.15",
        "0.0000001",
        "0.00001",
        "0",
        "2",
    ]


# --- configuration and tenants ---------------------------------------------------------


def test_tenant_table_then_default() -> None:
    config = ServerlessConfig(enabled=True, default_tenant="d", tenants={"s1": "t1"})
    assert (config.tenant_for("s1"), config.tenant_for("other")) == ("t1", "d")
    assert ServerlessConfig(enabled=True, tenants={"s1": "t1"}).tenant_for("other") is None
    endpoint = make_endpoint(default_tenant=None, tenants={"s1": "t1"})
    assert endpoint.tenant_for("s1") == "t1"
    with pytest.raises(Forbidden, match="'other' has no tenant"):
        endpoint.tenant_for("other")


def test_config_validation() -> None:
    assert ServerlessConfig().enabled is False
    with pytest.raises(ValidationError, match="default_tenant or a tenants table"):
        ServerlessConfig(enabled=True)
    with pytest.raises(ValidationError):
        ServerlessConfig.model_validate({"enabled": True, "default_tenant": "t", "unknown": 1})
    with pytest.raises(ValidationError):
        ServerlessConfig(default_tenant="")
    with pytest.raises(ValidationError):
        ServerlessConfig(heartbeat_s=0)
    assert "serverless-key" not in repr(ServerlessConfig(api_key=KEY))  # type: ignore[arg-type]


# --- the endpoint ----------------------------------------------------------------------


def assert_error_then_end(body: bytes, message_part: str, request_id: str = "") -> str:
    lines = events(body)
    assert [line["event"] for line in lines] == ["backwards_response"] * 2
    error, end = (line["data"] for line in lines)
    assert error["event"] == "error" and message_part in error["message"], error
    assert end == {"backwards_request_id": request_id, "event": "end", "message": "", "data": None}
    assert error["backwards_request_id"] == request_id and error["data"] is None
    assert "Traceback" not in body.decode()
    return str(error["message"])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "status", "message_part"),
    [
        (b"", 400, "body is empty"),
        (b"{not json\n\n", 400, "invalid JSON"),
        (b"[1]\n\n", 400, "expected a JSON object"),
        (b'{"event":"session","session_id":"sess-123","data":{"type":"invoke"}}\n\n', 400, "data.data"),
    ],
)
async def test_malformed_requests_are_refused_with_events(body: bytes, status: int, message_part: str) -> None:
    reply = await post(make_endpoint(), body)
    assert reply.status_code == status
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert_error_then_end(reply.content, message_part)
    assert events(reply.content)[0]["session_id"] == "sess-123"  # from the header


@pytest.mark.asyncio
async def test_unknown_session_without_default_is_refused() -> None:
    endpoint = make_endpoint(default_tenant=None, tenants={"someone-else": "t"})
    reply = await post(endpoint, raw_request("18"))
    assert reply.status_code == 403
    assert_error_then_end(reply.content, "'sess-123' has no tenant", "7cf59060ae4e49129e1529645f72e028")


@pytest.mark.asyncio
async def test_method_and_disabled() -> None:
    reply = await post(make_endpoint(), b"", method="GET")
    assert reply.status_code == 405
    assert_error_then_end(reply.content, "only POST")
    disabled = ServerlessEndpoint(make_gateway().services, ServerlessConfig())
    reply = await post(disabled, raw_request("18"))
    assert reply.status_code == 404
    assert_error_then_end(reply.content, "not enabled")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("authorization", "accepted"),
    [
        (None, False),
        (basic("plugin", KEY), True),  # what httpx sends for http://plugin:KEY@host (the SDK's URL)
        (basic("", KEY), True),
        (basic("plugin", "wrong"), False),
        (basic(KEY, ""), False),
        ("Basic !!!not-base64", False),
        (f"Bearer {KEY}", True),
        (f"bearer {KEY}", True),
        ("Bearer wrong", False),
        (KEY, False),
    ],
)
async def test_api_key(authorization: str | None, accepted: bool) -> None:
    endpoint = make_endpoint(api_key=KEY)
    headers = {"Authorization": authorization} if authorization is not None else {}
    reply = await post(endpoint, raw_request("18"), headers)
    if accepted:
        assert reply.status_code == 200  # no route for the model: an error event after 200
        assert_error_then_end(reply.content, "no route", "7cf59060ae4e49129e1529645f72e028")
    else:
        assert reply.status_code == 401
        message = assert_error_then_end(reply.content, "unauthorized")
        assert KEY not in message


@pytest.mark.asyncio
async def test_the_sdk_sends_the_key_from_the_url_user_info() -> None:
    yarl = pytest.importorskip("yarl")
    url = yarl.URL(f"http://plugin:{KEY}@gw/prefix") / "backwards-invocation" / "transaction"  # as the SDK builds it
    transport = httpx.ASGITransport(app=make_endpoint(api_key=KEY))
    async with httpx.AsyncClient(transport=transport) as client:
        reply = await client.post(str(url), content=raw_request("18"))
    assert reply.status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("invoke_type", "request_body", "message"),
    [
        ("tool", {"provider": "x", "tool_name": "y"}, "the gateway does not serve 'tool' invocations"),
        ("llm", {"provider": "openai", "model": "m"}, "unmarshal backwards invoke request failed: invalid payload"),
        (
            "text_embedding",
            {"provider": "openai", "model": "m", "texts": ["a"], "input_type": "query"},
            "invoke text-embedding model failed: request failed: no route for text-embedding provider 'openai'",
        ),
        (
            "llm",
            {"provider": "openai", "model": "m", "mode": "chat", "prompt_messages": [], "stream": True},
            "invoke llm model failed: request failed: no route for llm",
        ),
        (
            "tts",
            {"provider": "openai", "model": "tts-1", "voice": "alloy", "content_text": "Hi"},
            "invoke tts model failed: request failed: no route for tts",
        ),
        (
            "system_summary",
            {"text": "x" * 2000, "instruction": ""},
            "invoke summary failed: request failed: no summary model configured",
        ),
    ],
)
async def test_invocation_failures_are_error_events_after_200(
    invoke_type: str, request_body: dict[str, Any], message: str
) -> None:
    reply = await post(make_endpoint(), transaction(invoke_type, request_body))
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "no-cache"
    assert_error_then_end(reply.content, message, "rid-1")


@pytest.mark.asyncio
async def test_tenant_from_the_table_reaches_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = make_gateway()
    seen: list[tuple[str, str | None]] = []

    async def moderate(request: Any) -> dict[str, Any]:
        seen.append((request.tenant_id, request.user_id))
        return {"result": True}

    monkeypatch.setattr(gateway.services.moderation, "moderate", moderate)
    endpoint = make_endpoint(gateway, tenants={"sess-123": "tenant-from-table"})
    request_body = {"provider": "openai", "model": "m", "model_type": "moderation", "text": "hi"}
    reply = await post(endpoint, transaction("moderation", request_body))
    assert seen == [("tenant-from-table", "")]
    assert inner(reply.content) == [
        {"backwards_request_id": "rid-1", "event": "response", "message": "struct", "data": {"result": True}},
        {"backwards_request_id": "rid-1", "event": "end", "message": "", "data": None},
    ]


@pytest.mark.asyncio
async def test_heartbeats_while_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = make_gateway()

    async def moderate(request: Any) -> dict[str, Any]:
        await asyncio.sleep(0.35)
        return {"result": False}

    monkeypatch.setattr(gateway.services.moderation, "moderate", moderate)
    endpoint = make_endpoint(gateway, heartbeat_s=0.05)
    reply = await post(endpoint, transaction("moderation", {"provider": "openai", "model": "m", "text": "hi"}))
    assert reply.content.startswith(b"\n\n\n\n")  # at least two heartbeats before the result
    assert [e["event"] for e in inner(reply.content)] == ["response", "end"]


@pytest.mark.asyncio
async def test_a_failing_producer_still_ends_the_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = make_endpoint()

    async def broken(*args: Any) -> AsyncGenerator[bytes, None]:
        raise RuntimeError("bug")
        yield b""  # pragma: no cover

    monkeypatch.setattr(endpoint, "_events", broken)
    reply = await post(endpoint, raw_request("18"))
    assert_error_then_end(reply.content, "internal gateway error", "7cf59060ae4e49129e1529645f72e028")
