"""The shared store: Redis (single, cluster or sentinel), fail-open.

A cache must never make a request slower or fail it. Every Redis operation runs under one
time budget (``timeout_ms``): the caller stops waiting at the deadline whatever redis-py
does, the socket timeouts equal the budget, and redis-py's own retries are off (each retry
would cost another budget). Failures and timeouts are misses; consecutive ones open a
circuit breaker, and while it is open Redis is not touched at all. Writes run in background
tasks, bounded in number.

A timed-out command is cancelled inside redis-py, which then disconnects that connection
(``Connection.read_response``/``send_packed_command`` close it on any BaseException), so
a reply that arrives late is never read as the answer to a later command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any, TypeVar

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo

from gateway import __version__
from gateway.cache.store import BreakerState, StoreStats
from gateway.config import CacheConfig
from gateway.resilience.breaker import CircuitBreaker

log = logging.getLogger("dify_gateway")

_T = TypeVar("_T")
RedisClient = Redis | RedisCluster

# Concurrent Redis operations per store; below the pools' connection limits so an overload
# waits (within the budget) instead of failing with "too many connections".
MAX_CONCURRENCY = 32
POOL_CONNECTIONS = 100
# Items per background SET pipeline, so one huge batch cannot outgrow the time budget.
WRITE_CHUNK = 128
CLOSE_WAIT_S = 1.0
WARM_UP_S = 2.0


class RedisStore:
    """``get_many``/``put_many``/``aclose`` (the VectorStore protocol), plus ``warm_up`` for
    start-up and ``drain`` to wait for background writes. Keys are stored as key_prefix + key
    (the key_prefix argument, empty by default: the callers' keys carry their namespace)."""

    name = "redis"

    def __init__(
        self,
        client: RedisClient,
        *,
        timeout_s: float,
        breaker: CircuitBreaker,
        key_prefix: str = "",
        max_pending_writes: int = 1000,
        max_concurrency: int = MAX_CONCURRENCY,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.breaker = breaker
        self.key_prefix = key_prefix
        self.stats = StoreStats()
        self._timeout_s = timeout_s
        self._max_pending = max_pending_writes
        self._slots = asyncio.Semaphore(max_concurrency)
        self._on_close = on_close
        self._pending = 0  # items in unfinished background writes
        self._tasks: set[asyncio.Task[None]] = set()  # background writes, kept until done
        self._attempts: set[asyncio.Task[Any]] = set()  # Redis operations, kept until done

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        names = [self.key_prefix + key for key in keys]
        client = self.client
        if isinstance(client, RedisCluster):
            # Keys may live in many slots: one MGET per slot, pipelined per node, no transaction.
            values = await self._run(lambda: client.mget_nonatomic(names))
        else:
            values = await self._run(lambda: client.mget(names))
        if values is None:
            self.stats.misses += len(keys)
            return [None] * len(keys)
        found: list[bytes | None] = []
        for value in values:
            if isinstance(value, bytes):
                self.stats.hits += 1
                self.stats.bytes_read += len(value)
                found.append(value)
            else:
                self.stats.misses += 1
                found.append(None)
        return found

    def put_many(self, items: list[tuple[str, bytes]], ttl_s: int) -> None:
        if not items:
            return
        room = self._max_pending - self._pending
        if self.breaker.state != "closed":
            room = 0  # writes never probe: reads do, and a write is worth less than a read
        accepted = items[: max(room, 0)]
        self.stats.dropped_writes += len(items) - len(accepted)
        for start in range(0, len(accepted), WRITE_CHUNK):
            chunk = accepted[start : start + WRITE_CHUNK]
            self._pending += len(chunk)
            task = asyncio.create_task(self._write(chunk, ttl_s))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def is_cluster(self) -> bool:
        """Whether keys may live on several nodes (a script's keys must then share one slot)."""
        return isinstance(self.client, RedisCluster)

    def script(self, source: str) -> Callable[[list[str], list[str | int | float]], Awaitable[Any | None]]:
        """A Lua script to run under the store's time budget and breaker: the returned
        coroutine function takes keys (key_prefix is added) and arguments, and gives the
        script's reply, or None if Redis failed, timed out or the breaker is open. The script
        is sent by EVALSHA (loaded on first use: redis-py retries NOSCRIPT with SCRIPT LOAD)."""
        compiled = self.client.register_script(source)

        async def run(keys: list[str], args: list[str | int | float]) -> Any | None:
            names = [self.key_prefix + key for key in keys]
            return await self._run(lambda: compiled(keys=names, args=args))

        return run

    def tiers(self) -> list[tuple[str, StoreStats]]:
        return [(self.name, self.stats)]

    async def warm_up(self, timeout_s: float = WARM_UP_S) -> bool:
        """Connect ahead of the first request, with a generous budget; whether Redis answered.

        A cluster client's first command learns the slot map and parses the COMMAND table
        (~40 ms): paid inside a request's 50 ms budget, that would be a timeout. Call it at
        start-up, off the request path. Never raises, and leaves the breaker alone."""
        try:
            async with asyncio.timeout(timeout_s):
                if isinstance(self.client, RedisCluster):
                    await self.client.initialize()
                await self.client.ping()
        except Exception as exc:
            log.warning("redis cache: not reachable at start-up (%s); requests will run without it", type(exc).__name__)
            return False
        return True

    async def drain(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Wait up to ``timeout_s`` for the background writes started so far."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def aclose(self) -> None:
        await self.drain()
        leftovers = self._tasks | self._attempts
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=CLOSE_WAIT_S)
        try:
            await self.client.aclose()
            if self._on_close is not None:
                await self._on_close()
        except Exception as exc:  # closing a broken connection must not fail shutdown
            log.debug("redis cache: error while closing: %s", type(exc).__name__)

    async def _write(self, items: list[tuple[str, bytes]], ttl_s: int) -> None:
        async def pipeline() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for key, value in items:
                pipe.set(self.key_prefix + key, value, ex=ttl_s)
            return await pipe.execute()

        try:
            if self.breaker.state != "closed":
                self.stats.dropped_writes += len(items)
            elif await self._run(pipeline) is not None:
                self.stats.bytes_written += sum(len(value) for _, value in items)
        finally:
            self._pending -= len(items)

    async def _run(self, operation: Callable[[], Awaitable[_T]]) -> _T | None:
        """Run one operation within the budget; None if it failed, timed out or was refused.

        The operation runs in its own task and the caller waits on ``asyncio.wait``, not
        ``asyncio.timeout``: cancelling redis-py does not always stop it on Python 3.11
        (its ``asyncio.wait_for`` around socket writes can swallow a cancellation, a CPython
        bug fixed in 3.12), and the caller must be back at the deadline regardless. A
        cancelled attempt that carries on is still bounded by the socket timeouts."""
        if not self.breaker.allow():
            self.stats.breaker = self.breaker.state
            return None
        before = self.breaker.state
        reached_redis = False

        async def attempt() -> _T:
            nonlocal reached_redis
            async with self._slots:
                reached_redis = True
                return await operation()

        task = asyncio.create_task(attempt())
        self._attempts.add(task)
        task.add_done_callback(self._attempt_done)
        verdict: bool | None = None  # None: no verdict on Redis' health (cancelled, or saturated here)
        try:
            done, _ = await asyncio.wait((task,), timeout=self._timeout_s)
            if not done:
                task.cancel()
                raise TimeoutError
            result = task.result()
            verdict = True
            return result
        except asyncio.CancelledError:
            task.cancel()  # our caller went away
            raise
        except Exception as exc:  # TimeoutError, redis errors, OSError: all mean "miss"
            self.stats.errors += 1
            if reached_redis:
                verdict = False
            log.debug("redis cache: %s failed: %s", "operation" if reached_redis else "slot wait", type(exc).__name__)
            return None
        finally:
            if verdict is True:
                self.breaker.record_success()
            elif verdict is False:
                self.breaker.record_failure()
            else:
                self.breaker.release()
            self._note_breaker(before)

    def _attempt_done(self, task: asyncio.Task[Any]) -> None:
        self._attempts.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned attempt's error is already counted

    def _note_breaker(self, before: BreakerState) -> None:
        after = self.breaker.state
        self.stats.breaker = after
        if after == before:
            return
        if after == "closed":
            log.info("redis cache: reachable again, using it")
        elif before == "closed":
            log.warning("redis cache: unavailable, serving without it (circuit breaker open)")


def _no_retry() -> Retry:
    # redis-py 8 retries ConnectionError/TimeoutError 10 times with exponential backoff by
    # default (Redis(...), RedisCluster(...), and the Sentinel's own clients): each retry
    # would cost another timeout. The store's breaker is the retry policy.
    return Retry(NoBackoff(), 0)


def _driver_info() -> DriverInfo:
    # Given explicitly, because otherwise redis-py reads its package metadata for every new
    # connection (~1 ms of blocking CPU each): 64 reconnects after a Redis hiccup stalled the
    # event loop for ~80 ms. Also names the gateway in CLIENT LIST.
    return DriverInfo(lib_version=version("redis")).add_upstream_driver("dify-gateway", __version__)


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"cache.sentinels: {address!r} is not host:port")
    return host.strip("[]"), int(port)


def _split_command_name(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # As redis-py does: a first argument like "CONFIG GET" is sent as two arguments.
    first = args[0]
    if isinstance(first, str):
        return tuple(first.encode().split()) + args[1:]
    if isinstance(first, bytes) and b" " in first:
        return tuple(first.split()) + args[1:]
    return args


_HIREDIS_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """``connection_class`` with commands packed by hiredis, not redis-py's Python packer.

    redis-py's synchronous client packs with hiredis when it is installed; its asyncio client
    always packs in Python (a bytes join per argument). A limits check is one EVALSHA of about
    24 arguments per request: ~19 µs of CPU in Python, ~2.6 µs in hiredis; the embedding
    cache's batched writes gain the same way. The bytes are identical (tested)."""
    made = _HIREDIS_CLASSES.get(connection_class)
    if made is None:

        def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
            try:
                return [hiredis.pack_command(_split_command_name(args))]
            except TypeError:  # an argument hiredis does not take: redis-py's packer says why
                return connection_class.pack_command(self, *args)

        made = type(f"Hiredis{connection_class.__name__}", (connection_class,), {"pack_command": pack_command})
        _HIREDIS_CLASSES[connection_class] = made
    return made


def create_redis_store(config: CacheConfig, *, key_prefix: str = "") -> RedisStore:
    """A store for ``config``; connects lazily, so a Redis that is down does not fail start-up.

    ``config.key_prefix`` is not applied here: the cache's key builder puts it in every key.
    ``key_prefix`` is an extra namespace of this store's own (tests use one per test)."""
    budget = config.timeout_ms / 1000
    connection: dict[str, Any] = {
        "socket_timeout": budget,
        "socket_connect_timeout": budget,
        "retry": _no_retry(),
        "driver_info": _driver_info(),
        # redis-py 8 speaks RESP3 by default: HELLO (Redis >= 6 only) plus a maintenance-
        # notifications handshake on every new connection. RESP2 works with any Redis and
        # reconnects in one round trip; the store needs nothing from RESP3.
        "protocol": 2,
    }
    url = config.redis_url.get_secret_value() if config.redis_url is not None else None
    on_close: Callable[[], Awaitable[None]] | None = None
    client: RedisClient
    if config.redis_mode == "cluster":
        assert url is not None  # CacheConfig requires it
        client = RedisCluster.from_url(url, max_connections=POOL_CONNECTIONS, **connection)
    elif config.redis_mode == "sentinel":
        options = parse_url(url) if url is not None else {}
        auth: dict[str, Any] = {
            name: value for name, value in options.items() if name in ("username", "password", "db")
        }
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            [_split_address(address) for address in config.sentinels],
            sentinel_kwargs=dict(connection),  # the sentinels' own clients would retry too
            **connection,
        )
        client = sentinel.master_for(
            config.sentinel_master,
            ssl=bool(url and url.startswith("rediss://")),
            max_connections=POOL_CONNECTIONS,
            **auth,
        )
        on_close = sentinel.aclose
    else:
        if url is None:
            raise ValueError("cache.redis_url is not set")
        client = Redis.from_url(url, max_connections=POOL_CONNECTIONS, **connection)
        pool = client.connection_pool  # its class follows the URL: TCP, TLS or a unix socket
        pool.connection_class = hiredis_packing(pool.connection_class)
    return RedisStore(
        client,
        timeout_s=budget,
        breaker=CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s),
        key_prefix=key_prefix,
        max_pending_writes=config.max_pending_writes,
        on_close=on_close,
    )
