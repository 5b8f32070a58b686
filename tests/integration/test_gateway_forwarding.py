"""The running gateway beside a (fake) Dify: what it answers itself and what it forwards."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.fakes.dify import FakeDify, Frames, Json, dify_fixtures, frames
from tests.fakes.upstream import Chat, FakeUpstream
from tests.support.client import llm_request, post_stream
from tests.support.server import TEST_KEY, GatewayServer, gateway_config

TOOL = "/inner/api/invoke/tool"
LLM = "/inner/api/invoke/llm"

dify_server, dify = dify_fixtures()


def config(upstream: FakeUpstream, dify: FakeDify | None, **settings: Any) -> dict[str, Any]:
    routes = [
        {
            "match": {"type": "llm", "provider": "openai", "model": "gpt-4o-mini"},
            "targets": [{"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-x"}],
        }
    ]
    dify_settings: dict[str, Any] = {"inner_api_key": TEST_KEY, **settings}
    if dify is not None:
        dify_settings["api_url"] = dify.url
    return gateway_config(routes, dify=dify_settings)


def test_a_tool_stream_is_forwarded_frame_by_frame(upstream: FakeUpstream, dify: FakeDify) -> None:
    chunks = frames({"type": "text", "message": {"text": "one"}}, {"type": "text", "message": {"text": "two"}})
    dify.script(TOOL, Frames(chunks, gap_s=0.3))
    with GatewayServer(config(upstream, dify)) as gateway:
        started = time.monotonic()
        arrivals: list[float] = []
        body = b""
        with httpx.stream(
            "POST", gateway.url + TOOL, json={"tenant_id": "t"}, headers={"X-Inner-Api-Key": TEST_KEY}, timeout=10
        ) as reply:
            for piece in reply.iter_raw():
                arrivals.append(time.monotonic() - started)
                body += piece
    assert body == b"".join(chunks)
    assert arrivals[-1] - arrivals[0] > 0.2  # the first frame did not wait for the second
    assert dify.last(TOOL).headers["x-inner-api-key"] == TEST_KEY


def test_an_unrouted_model_call_passes_through_and_a_routed_one_does_not(
    upstream: FakeUpstream, fake: FakeUpstream, dify: FakeDify
) -> None:
    dify.script(LLM, Frames(frames({"model": "from-dify"})))
    fake.script("gpt-4o-mini", Chat(deltas=["from the gateway"]))
    with GatewayServer(config(upstream, dify, api_key="dify-side-key")) as gateway:
        routed = post_stream(gateway.url, LLM, llm_request("gpt-4o-mini"))
        unrouted = httpx.post(
            gateway.url + LLM, json=llm_request("claude-x"), headers={"X-Inner-Api-Key": TEST_KEY}, timeout=10
        )
    assert routed.text == "from the gateway"
    assert unrouted.status_code == 200 and unrouted.content == b"".join(frames({"model": "from-dify"}))
    [forwarded] = dify.requests
    assert forwarded.json["model"] == "claude-x"
    assert forwarded.headers["x-inner-api-key"] == "dify-side-key"  # replaced by the configured key


def test_passthrough_off_keeps_the_no_route_error(upstream: FakeUpstream, dify: FakeDify) -> None:
    with GatewayServer(config(upstream, dify, passthrough=False)) as gateway:
        reply = post_stream(gateway.url, LLM, llm_request("claude-x"))
        dify.script(TOOL, Json({"data": {"ok": True}, "error": ""}))
        tool = httpx.post(gateway.url + TOOL, json={}, headers={"X-Inner-Api-Key": TEST_KEY}, timeout=10)
    assert reply.status == 404 and reply.outcome.error is not None and "no route" in reply.outcome.error
    assert tool.json() == {"data": {"ok": True}, "error": ""}  # other paths still go to Dify
    assert [r.path for r in dify.requests] == [TOOL]


def test_the_gateway_key_is_checked_before_anything_is_forwarded(upstream: FakeUpstream, dify: FakeDify) -> None:
    with GatewayServer(config(upstream, dify)) as gateway:
        reply = httpx.post(gateway.url + TOOL, json={}, headers={"X-Inner-Api-Key": "wrong"}, timeout=10)
    assert reply.status_code == 401 and dify.requests == []


def test_without_dify_other_paths_are_a_clear_404(upstream: FakeUpstream) -> None:
    with GatewayServer(config(upstream, None)) as gateway:
        reply = httpx.post(gateway.url + TOOL, json={}, headers={"X-Inner-Api-Key": TEST_KEY}, timeout=10)
    assert reply.status_code == 404 and "dify.api_url" in reply.json()["error"]
