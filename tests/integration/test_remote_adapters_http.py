"""The shared aiohttp client of the direct HTTP adapters, over real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gateway.errors import UpstreamBadRequest, UpstreamTimeout, UpstreamUnavailable
from gateway.http_client import MAX_DETAIL, HttpClient
from tests.fakes.upstream import Embeddings, FakeUpstream, Hang, HttpError

pytestmark = pytest.mark.asyncio(loop_scope="module")

WHERE = "route 'r', provider 'p', model 'm' -> 'tei/x'"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.aclose()


async def test_post_json_returns_body_and_headers(http: HttpClient, fake: FakeUpstream) -> None:
    fake.default(Embeddings(usage_tokens=5))
    reply = await http.post_json(
        fake.root_url + "/embed", {"inputs": ["a"]}, timeout_s=5, where=WHERE, headers={"X-Key": "1"}
    )
    assert isinstance(reply.data, list) and len(reply.data) == 1
    assert reply.headers["x-compute-tokens"] == "5"
    rec = fake.requests[-1]
    assert rec.json == {"inputs": ["a"]}
    assert rec.headers["x-key"] == "1" and rec.headers["content-type"] == "application/json"


async def test_long_error_bodies_are_cut_and_the_secret_removed(http: HttpClient, fake: FakeUpstream) -> None:
    fake.default(HttpError(422, body={"error": "key sk-abc refused; input: " + "long user text " * 100}))
    with pytest.raises(UpstreamBadRequest) as info:
        await http.post_json(fake.root_url + "/embed", {"inputs": ["a"]}, timeout_s=5, where=WHERE, secret="sk-abc")
    message = info.value.message
    assert message.startswith(f"upstream error HTTP 422 ({WHERE}): key *** refused")
    assert len(message) < len(WHERE) + MAX_DETAIL + 60
    assert info.value.upstream_status == 422


async def test_a_200_that_is_not_json_is_malformed(http: HttpClient, fake: FakeUpstream) -> None:
    fake.default(HttpError(200, body="surprise, plain text"))
    with pytest.raises(UpstreamUnavailable, match=r"malformed reply from upstream \(route 'r'"):
        await http.post_json(fake.root_url + "/embed", {"inputs": ["a"]}, timeout_s=5, where=WHERE)


async def test_connection_refused_is_unavailable(http: HttpClient) -> None:
    with pytest.raises(UpstreamUnavailable, match=r"unreachable or failed \(route 'r'"):
        await http.post_json("http://127.0.0.1:9/embed", {"inputs": ["a"]}, timeout_s=5, where=WHERE)


async def test_a_hang_times_out(http: HttpClient, fake: FakeUpstream) -> None:
    fake.default(Hang())
    with pytest.raises(UpstreamTimeout, match="timed out after 0.3 s"):
        await http.post_json(fake.root_url + "/embed", {"inputs": ["a"]}, timeout_s=0.3, where=WHERE)


async def test_one_pool_for_concurrent_calls(http: HttpClient, fake: FakeUpstream) -> None:
    fake.default(Embeddings(delay_s=0.02))
    for _ in range(3):
        await asyncio.gather(
            *(http.post_json(fake.root_url + "/embed", {"inputs": ["a"]}, timeout_s=5, where=WHERE) for _ in range(8))
        )
    assert len(fake.requests) == 24
    assert len({r.client_port for r in fake.requests}) <= 8  # connections kept and reused
