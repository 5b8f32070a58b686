"""EmbeddingCache with an in-process store: stale vectors, duplicates, tokens."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from gateway.adapters.base import MediaInput
from gateway.cache.codec import encode_vector
from gateway.cache.embedding_cache import EmbeddingCache
from gateway.cache.keys import KeyBuilder, scope_for, target_fingerprint
from gateway.cache.memory import MemoryStore
from gateway.config import EmbeddingCacheConfig, TargetConfig
from gateway.routing import Target

TARGET = Target(config=TargetConfig(model="openai/e"), model="openai/e")


def vector(text: str, dims: int) -> list[float]:
    return [float(len(text) + i) for i in range(dims)]


class Upstream:
    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.calls: list[list[str]] = []

    async def __call__(self, items: list[MediaInput]) -> tuple[Sequence[Sequence[float]], int]:
        self.calls.append([i.content for i in items])
        return [vector(i.content, self.dims) for i in items], len(items)


def store_with(texts: dict[str, int]) -> MemoryStore:
    """A store holding vectors of the given lengths, as an older model left them."""
    store = MemoryStore(1 << 20)
    keys = KeyBuilder("p:", scope_for("t", "tenant"), target_fingerprint(TARGET), "query")
    store.put_many(
        [(keys.key(MediaInput.text(t)), encode_vector(np.asarray(vector(t, d), np.float32))) for t, d in texts.items()],
        3600,
    )
    return store


@pytest.mark.asyncio
async def test_all_hits_of_mixed_lengths_are_embedded_again_and_the_store_corrected() -> None:
    cache = EmbeddingCache(store_with({"a": 4, "b": 4, "c": 4, "d": 8}), EmbeddingCacheConfig(), "p:")
    upstream = Upstream(dims=8)
    inputs = [MediaInput.text(t) for t in "abcd"]
    rows, tokens = await cache.embed(TARGET, "t", "query", inputs, upstream)
    assert [len(r) for r in rows] == [8, 8, 8, 8] and tokens == 4
    assert upstream.calls == [["a", "b", "c", "d"]]
    rows, tokens = await cache.embed(TARGET, "t", "query", inputs, upstream)
    assert [r.tolist() for r in rows] == [vector(t, 8) for t in "abcd"] and tokens == 0
    assert len(upstream.calls) == 1  # the second request came from the corrected store


@pytest.mark.asyncio
async def test_stale_hits_follow_the_fresh_vectors() -> None:
    cache = EmbeddingCache(store_with({"a": 4}), EmbeddingCacheConfig(), "p:")
    upstream = Upstream(dims=8)
    rows, tokens = await cache.embed(TARGET, "t", "query", [MediaInput.text("a"), MediaInput.text("new")], upstream)
    assert [len(r) for r in rows] == [8, 8] and upstream.calls == [["new"], ["a"]] and tokens == 2


@pytest.mark.asyncio
async def test_duplicates_are_embedded_once_and_returned_at_every_index() -> None:
    cache = EmbeddingCache(MemoryStore(1 << 20), EmbeddingCacheConfig(), "p:")
    upstream = Upstream(dims=3)
    texts = ["x", "yy", "x", "zzz", "yy"]
    rows, tokens = await cache.embed(TARGET, "t", "document", [MediaInput.text(t) for t in texts], upstream)
    assert [r.tolist() for r in rows] == [vector(t, 3) for t in texts]
    assert upstream.calls == [["x", "yy", "zzz"]] and tokens == 3
