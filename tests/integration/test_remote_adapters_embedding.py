"""Embedding adapters (litellm and TEI) against the loopback fake upstream, real litellm."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from gateway.adapters.base import (
    EmbeddingAdapter,
    EmbeddingCall,
    EmbeddingVector,
    InputType,
    MediaInput,
    UpstreamContext,
)
from gateway.adapters.http_tei import TeiAdapter
from gateway.adapters.litellm_embedding import LiteLLMEmbeddingAdapter
from gateway.adapters.openai_compat import OpenAICompatEmbedding
from gateway.config import TargetConfig
from gateway.errors import BadRequest, UpstreamUnavailable
from gateway.http_client import HttpClient
from gateway.routing import Target
from tests.fakes.upstream import Embeddings, FakeUpstream, fake_embedding

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "sk-embed-secret-7"
CTX = UpstreamContext(route="r-emb", provider="langgenius/openai/openai", model="text-embedding-3-small")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(24))
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(24))


def floats(vectors: list[EmbeddingVector]) -> list[list[float]]:
    """Vectors as plain floats (base64 replies decode to float32 arrays)."""
    return [[float(x) for x in v] for v in vectors]


def target(model: str, api_base: str | None, **config: Any) -> Target:
    return Target(config=TargetConfig(model=model, api_base=api_base, api_key=SecretStr(SECRET), **config), model=model)


def call(t: Target, inputs: list[MediaInput], input_type: InputType = "document") -> EmbeddingCall:
    return EmbeddingCall(target=t, context=CTX, inputs=inputs, input_type=input_type, timeout_s=10.0)


def texts(*items: str) -> list[MediaInput]:
    return [MediaInput.text(t) for t in items]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{b64(data)}"


@pytest.fixture(scope="module")
def adapter() -> LiteLLMEmbeddingAdapter:
    return LiteLLMEmbeddingAdapter()


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["litellm", "native"])
async def openai_adapter(request: pytest.FixtureRequest) -> AsyncIterator[EmbeddingAdapter]:
    """OpenAI-compatible targets are served by the native client by default, by litellm when
    a target says ``native: false``: the same contract for both."""
    if request.param == "litellm":
        yield LiteLLMEmbeddingAdapter()
        return
    http = HttpClient()
    yield OpenAICompatEmbedding(http)
    await http.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tei() -> AsyncIterator[TeiAdapter]:
    http = HttpClient()
    yield TeiAdapter(http)
    await http.aclose()


# --- litellm: OpenAI and OpenAI-compatible ---------------------------------------------------


async def test_openai_vectors_in_input_order_as_base64(openai_adapter: EmbeddingAdapter, fake: FakeUpstream) -> None:
    fake.default(Embeddings(dims=8, usage_tokens=11))
    words = ["hello world", "second text", "third"]
    out = await openai_adapter.embed(
        call(target("openai/text-embedding-3-small", fake.base_url), texts(*words), "query")
    )
    assert floats(out.vectors) == [fake_embedding(w, 8) for w in words]
    assert out.tokens == 11
    (rec,) = fake.requests
    assert rec.path == "/v1/embeddings"
    assert rec.json == {"model": "text-embedding-3-small", "input": words, "encoding_format": "base64"}
    assert rec.headers["authorization"] == f"Bearer {SECRET}"


async def test_vectors_are_put_back_in_input_order(openai_adapter: EmbeddingAdapter, fake: FakeUpstream) -> None:
    fake.default(Embeddings(reverse=True))
    words = [f"text {i}" for i in range(5)]
    out = await openai_adapter.embed(call(target("openai/text-embedding-3-small", fake.base_url), texts(*words)))
    assert floats(out.vectors) == [fake_embedding(w, 8) for w in words]


async def test_a_missing_vector_is_a_malformed_reply(openai_adapter: EmbeddingAdapter, fake: FakeUpstream) -> None:
    fake.default(Embeddings(missing=1))
    with pytest.raises(UpstreamUnavailable, match="malformed reply") as info:
        await openai_adapter.embed(call(target("openai/text-embedding-3-small", fake.base_url), texts("a", "b")))
    assert "route 'r-emb'" in info.value.message and SECRET not in info.value.message


async def test_a_batch_of_2048_texts(openai_adapter: EmbeddingAdapter, fake: FakeUpstream) -> None:
    words = [f"document number {i}" for i in range(2048)]
    out = await openai_adapter.embed(call(target("openai/text-embedding-3-small", fake.base_url), texts(*words)))
    assert len(out.vectors) == 2048
    assert floats(out.vectors) == [fake_embedding(w, 8) for w in words]
    assert fake.count("/v1/embeddings") == 1


async def test_target_params_override_the_request(openai_adapter: EmbeddingAdapter, fake: FakeUpstream) -> None:
    t = target("openai/text-embedding-3-small", fake.base_url, params={"encoding_format": "float", "dimensions": 4})
    out = await openai_adapter.embed(call(t, texts("hello")))
    assert floats(out.vectors) == [fake_embedding("hello", 4)]
    sent = fake.requests[-1].json
    assert sent["encoding_format"] == "float" and sent["dimensions"] == 4


async def test_completion_params_of_a_shared_target_stay_out(
    openai_adapter: EmbeddingAdapter, fake: FakeUpstream
) -> None:
    params = {"temperature": 0.2, "max_tokens": 5, "dimensions": 4}
    await openai_adapter.embed(call(target("openai/text-embedding-3-small", fake.base_url, params=params), texts("x")))
    sent = fake.requests[-1].json
    assert sent["dimensions"] == 4
    assert "temperature" not in sent and "max_tokens" not in sent


async def test_no_inputs_no_call(openai_adapter: EmbeddingAdapter, fake: FakeUpstream) -> None:
    out = await openai_adapter.embed(call(target("openai/text-embedding-3-small", fake.base_url), []))
    assert (floats(out.vectors), out.tokens) == ([], None)
    assert fake.requests == []


# --- litellm: input_type per provider ----------------------------------------------------------


def _sent_field(rec_json: dict[str, Any], name: str) -> Any:
    if "requests" in rec_json:  # Gemini: per request
        return {r.get(name) for r in rec_json["requests"]}.pop()
    return rec_json.get(name)


@pytest.mark.parametrize(
    ("model", "base", "field", "query", "document"),
    [
        ("cohere/embed-english-v3.0", "root", "input_type", "search_query", "search_document"),
        ("voyage/voyage-3", "v1", "input_type", "query", "document"),
        ("nvidia_nim/nvidia/nv-embedqa-e5-v5", "v1", "input_type", "query", "passage"),
        ("azure_ai/Cohere-embed-v3-english", "v1", "input_type", "query", "document"),
        ("jina_ai/jina-embeddings-v3", "v1", "task", "retrieval.query", "retrieval.passage"),
        ("gemini/text-embedding-004", "root", "taskType", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT"),
    ],
)
async def test_input_type_reaches_the_provider_in_its_own_field(
    adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream, model: str, base: str, field: str, query: str, document: str
) -> None:
    api_base = fake.root_url if base == "root" else fake.base_url
    cases: list[tuple[InputType, str]] = [("query", query), ("document", document)]
    for input_type, expected in cases:
        out = await adapter.embed(call(target(model, api_base), texts("hello world", "b"), input_type))
        assert floats(out.vectors) == [fake_embedding("hello world", 8), fake_embedding("b", 8)]
        assert _sent_field(fake.requests[-1].json, field) == expected
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    "model", ["openai/text-embedding-3-small", "hosted_vllm/bge-m3", "jina_ai/jina-clip-v2", "xinference/bge-m3"]
)
async def test_providers_without_input_types_get_no_extra_field(
    adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream, model: str
) -> None:
    out = await adapter.embed(call(target(model, fake.base_url), texts("hello"), "query"))
    assert floats(out.vectors) == [fake_embedding("hello", 8)]
    assert fake.requests[-1].path == "/v1/embeddings"
    assert not {"input_type", "task", "task_type"} & set(fake.requests[-1].json)


async def test_cohere_accepts_the_host_root_or_the_full_url(
    adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream
) -> None:
    for api_base in (fake.root_url, fake.root_url + "/v2", fake.root_url + "/v2/embed"):
        await adapter.embed(call(target("cohere/embed-english-v3.0", api_base), texts("x")))
    assert [r.path for r in fake.requests] == ["/v2/embed"] * 3
    assert fake.requests[0].json["embedding_types"] == ["float"]


async def test_gemini_key_stays_out_of_the_url(adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream) -> None:
    await adapter.embed(call(target("gemini/text-embedding-004", fake.root_url), texts("x")))
    rec = fake.requests[-1]
    assert rec.path == "/models/text-embedding-004:batchEmbedContents"
    assert SECRET not in json.dumps(rec.query)


# --- litellm: images ----------------------------------------------------------------------------


async def test_jina_clip_mixes_text_and_images(adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream) -> None:
    inputs = [
        MediaInput.text("a cat"),
        MediaInput("image", b64(PNG)),
        MediaInput("image", data_uri(JPEG, "image/jpeg")),
    ]
    out = await adapter.embed(call(target("jina_ai/jina-clip-v2", fake.base_url), inputs, "query"))
    sent = fake.requests[-1].json["input"]
    assert sent == [{"text": "a cat"}, {"image": b64(PNG)}, {"image": b64(JPEG)}]
    assert floats(out.vectors) == [fake_embedding(json.dumps(item), 8) for item in sent]


async def test_cohere_sends_each_image_alone(adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream) -> None:
    inputs = [MediaInput.text("a cat"), MediaInput("image", b64(PNG)), MediaInput.text("a dog")]
    out = await adapter.embed(call(target("cohere/embed-v4.0", fake.root_url), inputs, "query"))
    by_kind = {("images" in r.json): r.json for r in fake.requests}
    assert len(fake.requests) == 2
    assert by_kind[False]["texts"] == ["a cat", "a dog"] and by_kind[False]["input_type"] == "search_query"
    assert by_kind[True]["images"] == [data_uri(PNG, "image/png")] and by_kind[True]["input_type"] == "image"
    assert floats(out.vectors) == [
        fake_embedding("a cat", 8),
        fake_embedding(data_uri(PNG, "image/png"), 8),
        fake_embedding("a dog", 8),
    ]


async def test_voyage_multimodal_gets_full_data_uris(adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream) -> None:
    inputs = [MediaInput.text("a cat"), MediaInput("image", b64(PNG))]
    out = await adapter.embed(call(target("voyage/voyage-multimodal-3", fake.base_url), inputs, "document"))
    rec = fake.requests[-1]
    assert rec.path == "/v1/multimodalembeddings"
    assert rec.json["inputs"] == [
        {"content": [{"type": "text", "text": "a cat"}]},
        {"content": [{"type": "image_base64", "image_base64": data_uri(PNG, "image/png")}]},
    ]
    assert rec.json["input_type"] == "document"
    assert floats(out.vectors) == [fake_embedding("a cat", 8), fake_embedding(data_uri(PNG, "image/png"), 8)]


AWS = {"aws_access_key_id": "AKIAFAKEFAKE", "aws_secret_access_key": "fake-aws-secret", "aws_region_name": "us-east-1"}


def bedrock(model: str, api_base: str) -> Target:
    """A Bedrock target signing with AWS keys (with an api_key litellm sends it as a Bedrock bearer key)."""
    return Target(config=TargetConfig(model=model, api_base=api_base, litellm_params=AWS), model=model)


async def test_bedrock_titan_embeds_text_and_images_one_per_call(
    adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream
) -> None:
    t = bedrock("bedrock/amazon.titan-embed-image-v1", fake.root_url)
    out = await adapter.embed(call(t, [MediaInput.text("a cat"), MediaInput("image", b64(PNG))]))
    sent = sorted((r.json for r in fake.requests), key=lambda j: "inputImage" in j)
    assert sent == [{"inputText": "a cat"}, {"inputImage": b64(PNG)}]
    assert {r.path for r in fake.requests} == {"/model/amazon.titan-embed-image-v1/invoke"}
    assert [r.headers.get("authorization", "")[:41] for r in fake.requests] == [
        "AWS4-HMAC-SHA256 Credential=AKIAFAKEFAKE/"
    ] * 2
    assert floats(out.vectors) == [fake_embedding("a cat", 8), fake_embedding(b64(PNG), 8)]


async def test_bedrock_cohere_gets_its_input_type(adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream) -> None:
    t = bedrock("bedrock/cohere.embed-multilingual-v3", fake.root_url)
    out = await adapter.embed(call(t, texts("a cat", "b"), "query"))
    assert fake.requests[-1].json == {"input_type": "search_query", "texts": ["a cat", "b"]}
    assert floats(out.vectors) == [fake_embedding("a cat", 8), fake_embedding("b", 8)]


@pytest.mark.parametrize("model", ["openai/text-embedding-3-small", "voyage/voyage-3", "hosted_vllm/bge-m3"])
async def test_targets_that_cannot_embed_images_say_so(
    adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream, model: str
) -> None:
    with pytest.raises(BadRequest, match=f"target '{model}' cannot embed images") as info:
        await adapter.embed(call(target(model, fake.base_url), [MediaInput("image", b64(PNG))]))
    assert "route 'r-emb'" in info.value.message
    assert fake.requests == []


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (MediaInput("image", "not base64 at all!"), "not valid base64"),
        (MediaInput("image", b64(b"BM\x00\x00 a bitmap")), "not a PNG, JPEG, GIF or WebP image"),
        (MediaInput("audio", b64(b"ID3\x03")), "cannot embed audio inputs"),
        (MediaInput.text(data_uri(PNG, "image/png")), "would embed as an image"),
    ],
)
async def test_inputs_it_cannot_send_are_bad_requests(
    adapter: LiteLLMEmbeddingAdapter, fake: FakeUpstream, item: MediaInput, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        await adapter.embed(call(target("jina_ai/jina-clip-v2", fake.base_url), [MediaInput.text("ok"), item]))
    assert fake.requests == []


# --- TEI ----------------------------------------------------------------------------------------


async def test_tei_embed(tei: TeiAdapter, fake: FakeUpstream) -> None:
    words = ["hello world", "b", "c d e"]
    out = await tei.embed(call(target("tei/bge-small", fake.root_url), texts(*words), "query"))
    assert floats(out.vectors) == [fake_embedding(w, 8) for w in words]
    assert out.tokens == 6  # from TEI's x-compute-tokens header
    (rec,) = fake.requests
    assert rec.path == "/embed"
    assert rec.json == {"inputs": words, "truncate": True}
    assert rec.headers["authorization"] == f"Bearer {SECRET}"


async def test_tei_chunks_by_max_batch_size_and_keeps_order(tei: TeiAdapter, fake: FakeUpstream) -> None:
    words = [f"text {i}" for i in range(7)]
    t = target("tei/bge-small", fake.root_url + "/v1/", max_batch_size=3)
    out = await tei.embed(call(t, texts(*words)))
    assert floats(out.vectors) == [fake_embedding(w, 8) for w in words]
    assert out.tokens == 14
    assert sorted(len(r.json["inputs"]) for r in fake.requests) == [1, 3, 3]


async def test_tei_prompt_names_and_body_params(tei: TeiAdapter, fake: FakeUpstream) -> None:
    params = {"query_prompt_name": "query", "document_prompt_name": "passage", "normalize": False}
    t = target("tei/e5", fake.root_url, params=params)
    await tei.embed(call(t, texts("q"), "query"))
    await tei.embed(call(t, texts("d"), "document"))
    first, second = (r.json for r in fake.requests)
    assert first == {"inputs": ["q"], "truncate": True, "normalize": False, "prompt_name": "query"}
    assert second["prompt_name"] == "passage"


async def test_tei_refuses_images_and_needs_an_api_base(tei: TeiAdapter, fake: FakeUpstream) -> None:
    with pytest.raises(BadRequest, match="embeds text only"):
        await tei.embed(call(target("tei/x", fake.root_url), [MediaInput("image", b64(PNG))]))
    with pytest.raises(BadRequest, match="needs an api_base"):
        await tei.embed(call(target("tei/x", None), texts("a")))
    assert fake.requests == []
