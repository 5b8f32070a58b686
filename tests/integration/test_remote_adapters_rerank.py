"""Rerank adapters (litellm, Xinference through litellm, TEI, the native client) against the loopback fake upstream."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from gateway.adapters.base import MediaInput, RerankCall, ScoredDoc, UpstreamContext
from gateway.adapters.http_tei import TeiAdapter
from gateway.adapters.litellm_rerank import LiteLLMRerankAdapter
from gateway.adapters.native_rerank import NativeRerank, native_rerank
from gateway.adapters.registry import uses_litellm
from gateway.config import TargetConfig
from gateway.errors import BadRequest, UpstreamError
from gateway.http_client import HttpClient
from gateway.routing import Target
from tests.fakes.upstream import FakeUpstream, HttpError, Rerank, rerank_score

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "sk-rerank-secret-9"
CTX = UpstreamContext(route="r-rerank", provider="langgenius/cohere/cohere", model="rerank-v3.5")
QUERY = "which one is b"
DOCS = ["a", "b is here", "c b", "nothing"]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(24))


def target(model: str, api_base: str | None, **config: Any) -> Target:
    return Target(config=TargetConfig(model=model, api_base=api_base, api_key=SecretStr(SECRET), **config), model=model)


def call(t: Target, docs: list[MediaInput] | None = None, top_n: int | None = None) -> RerankCall:
    docs = docs if docs is not None else [MediaInput.text(d) for d in DOCS]
    return RerankCall(target=t, context=CTX, query=MediaInput.text(QUERY), docs=docs, top_n=top_n, timeout_s=10.0)


def expected(indexes: list[int]) -> list[ScoredDoc]:
    return [ScoredDoc(index=i, score=rerank_score(QUERY, DOCS[i])) for i in indexes]


@pytest.fixture(scope="module")
def adapter() -> LiteLLMRerankAdapter:
    return LiteLLMRerankAdapter()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tei() -> AsyncIterator[TeiAdapter]:
    http = HttpClient()
    yield TeiAdapter(http)
    await http.aclose()


# (model, api_base relative to the fake's root, fake style, path the fake must see, sends top_n as)
PROVIDERS = [
    ("cohere/rerank-v3.5", "", "jina", "/v2/rerank", "top_n"),
    ("cohere/rerank-v3.5", "/v2", "jina", "/v2/rerank", "top_n"),
    ("jina_ai/jina-reranker-v2-base-multilingual", "/v1", "jina", "/v1/rerank", "top_n"),
    ("hosted_vllm/BAAI/bge-reranker-v2-m3", "/v1", "jina", "/v1/rerank", "top_n"),
    ("infinity/mixedbread-ai/mxbai-rerank-xsmall-v1", "/v1", "jina", "/v1/rerank", "top_n"),
    ("together_ai/Salesforce/Llama-Rank-V1", "/v1", "jina", "/v1/rerank", "top_n"),
    ("fireworks_ai/fireworks/qwen3-reranker-8b", "/v1", "jina", "/v1/rerank", "top_n"),
    ("azure_ai/cohere-rerank-v3.5", "", "jina", "/v1/rerank", "top_n"),
    ("voyage/rerank-2", "/v1", "voyage", "/v1/rerank", "top_k"),
    ("xinference/bge-reranker-v2-m3", "", "xinference", "/v1/rerank", "top_n"),
    ("xinference/bge-reranker-v2-m3", "/v1", "xinference", "/v1/rerank", "top_n"),
]


@pytest.mark.parametrize(("model", "base", "style", "path", "top_field"), PROVIDERS)
async def test_providers_score_every_document(
    adapter: LiteLLMRerankAdapter, fake: FakeUpstream, model: str, base: str, style: str, path: str, top_field: str
) -> None:
    fake.default(Rerank(style=style))  # type: ignore[arg-type]
    out = await adapter.rerank(call(target(model, fake.root_url + base), top_n=2))
    assert out.scores == expected([1, 2])
    (rec,) = fake.requests
    assert rec.path == path
    assert rec.json["query"] == QUERY and rec.json["documents"] == DOCS
    assert rec.json[top_field] == 2
    assert rec.json.get("return_documents") is False
    assert rec.json["model"] == model.split("/", 1)[1]


async def test_all_scores_when_top_n_is_unset_or_too_large(adapter: LiteLLMRerankAdapter, fake: FakeUpstream) -> None:
    for top_n in (None, 10):
        out = await adapter.rerank(call(target("cohere/rerank-v3.5", fake.root_url), top_n=top_n))
        assert sorted(out.scores, key=lambda s: s.index) == expected([0, 1, 2, 3])
        assert "top_n" not in fake.requests[-1].json


async def test_tokens_from_the_reply(adapter: LiteLLMRerankAdapter, fake: FakeUpstream) -> None:
    out = await adapter.rerank(call(target("jina_ai/jina-reranker-v2-base-multilingual", fake.base_url)))
    assert out.tokens == 4 + 7  # the fake counts the words of the query and the documents


async def test_configured_headers_reach_cohere(adapter: LiteLLMRerankAdapter, fake: FakeUpstream) -> None:
    t = target("cohere/rerank-v3.5", fake.root_url, headers={"X-Tenant": "t1"})
    await adapter.rerank(call(t))
    assert fake.requests[-1].headers["x-tenant"] == "t1"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


async def test_jina_m0_reranks_images(adapter: LiteLLMRerankAdapter, fake: FakeUpstream) -> None:
    png = base64.b64encode(PNG).decode()
    docs = [MediaInput.text("b is here"), MediaInput("image", f"data:image/png;base64,{png}")]
    out = await adapter.rerank(call(target("jina_ai/jina-reranker-m0", fake.base_url), docs))
    assert fake.requests[-1].json["documents"] == [{"text": "b is here"}, {"image": png}]
    assert {s.index for s in out.scores} == {0, 1}


@pytest.mark.parametrize("model", ["cohere/rerank-v3.5", "hosted_vllm/bge", "voyage/rerank-2"])
async def test_image_documents_elsewhere_are_bad_requests(
    adapter: LiteLLMRerankAdapter, fake: FakeUpstream, model: str
) -> None:
    docs = [MediaInput.text("a"), MediaInput("image", base64.b64encode(PNG).decode())]
    with pytest.raises(BadRequest, match=f"target '{model}' cannot rerank image documents") as info:
        await adapter.rerank(call(target(model, fake.base_url), docs))
    assert "route 'r-rerank'" in info.value.message
    assert fake.requests == []


async def test_image_queries_and_keyless_xinference_targets(adapter: LiteLLMRerankAdapter, fake: FakeUpstream) -> None:
    image_query = RerankCall(
        target=target("jina_ai/jina-reranker-m0", fake.base_url),
        context=CTX,
        query=MediaInput("image", base64.b64encode(PNG).decode()),
        docs=[MediaInput.text("a")],
        top_n=None,
    )
    with pytest.raises(BadRequest, match="cannot rerank with a image query"):
        await adapter.rerank(image_query)
    with pytest.raises(BadRequest, match="needs an api_base"):
        await adapter.rerank(call(target("xinference/bge", None)))
    assert fake.requests == []


async def test_no_documents_no_call(adapter: LiteLLMRerankAdapter, fake: FakeUpstream) -> None:
    out = await adapter.rerank(call(target("cohere/rerank-v3.5", fake.root_url), docs=[]))
    assert out.scores == [] and fake.requests == []


# --- TEI ----------------------------------------------------------------------------------------


async def test_tei_rerank(tei: TeiAdapter, fake: FakeUpstream) -> None:
    out = await tei.rerank(call(target("tei/bge-reranker-base", fake.root_url)))
    assert sorted(out.scores, key=lambda s: s.index) == expected([0, 1, 2, 3])
    (rec,) = fake.requests
    assert rec.path == "/rerank"
    assert rec.json == {"query": QUERY, "texts": DOCS, "raw_scores": False, "truncate": True, "return_text": False}


async def test_tei_rerank_chunks_keep_document_indexes(tei: TeiAdapter, fake: FakeUpstream) -> None:
    out = await tei.rerank(call(target("tei/bge-reranker-base", fake.root_url, max_batch_size=3)))
    assert sorted(out.scores, key=lambda s: s.index) == expected([0, 1, 2, 3])
    assert sorted(len(r.json["texts"]) for r in fake.requests) == [1, 3]


async def test_tei_rerank_is_text_only(tei: TeiAdapter, fake: FakeUpstream) -> None:
    with pytest.raises(BadRequest, match="reranks text only"):
        await tei.rerank(call(target("tei/x", fake.root_url), [MediaInput("image", base64.b64encode(PNG).decode())]))


# --- the native client: the same request as litellm's, without litellm's cost -------------------

NATIVE = [
    ("cohere/rerank-v3.5", "", "jina"),
    ("cohere/rerank-v3.5", "/v2", "jina"),
    ("hosted_vllm/BAAI/bge-reranker-v2-m3", "/v1", "jina"),
    ("xinference/bge-reranker-v2-m3", "", "xinference"),
    ("xinference/bge-reranker-v2-m3", "/v1", "xinference"),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def native(adapter: LiteLLMRerankAdapter) -> AsyncIterator[NativeRerank]:
    http = HttpClient()
    yield NativeRerank(http, adapter)
    await http.aclose()


@pytest.mark.parametrize(("model", "base", "style"), NATIVE)
@pytest.mark.parametrize("top_n", [None, 2])
async def test_native_rerank_sends_what_litellm_sends(
    adapter: LiteLLMRerankAdapter,
    native: NativeRerank,
    fake: FakeUpstream,
    model: str,
    base: str,
    style: str,
    top_n: int | None,
) -> None:
    fake.default(Rerank(style=style))  # type: ignore[arg-type]
    t = target(model, fake.root_url + base, params={"max_tokens_per_doc": 512, "temperature": 0.3})
    assert native_rerank(t)
    by_litellm = await adapter.rerank(call(t, top_n=top_n))
    by_native = await native.rerank(call(t, top_n=top_n))
    theirs, ours = fake.requests
    assert ours.path == theirs.path
    assert ours.json == theirs.json and "temperature" not in ours.json
    assert ours.headers["authorization"] == theirs.headers["authorization"] == f"Bearer {SECRET}"
    assert ours.headers["content-type"] == "application/json"
    assert by_native.scores == by_litellm.scores
    # litellm reads vLLM's usage for Xinference too, and so misses Xinference's meta tokens.
    assert by_native.tokens == (by_litellm.tokens if style != "xinference" else 4 + 7)


async def test_native_rerank_without_a_key_sends_no_authorization(native: NativeRerank, fake: FakeUpstream) -> None:
    t = Target(config=TargetConfig(model="hosted_vllm/bge", api_base=fake.base_url), model="hosted_vllm/bge")
    out = await native.rerank(call(t, top_n=2))
    assert out.scores == expected([1, 2])
    assert "authorization" not in fake.requests[-1].headers


async def test_native_rerank_errors_keep_the_key_out(native: NativeRerank, fake: FakeUpstream) -> None:
    fake.default(HttpError(500, f"bad key {SECRET}"))
    with pytest.raises(UpstreamError) as info:
        await native.rerank(call(target("cohere/rerank-v3.5", fake.root_url)))
    assert SECRET not in info.value.message and "HTTP 500" in info.value.message
    assert "route 'r-rerank'" in info.value.message


async def test_native_rerank_hands_images_to_litellm(native: NativeRerank, fake: FakeUpstream) -> None:
    docs = [MediaInput.text("a"), MediaInput("image", base64.b64encode(PNG).decode())]
    with pytest.raises(BadRequest, match="cannot rerank image documents"):
        await native.rerank(call(target("cohere/rerank-v3.5", fake.root_url), docs))
    assert fake.requests == []


@pytest.mark.parametrize(
    ("model", "api_base", "config", "chosen"),
    [
        ("cohere/rerank-v3.5", None, {}, True),
        ("cohere/rerank-v3.5", "http://h", {"native": False}, False),
        ("cohere/rerank-v3.5", "http://h", {"litellm_params": {"x": 1}}, False),
        ("hosted_vllm/bge", "http://h/v1", {}, True),
        ("hosted_vllm/bge", None, {}, False),
        ("xinference/bge", "http://h", {}, True),
        ("jina_ai/jina-reranker-v2", "http://h", {}, False),
        ("voyage/rerank-2", "http://h", {}, False),
    ],
)
async def test_which_targets_rerank_natively(
    model: str, api_base: str | None, config: dict[str, Any], chosen: bool
) -> None:
    assert native_rerank(target(model, api_base, **config)) is chosen
    assert uses_litellm(target(model, api_base, **config), ["rerank"]) is not chosen
    assert uses_litellm(target(model, api_base, **config), ["multimodal-rerank"])  # images need litellm


async def test_keyless_cohere_stays_on_litellm() -> None:
    """Without a configured key litellm reads COHERE_API_KEY from the environment."""
    keyless = Target(config=TargetConfig(model="cohere/rerank-v3.5"), model="cohere/rerank-v3.5")
    assert not native_rerank(keyless)
