"""Resilience across requests and model types: breakers, balancing, overload, fallbacks for
unary calls and TTS, the status endpoint and breakers shared through Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from gateway.adapters.litellm_loader import load_litellm_sync
from tests.fakes.upstream import Chat, Embeddings, FakeUpstream, Hang, HttpError, Speech
from tests.support.client import invoke_body, llm_request, post_stream, post_unary
from tests.support.redis import delete_prefix
from tests.support.server import TEST_KEY, GatewayServer, gateway_config

LLM = "/inner/api/invoke/llm"
FAST_RETRY = {"retry": {"backoff_initial_s": 0.01, "backoff_max_s": 0.02}}


def target(upstream: FakeUpstream, model: str = "openai/{model}", **extra: object) -> dict[str, object]:
    return {"model": model, "api_base": upstream.base_url, "api_key": "sk-test", **extra}


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayServer]:
    routes = [
        {
            "name": "pair",
            "match": {"type": "llm", "provider": "pair"},
            "targets": [target(upstream, "openai/a-{model}"), target(upstream, "openai/b-{model}")],
            "retries": 0,
        },
        {
            "name": "emb",
            "match": {"type": "text-embedding"},
            "targets": [target(upstream)],
            "fallbacks": [target(upstream, "openai/emb-backup")],
            "retries": 1,
        },
        {
            "name": "speech",
            "match": {"type": "tts"},
            "targets": [target(upstream)],
            "fallbacks": [target(upstream, "openai/tts-backup")],
            "retries": 0,
        },
        {"name": "llm", "match": {"type": "llm"}, "targets": [target(upstream)], "timeouts": {"ttft_s": 5}},
    ]
    config = gateway_config(
        routes,
        resilience={**FAST_RETRY, "breaker": {"failures": 2, "cooldown_s": 0.5}},
        server={"max_in_flight": 3},
    )
    load_litellm_sync()
    with GatewayServer(config) as server:
        yield server


def status(gateway: GatewayServer) -> dict[str, dict[str, object]]:
    reply = httpx.get(f"{gateway.url}/status/targets", headers={"X-Inner-Api-Key": TEST_KEY}, timeout=5)
    assert reply.status_code == 200
    return {row["target"]: row for row in reply.json()["targets"]}


def test_a_failing_target_is_cut_off_by_its_breaker_and_probed_after_the_cooldown(
    gateway: GatewayServer, fake: FakeUpstream
) -> None:
    fake.script("a-brk", HttpError(503))
    fake.script("b-brk", Chat())
    started = time.monotonic()
    for _ in range(12):
        reply = post_stream(gateway.url, LLM, llm_request("brk", provider="pair"))
        assert reply.outcome.error is None, reply.outcome.error  # the other target answers
    # Two failures opened a-brk's breaker: after that only one probe per cooldown (0.5 s)
    # reached it, and everything else went to b-brk.
    probes = int((time.monotonic() - started) / 0.5)
    assert 2 <= fake.count(model="a-brk") <= 2 + probes
    assert fake.count(model="b-brk") == 12
    # Open, or half-open once the cooldown has passed and no probe went out yet.
    assert status(gateway)["openai/a-brk@" + fake.base_url.rstrip("/")]["state"] in ("open", "half-open")
    time.sleep(0.6)
    fake.script("a-brk", Chat())  # recovered
    for _ in range(20):
        post_stream(gateway.url, LLM, llm_request("brk", provider="pair"))
    assert fake.count(model="a-brk") >= 3  # the probe went through and closed it
    assert status(gateway)["openai/a-brk@" + fake.base_url.rstrip("/")]["state"] == "closed"


def test_status_needs_the_key_and_shows_no_secrets(gateway: GatewayServer) -> None:
    assert httpx.get(f"{gateway.url}/status/targets", timeout=5).status_code == 401
    reply = httpx.get(f"{gateway.url}/status/targets", headers={"X-Inner-Api-Key": TEST_KEY}, timeout=5)
    assert b"sk-test" not in reply.content and TEST_KEY.encode() not in reply.content
    body = reply.json()
    assert set(body) == {"in_flight", "draining", "shared_breakers", "targets"}


def test_overload_is_a_fast_429_envelope(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("hang-overload", Hang())

    async def scenario() -> tuple[int, bytes, float]:
        async with httpx.AsyncClient(timeout=10) as client:
            headers = {"X-Inner-Api-Key": TEST_KEY}
            body = llm_request("hang-overload")
            hanging = [
                asyncio.create_task(client.post(f"{gateway.url}{LLM}", json=body, headers=headers)) for _ in range(3)
            ]
            await asyncio.to_thread(fake.wait_until, lambda: fake.count(model="hang-overload") == 3, 5)
            started = time.monotonic()
            refused = await client.post(f"{gateway.url}{LLM}", json=llm_request("other"), headers=headers)
            elapsed = time.monotonic() - started
            for task in hanging:
                task.cancel()
            await asyncio.gather(*hanging, return_exceptions=True)
            return refused.status_code, refused.content, elapsed

    code, body, elapsed = asyncio.run(scenario())
    assert code == 429
    envelope = orjson.loads(body)
    assert envelope["data"] is None and "overloaded" in envelope["error"]
    assert elapsed < 0.5
    fake.wait_until(lambda: gateway.app.in_flight == 0, 5)  # the cancelled callers were let go


def test_embeddings_fall_back_to_another_model_without_mixing_vectors(
    gateway: GatewayServer, fake: FakeUpstream
) -> None:
    fake.script("emb-main", Embeddings(fail=HttpError(500)))
    fake.script("emb-backup", Embeddings(dims=12))
    body = invoke_body("text-embedding", model="emb-main", texts=["one", "two", "three"])
    reply = post_unary(gateway.url, "text-embedding", body)
    assert reply.error is None, reply.error
    vectors = reply.data["embeddings"]
    assert len(vectors) == 3 and {len(v) for v in vectors} == {12}  # all from the backup
    assert fake.count(model="emb-main") == 2  # one retry on the main target
    assert fake.count(model="emb-backup") == 1


def test_tts_switches_target_only_before_the_first_audio(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("voice-main", HttpError(503))
    fake.script("tts-backup", Speech(size=5000))
    body = invoke_body("tts", model="voice-main", content_text="Hello there, how are you?", voice="alloy")
    reply = post_stream(gateway.url, "/inner/api/invoke/tts", body, kind="tts")
    assert reply.outcome.error is None, reply.outcome.error
    assert fake.count(model="voice-main") == 1  # one piece, one attempt, no retry (retries: 0)
    assert fake.count(model="tts-backup") >= 1


def test_shared_breakers_open_on_every_replica(upstream: FakeUpstream, fake: FakeUpstream, redis_url: str) -> None:
    prefix = f"test-brk-{uuid.uuid4().hex[:8]}:"
    routes = [{"match": {"type": "llm"}, "targets": [target(upstream)], "retries": 0}]
    config = gateway_config(
        routes,
        cache={"redis_url": redis_url, "key_prefix": prefix},
        resilience={**FAST_RETRY, "breaker": {"failures": 1, "cooldown_s": 30, "shared": True}},
    )
    load_litellm_sync()
    try:
        with GatewayServer(config) as first, GatewayServer(config) as second:
            fake.script("shared-x", Chat())
            assert post_stream(second.url, LLM, llm_request("shared-x")).outcome.error is None  # second knows it
            fake.script("shared-x", HttpError(503))
            post_stream(first.url, LLM, llm_request("shared-x"))  # opens first's breaker
            key = next(iter(s.key for s in first.app.services.health.states()))
            assert first.app.services.health(key).state == "open"
            deadline = time.monotonic() + 3
            while second.app.services.health(key).state != "open" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert second.app.services.health(key).state == "open"
            calls = fake.count(model="shared-x")
            reply = post_stream(second.url, LLM, llm_request("shared-x"))
            assert "cooling down" in orjson.loads(reply.body)["error"]
            assert fake.count(model="shared-x") == calls  # refused without a call
    finally:
        delete_prefix(redis_url, prefix)


def test_tts_failure_after_audio_went_out_is_one_error_frame(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("voice-mid", Speech(size=3000), HttpError(503))
    before = fake.count(model="tts-backup")
    body = invoke_body("tts", model="voice-mid", content_text="Hello there. How are you today?", voice="alloy")
    reply = post_stream(gateway.url, "/inner/api/invoke/tts", body, kind="tts")
    assert reply.status == 200
    assert reply.outcome.chunks, "the first piece's audio went out"
    assert reply.outcome.error is not None and "503" in reply.outcome.error
    assert fake.count(model="tts-backup") == before  # no switch once audio was sent
