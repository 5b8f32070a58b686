"""The per-item embedding cache: look up every input, embed only the misses, keep order.

For one request: inputs are keyed (``keys.py``); duplicates in the batch share one key;
the store is read in one round trip; the misses are embedded in one upstream call (which
the caller splits into provider batches) and written back off the response path; the
reply is assembled by key, in request order, so a hit can never land at a miss's index.

Single-flight: a miss that another request in this process is already embedding is not
sent again: the request waits for that answer. If the other request fails (or is
cancelled), the waiter embeds the input itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.adapters.base import EmbeddingVector, InputType, MediaInput
from gateway.cache.codec import FLOAT32, Vector, decode_vector, encode_vector
from gateway.cache.keys import KeyBuilder, scope_for, target_fingerprint
from gateway.cache.store import VectorStore
from gateway.config import EmbeddingCacheConfig
from gateway.errors import UpstreamUnavailable
from gateway.routing import Target

# Embeds the given inputs: (vectors in input order, tokens spent).
Fetch = Callable[[list[MediaInput]], Awaitable[tuple[Sequence[EmbeddingVector], int]]]


@dataclass(slots=True)
class CacheStats:
    hits: int = 0  # inputs answered from the store
    misses: int = 0  # inputs embedded upstream by this process
    shared: int = 0  # inputs answered by another request's upstream call (single-flight)
    corrupt: int = 0  # stored values that failed their checks (treated as misses)


class EmbeddingCache:
    def __init__(self, store: VectorStore, config: EmbeddingCacheConfig, key_prefix: str) -> None:
        self.store = store
        self.stats = CacheStats()
        self._config = config
        self._prefix = key_prefix
        self._inflight: dict[str, asyncio.Future[Vector | None]] = {}

    async def embed(
        self, target: Target, tenant_id: str, input_type: InputType, inputs: list[MediaInput], fetch: Fetch
    ) -> tuple[list[Vector], int]:
        """One float32 vector per input, in input order, and the tokens spent upstream."""
        builder = KeyBuilder(
            self._prefix, scope_for(tenant_id, self._config.scope), target_fingerprint(target), input_type
        )
        keys = [builder.key(item) for item in inputs]
        first: dict[str, MediaInput] = {}
        for key, item in zip(keys, inputs, strict=True):
            first.setdefault(key, item)
        unique = list(first)
        rows = self._decode(unique, await self.store.get_many(unique))
        self.stats.hits += len(rows)
        missing = [k for k in unique if k not in rows]
        tokens = 0
        if missing:
            tokens = await self._fill(missing, first, rows, fetch)
        tokens += await self._agree_on_dims(unique, set(missing), first, rows, fetch)
        return [rows[k] for k in keys], tokens

    def _decode(self, keys: list[str], values: list[bytes | None]) -> dict[str, Vector]:
        rows: dict[str, Vector] = {}
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue
            vector = decode_vector(value)
            if vector is None:
                self.stats.corrupt += 1
                continue
            rows[key] = vector
        return rows

    async def _fill(
        self, missing: list[str], first: dict[str, MediaInput], rows: dict[str, Vector], fetch: Fetch
    ) -> int:
        """Embed what nobody is embedding yet, wait for the rest; returns tokens spent."""
        loop = asyncio.get_running_loop()
        lead = [k for k in missing if k not in self._inflight]
        waits = [(k, self._inflight[k]) for k in missing if k in self._inflight]
        mine: dict[str, asyncio.Future[Vector | None]] = {k: loop.create_future() for k in lead}
        self._inflight.update(mine)
        tokens = 0
        try:
            if lead:
                tokens += await self._fetch_and_store(lead, first, rows, fetch)
                for key in lead:
                    mine[key].set_result(rows[key])
        finally:
            for key, future in mine.items():
                if not future.done():
                    future.set_result(None)  # failed or cancelled: waiters embed it themselves
                if self._inflight.get(key) is future:
                    del self._inflight[key]
        retry: list[str] = []
        for key, future in waits:
            row = await asyncio.shield(future)
            if row is None:
                retry.append(key)
            else:
                rows[key] = row
                self.stats.shared += 1
        if retry:
            tokens += await self._fetch_and_store(retry, first, rows, fetch)
        return tokens

    async def _fetch_and_store(
        self, keys: list[str], first: dict[str, MediaInput], rows: dict[str, Vector], fetch: Fetch
    ) -> int:
        vectors, tokens = await fetch([first[k] for k in keys])
        fresh = [np.asarray(v, dtype=FLOAT32) for v in vectors]
        self.stats.misses += len(keys)
        rows.update(zip(keys, fresh, strict=True))
        self.store.put_many([(k, encode_vector(v)) for k, v in zip(keys, fresh, strict=True)], self._config.ttl_s)
        return tokens

    async def _agree_on_dims(
        self, keys: list[str], fresh: set[str], first: dict[str, MediaInput], rows: dict[str, Vector], fetch: Fetch
    ) -> int:
        """Vectors of different lengths mean the model behind the target changed: stored ones
        that differ from the fresh ones are stale. With nothing fresh there is no telling which
        stored ones are current, so all of them are embedded again (and the store corrected)."""
        if len({len(rows[k]) for k in keys}) <= 1:
            return 0
        if fresh:
            expected = len(rows[next(iter(fresh))])
            stale = [k for k in keys if len(rows[k]) != expected]
        else:
            stale = list(keys)
        tokens = await self._fetch_and_store(stale, first, rows, fetch)
        if len({len(rows[k]) for k in keys}) > 1:
            raise UpstreamUnavailable("upstream returned vectors of different lengths for one model")
        return tokens
