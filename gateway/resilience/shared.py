"""Breakers shared between replicas through Redis (``resilience.breaker.shared``).

When a breaker opens here, the instant it may probe again is written to Redis (with a TTL
of the cooldown); every second each replica reads the entries of the backends it knows
and opens its own breakers until then. Replicas do not share probes or counts: each still
decides to close on its own successful probe. Redis trouble never touches requests: reads
and writes go through the store it is given (the cache's Redis store, with its short timeout
and its own breaker), which never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from typing import Protocol

from gateway.resilience.health import TargetHealth

log = logging.getLogger("dify_gateway")

SYNC_INTERVAL_S = 1.0


class SharedStore(Protocol):
    """The key-value store the entries live in (``gateway.cache.redis_store.RedisStore``)."""

    async def get_many(self, keys: list[str]) -> list[bytes | None]: ...

    def put_many(self, items: list[tuple[str, bytes]], ttl_s: int) -> None: ...

    async def aclose(self) -> None: ...


class SharedBreakers:
    def __init__(self, store: SharedStore, health: TargetHealth, key_prefix: str) -> None:
        self._store = store
        self._health = health
        self._prefix = f"{key_prefix}breaker:"
        self._task: asyncio.Task[None] | None = None

    def redis_key(self, target_key: str) -> str:
        return self._prefix + hashlib.sha256(target_key.encode()).hexdigest()[:32]

    def start(self) -> None:
        self._health.on_open = self.publish
        self._task = asyncio.get_running_loop().create_task(self._sync_forever())

    def publish(self, target_key: str, retry_in_s: float) -> None:
        until = time.time() + retry_in_s
        ttl = max(1, math.ceil(retry_in_s))
        self._store.put_many([(self.redis_key(target_key), repr(until).encode())], ttl)

    async def sync(self) -> int:
        """Open local breakers that another replica opened; how many it opened."""
        states = [s for s in self._health.states() if s.breaker is not None]
        if not states:
            return 0
        values = await self._store.get_many([self.redis_key(s.key) for s in states])
        opened = 0
        now_wall, now = time.time(), time.monotonic()
        for state, value in zip(states, values, strict=True):
            if value is None or state.breaker is None:
                continue
            try:
                until = float(value)
            except ValueError:
                continue
            if until > now_wall and state.state == "closed":
                state.breaker.open_until(now + (until - now_wall))
                opened += 1
        return opened

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            try:
                opened = await self.sync()
            except Exception:  # never let the loop die; the store already counts its errors
                log.exception("reading shared breakers failed")
                continue
            if opened:
                log.info("opened %d breaker(s) that another replica opened", opened)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._store.aclose()
