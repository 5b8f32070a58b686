"""The per-item embedding cache through the running gateway, against a real Redis."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fakes.upstream import Embeddings, FakeUpstream, fake_embedding
from tests.support.client import invoke_body, post_unary
from tests.support.redis import delete_prefix
from tests.support.server import TEST_KEY, GatewayServer, gateway_config

DIMS = 8
MODEL = "text-embedding-3-small"


def cache_config(upstream: FakeUpstream, redis_url: str | None, **cache: Any) -> dict[str, Any]:
    routes = [
        {
            "match": {"type": ["text-embedding", "multimodal-embedding"]},
            "targets": [{"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-x"}],
        }
    ]
    settings_: dict[str, Any] = {"key_prefix": f"t{uuid.uuid4().hex[:8]}:", **cache}
    if redis_url is not None:
        settings_["redis_url"] = redis_url
        _USED.append((redis_url, settings_["key_prefix"]))
    return gateway_config(routes, cache=settings_)


def embed(gateway: GatewayServer, texts: list[str], tenant: str = "tenant-1", input_type: str = "document") -> Any:
    body = invoke_body("text_embedding", MODEL, texts=texts, input_type=input_type, tenant_id=tenant)
    return post_unary(gateway.url, "text-embedding", body).ok()


def sent_texts(fake: FakeUpstream) -> list[str]:
    return [t for r in fake.requests if r.path == "/v1/embeddings" for t in r.json["input"]]


def stored_keys(redis_url: str, prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return list(client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()


def wait_for_keys(redis_url: str, prefix: str, count: int) -> None:
    """Cache writes happen after the reply; wait until they have landed."""
    deadline = time.monotonic() + 5
    while len(stored_keys(redis_url, prefix)) < count:
        assert time.monotonic() < deadline, "cache writes did not land"
        time.sleep(0.01)


_USED: list[tuple[str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def _delete_test_keys() -> Iterator[None]:
    """The shared Redis keeps nothing of these tests."""
    yield
    for url, prefix in _USED:
        try:
            delete_prefix(url, prefix)
        except redis.RedisError:
            pass  # a private server that is already gone


@pytest.fixture(scope="module")
def cached(upstream: FakeUpstream, redis_url: str) -> Iterator[tuple[GatewayServer, str]]:
    config = cache_config(upstream, redis_url)
    with GatewayServer(config) as server:
        yield server, config["cache"]["key_prefix"]


WORDS = st.sampled_from([f"w{i}" for i in range(12)])
TEXTS = st.lists(WORDS, min_size=1, max_size=3).map(" ".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(TEXTS, min_size=0, max_size=12), min_size=1, max_size=4))
def test_batches_mixing_hits_misses_and_duplicates_are_exact(
    cached: tuple[GatewayServer, str], fake: FakeUpstream, redis_url: str, batches: list[list[str]]
) -> None:
    gateway, prefix = cached
    for batch in batches:
        fake.reset()
        fake.default(Embeddings(dims=DIMS))
        stored_before = {k.decode() for k in stored_keys(redis_url, prefix)}
        data = embed(gateway, batch)
        assert data["embeddings"] == [fake_embedding(t, DIMS) for t in batch]
        sent = sent_texts(fake)
        assert len(sent) == len(set(sent)), "a text was sent twice in one request"
        # Only texts that were not stored went upstream, and each stored text came from the store.
        wait_for_keys(redis_url, prefix, len(stored_before) + len(sent))
        assert len(stored_keys(redis_url, prefix)) == len(stored_before) + len(sent)
        if not sent:
            assert data["usage"]["tokens"] == 0


def test_a_cached_batch_costs_no_tokens_and_no_upstream_call(
    upstream: FakeUpstream, fake: FakeUpstream, redis_url: str
) -> None:
    config = cache_config(upstream, redis_url)
    with GatewayServer(config) as gateway:
        fake.script(MODEL, Embeddings(dims=DIMS, usage_tokens=7))
        first = embed(gateway, ["alpha", "beta"])
        assert first["usage"]["tokens"] == 7
        wait_for_keys(redis_url, config["cache"]["key_prefix"], 2)
        second = embed(gateway, ["beta", "alpha", "beta"])
    assert second["embeddings"] == [fake_embedding(t, DIMS) for t in ["beta", "alpha", "beta"]]
    assert second["usage"]["tokens"] == 0 and second["usage"]["total_price"] == "0"
    assert fake.count("/v1/embeddings") == 1


def test_fifty_concurrent_identical_misses_make_one_upstream_call(
    upstream: FakeUpstream, fake: FakeUpstream, redis_url: str
) -> None:
    fake.default(Embeddings(dims=DIMS, delay_s=0.5))
    with GatewayServer(cache_config(upstream, redis_url)) as gateway:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(headers={"X-Inner-Api-Key": TEST_KEY}, timeout=30) as client:
                body = invoke_body("text_embedding", MODEL, texts=["same text"], input_type="query")
                url = f"{gateway.url}/inner/api/invoke/text-embedding"
                return await asyncio.gather(*(client.post(url, json=body) for _ in range(50)))

        replies = asyncio.run(burst())
    assert all(r.json()["data"]["embeddings"] == [fake_embedding("same text", DIMS)] for r in replies)
    assert fake.count("/v1/embeddings") == 1
    spent = sorted(r.json()["data"]["usage"]["tokens"] for r in replies)
    assert spent[:-1] == [0] * 49 and spent[-1] > 0  # one request paid for the text


def test_tenants_are_isolated_unless_the_scope_is_global(
    upstream: FakeUpstream, fake: FakeUpstream, redis_url: str
) -> None:
    fake.default(Embeddings(dims=DIMS))
    for scope, calls in (("tenant", 2), ("global", 1)):
        fake.reset()
        fake.default(Embeddings(dims=DIMS))
        config = cache_config(upstream, redis_url, embeddings={"scope": scope})
        with GatewayServer(config) as gateway:
            embed(gateway, ["shared text"], tenant="tenant-a")
            wait_for_keys(redis_url, config["cache"]["key_prefix"], 1)
            assert embed(gateway, ["shared text"], tenant="tenant-b")["embeddings"] == [
                fake_embedding("shared text", DIMS)
            ]
        assert fake.count("/v1/embeddings") == calls, scope


def test_input_type_and_model_are_part_of_the_key(upstream: FakeUpstream, fake: FakeUpstream, redis_url: str) -> None:
    fake.default(Embeddings(dims=DIMS))
    config = cache_config(upstream, redis_url)
    with GatewayServer(config) as gateway:
        embed(gateway, ["t"], input_type="query")
        wait_for_keys(redis_url, config["cache"]["key_prefix"], 1)
        embed(gateway, ["t"], input_type="document")
        body = invoke_body("text_embedding", "text-embedding-3-large", texts=["t"], input_type="query")
        post_unary(gateway.url, "text-embedding", body).ok()
    assert fake.count("/v1/embeddings") == 3


def test_entries_expire_after_their_ttl(upstream: FakeUpstream, fake: FakeUpstream, redis_url: str) -> None:
    fake.default(Embeddings(dims=DIMS))
    config = cache_config(upstream, redis_url, embeddings={"ttl_s": 1})
    with GatewayServer(config) as gateway:
        embed(gateway, ["short-lived"])
        wait_for_keys(redis_url, config["cache"]["key_prefix"], 1)
        embed(gateway, ["short-lived"])
        assert fake.count("/v1/embeddings") == 1
        time.sleep(1.2)
        embed(gateway, ["short-lived"])
    assert fake.count("/v1/embeddings") == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda v: v[:-1],  # truncated
        lambda v: v[:-4] + b"\x00\x00\x80\x7f",  # same length, different floats: checksum
        lambda v: b"garbage",
        lambda v: v[:2] + (999).to_bytes(4, "little") + v[6:],  # wrong dimension count
    ],
)
def test_a_corrupt_entry_is_a_miss_never_a_wrong_vector(
    upstream: FakeUpstream, fake: FakeUpstream, redis_url: str, damage: Any
) -> None:
    fake.default(Embeddings(dims=DIMS))
    config = cache_config(upstream, redis_url, embeddings={"l1_max_bytes": 0})  # read Redis every time
    prefix = config["cache"]["key_prefix"]
    with GatewayServer(config) as gateway:
        embed(gateway, ["fragile"])
        wait_for_keys(redis_url, prefix, 1)
        client = redis.Redis.from_url(redis_url)
        (key,) = stored_keys(redis_url, prefix)
        client.set(key, damage(client.get(key)))
        assert embed(gateway, ["fragile"])["embeddings"] == [fake_embedding("fragile", DIMS)]
        client.close()
    assert fake.count("/v1/embeddings") == 2


def test_without_redis_an_in_process_cache_serves_hits(upstream: FakeUpstream, fake: FakeUpstream) -> None:
    fake.default(Embeddings(dims=DIMS))
    with GatewayServer(cache_config(upstream, None)) as gateway:
        embed(gateway, ["one", "two"])
        assert embed(gateway, ["two", "one", "three"])["embeddings"] == [
            fake_embedding(t, DIMS) for t in ["two", "one", "three"]
        ]
    assert sent_texts(fake) == ["one", "two", "three"]


def test_the_cache_can_be_turned_off(upstream: FakeUpstream, fake: FakeUpstream) -> None:
    fake.default(Embeddings(dims=DIMS))
    with GatewayServer(cache_config(upstream, None, embeddings={"enabled": False})) as gateway:
        embed(gateway, ["one"])
        embed(gateway, ["one"])
    assert fake.count("/v1/embeddings") == 2


def test_metrics_count_hits_and_misses(upstream: FakeUpstream, fake: FakeUpstream, redis_url: str) -> None:
    fake.default(Embeddings(dims=DIMS))
    config = cache_config(upstream, redis_url)
    with GatewayServer(config) as gateway:
        embed(gateway, ["m1", "m2"])
        wait_for_keys(redis_url, config["cache"]["key_prefix"], 2)
        embed(gateway, ["m1", "m3"])
        text = httpx.get(f"{gateway.url}/metrics").text
    assert 'dify_gateway_embedding_cache_lookups_total{result="hit"} 1.0' in text
    assert 'dify_gateway_embedding_cache_lookups_total{result="miss"} 3.0' in text
    assert 'dify_gateway_embedding_cache_breaker_state{state="closed",store="redis"} 1.0' in text


def test_chaos_redis_paused_killed_restarted_and_flushed_under_load(
    upstream: FakeUpstream, fake: FakeUpstream, private_redis: Any
) -> None:
    fake.default(Embeddings(dims=DIMS))
    config = cache_config(upstream, private_redis.url, breaker_cooldown_s=0.3)
    texts = [f"chaos {i}" for i in range(40)]
    counter = itertools.count()
    failures: list[str] = []
    latencies: dict[str, list[float]] = {}

    with GatewayServer(config) as gateway:

        def load(phase: str, seconds: float) -> None:
            async def run() -> None:
                async with httpx.AsyncClient(headers={"X-Inner-Api-Key": TEST_KEY}, timeout=30) as client:
                    url = f"{gateway.url}/inner/api/invoke/text-embedding"
                    end = time.monotonic() + seconds

                    async def worker() -> None:
                        while time.monotonic() < end:
                            n = next(counter)
                            batch = [texts[(n * 7 + j) % len(texts)] for j in range(n % 5 + 1)]
                            body = invoke_body("text_embedding", MODEL, texts=batch, input_type="query")
                            started = time.monotonic()
                            reply = await client.post(url, json=body)
                            latencies.setdefault(phase, []).append(time.monotonic() - started)
                            data = reply.json()
                            if (
                                reply.status_code != 200
                                or data["error"]
                                or data["data"]["embeddings"] != [fake_embedding(t, DIMS) for t in batch]
                            ):
                                failures.append(f"{phase}: {reply.status_code} {data.get('error')}")

                    await asyncio.gather(*(worker() for _ in range(4)))

            asyncio.run(run())

        load("warm", 1.0)
        private_redis.pause()
        load("paused", 1.5)
        private_redis.resume()
        time.sleep(0.4)
        load("resumed", 1.0)
        private_redis.kill()
        load("killed", 1.0)
        private_redis.restart()
        time.sleep(0.4)
        load("restarted", 1.0)
        private_redis.flush()
        load("flushed", 1.0)
        calls_before = fake.count("/v1/embeddings")
        load("recovered", 0.5)
        calls_after = fake.count("/v1/embeddings")

    assert failures == []
    for phase in ("paused", "killed"):
        worst = sorted(latencies[phase])[int(len(latencies[phase]) * 0.99) - 1]
        assert worst < 0.25, f"{phase}: p99 {worst * 1000:.0f} ms"
    assert calls_after == calls_before, "after recovery every text should come from the cache"
