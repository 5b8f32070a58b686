"""Validation of the daemon's request bodies (``gateway/protocol/requests.py``): what is
refused with a 400 in the protocol's shape, and the daemon's own values that must pass."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.errors import BadRequest
from gateway.http import parse_model
from gateway.protocol.requests import (
    LLMInvokeRequest,
    MultimodalRerankInvokeRequest,
    RerankInvokeRequest,
    StructuredOutputInvokeRequest,
)
from tests.support.client import invoke_body, llm_request
from tests.support.server import TEST_KEY, GatewayServer, gateway_config


def rerank(**fields: Any) -> dict[str, Any]:
    body = invoke_body("rerank", "rr", query="q", docs=["a", "b"], score_threshold=0, top_n=0)
    body.update(fields)
    return body


def multimodal_rerank(**fields: Any) -> dict[str, Any]:
    doc = {"content": "a", "content_type": "text"}
    body = invoke_body("multimodal_rerank", "rr", query=doc, docs=[doc], score_threshold=0, top_n=0)
    body.update(fields)
    return body


@pytest.mark.parametrize("model", [RerankInvokeRequest, MultimodalRerankInvokeRequest])
@pytest.mark.parametrize(
    ("fields", "top_n", "threshold"),
    [
        ({}, 0, 0.0),  # what the daemon sends when the plugin set neither
        ({"top_n": None, "score_threshold": None}, None, None),  # what the SDK sends, and Dify's default
        ({"top_n": 3, "score_threshold": 0.5}, 3, 0.5),
        ({"score_threshold": -2.5}, 0, -2.5),  # raw logits can be negative
        ({"score_threshold": 1}, 0, 1.0),  # Go writes a whole float64 without a point
    ],
)
def test_the_daemons_rerank_limits_pass(
    model: type[RerankInvokeRequest | MultimodalRerankInvokeRequest],
    fields: dict[str, Any],
    top_n: int | None,
    threshold: float | None,
) -> None:
    body = (rerank if model is RerankInvokeRequest else multimodal_rerank)(**fields)
    parsed = parse_model(model, body)
    assert (parsed.top_n, parsed.score_threshold) == (top_n, threshold)


def test_absent_rerank_limits_mean_unset() -> None:
    body = rerank()
    del body["top_n"], body["score_threshold"]
    parsed = parse_model(RerankInvokeRequest, body)
    assert (parsed.top_n, parsed.score_threshold) == (0, 0.0)


@pytest.mark.parametrize("model", [RerankInvokeRequest, MultimodalRerankInvokeRequest])
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"top_n": -1}, "top_n: Input should be greater than or equal to 0"),
        ({"top_n": True}, "top_n: Input should be a valid integer"),
        ({"top_n": False}, "top_n: Input should be a valid integer"),
        ({"top_n": "3"}, "top_n: Input should be a valid integer"),
        ({"top_n": 2.5}, "top_n: Input should be a valid integer"),
        ({"score_threshold": True}, "score_threshold: Input should be a valid number"),
        ({"score_threshold": "0.5"}, "score_threshold: Input should be a valid number"),
        ({"score_threshold": float("inf")}, "score_threshold: Input should be a finite number"),
    ],
)
def test_bad_rerank_limits_are_a_400(
    model: type[RerankInvokeRequest | MultimodalRerankInvokeRequest], fields: dict[str, Any], message: str
) -> None:
    body = (rerank if model is RerankInvokeRequest else multimodal_rerank)(**fields)
    with pytest.raises(BadRequest) as caught:
        parse_model(model, body)
    assert caught.value.status == 400
    assert caught.value.message == "invalid payload: " + message


@pytest.mark.parametrize("model", [LLMInvokeRequest, StructuredOutputInvokeRequest])
@pytest.mark.parametrize("stream", [1, 0, "true", "yes"])
def test_stream_must_be_a_boolean(model: type[LLMInvokeRequest], stream: object) -> None:
    body = llm_request(stream=True, structured_output_schema={"type": "object"})
    body["stream"] = stream
    with pytest.raises(BadRequest, match="stream: Input should be a valid boolean"):
        parse_model(model, body)
    body["stream"] = False
    assert parse_model(model, body).stream is False


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayServer]:
    with GatewayServer(gateway_config([])) as server:
        yield server


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("rerank", rerank(top_n=True)),
        ("rerank", rerank(top_n=-3)),
        ("rerank", rerank(score_threshold=True)),
        ("multimodal-rerank", multimodal_rerank(top_n=True)),
    ],
)
def test_the_gateway_answers_a_bad_limit_with_a_400_envelope(
    gateway: GatewayServer, path: str, body: dict[str, Any]
) -> None:
    reply = httpx.post(
        f"{gateway.url}/inner/api/invoke/{path}", json=body, headers={"X-Inner-Api-Key": TEST_KEY}, timeout=10
    )
    assert reply.status_code == 400
    envelope = reply.json()
    assert envelope["data"] is None and envelope["error"].startswith("invalid payload: ")
    assert ("top_n" in envelope["error"]) or ("score_threshold" in envelope["error"])
