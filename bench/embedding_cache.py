"""Embedding cache: a fully cached 64-text batch, and the cost of a paused Redis.

The gateway runs as its own process (`dify-gateway serve`, one worker) with a private
redis-server and a loopback fake upstream; requests are sent one at a time from this
process, so each latency is the gateway's time plus one loopback HTTP round trip (the
`/healthz` floor is printed beside it).

The last lines call the ASGI app in this process with no HTTP at all: the gateway's own
time for a cached request, with Redis alone and with the in-process L1 in front of it.

Run: PATH=.venv/bin:$PATH .venv/bin/python bench/embedding_cache.py [requests]
     (default 500; no network needed)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.upstream import Embeddings, FakeUpstream
from tests.support.redis import RedisProcess, free_port

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
KEY = "bench-key"


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p = lambda q: ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000  # noqa: E731
    return f"p50 {p(0.5):6.2f} ms  p99 {p(0.99):6.2f} ms  max {ordered[-1] * 1000:6.2f} ms"


def body(texts: list[str], model: str) -> dict[str, object]:
    return {
        "tenant_id": "t1",
        "user_id": "u",
        "provider": "openai",
        "model": model,
        "texts": texts,
        "input_type": "document",
    }


def timed(client: httpx.Client, path: str, payload: dict[str, object] | None, n: int) -> tuple[list[float], int]:
    times, failures = [], 0
    for _ in range(n):
        started = time.perf_counter()
        reply = client.post(path, json=payload) if payload is not None else client.get(path)
        times.append(time.perf_counter() - started)
        if reply.status_code != 200 or (payload is not None and reply.json()["error"]):
            failures += 1
    return times, failures


def main() -> None:
    redis_server = RedisProcess().start()
    with FakeUpstream() as fake:
        fake.default(Embeddings(dims=384))
        fake.script("big", *[Embeddings(dims=1536)] * 100_000)
        port = free_port()
        config = {
            "dify": {"inner_api_key": KEY},
            "cache": {"redis_url": redis_server.url, "breaker_cooldown_s": 5.0},
            "routes": [
                {
                    "match": {"type": "text-embedding"},
                    "targets": [{"model": "openai/{model}", "api_base": fake.base_url, "api_key": "x"}],
                }
            ],
        }
        path = Path(tempfile.mkdtemp()) / "bench.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "NO_PROXY": "127.0.0.1"}
        server = subprocess.Popen(
            ["dify-gateway", "serve", "--config", str(path), "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, headers={"X-Inner-Api-Key": KEY}, timeout=30) as client:
                while True:
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.05)
                path_ = "/inner/api/invoke/text-embedding"
                texts = [f"cached chunk number {i} of a document" for i in range(64)]
                for model in ("small", "big"):
                    client.post(path_, json=body(texts, model))  # fill the cache
                time.sleep(8)  # let the background litellm import finish: it competes for the CPU
                floor, _ = timed(client, "/healthz", None, N)
                print(f"HTTP floor (GET /healthz)                  {percentiles(floor)}")
                for model, dims in (("small", 384), ("big", 1536)):
                    times, failures = timed(client, path_, body(texts, model), N)
                    print(f"64 texts x {dims:4} dims, all cached            {percentiles(times)}  failures {failures}")
                fresh = iter(range(10**9))
                mixed = lambda: body(texts[:8] + [f"new text {next(fresh)}" for _ in range(8)], "small")  # noqa: E731

                def mixed_run(n: int) -> tuple[list[float], int]:
                    times, failures = [], 0
                    for _ in range(n):
                        started = time.perf_counter()
                        reply = client.post(path_, json=mixed())
                        times.append(time.perf_counter() - started)
                        failures += reply.status_code != 200 or bool(reply.json()["error"])
                    return times, failures

                healthy, f1 = mixed_run(N)
                print(f"16 texts (8 cached, 8 new), Redis healthy   {percentiles(healthy)}  failures {f1}")
                redis_server.pause()
                paused, f2 = mixed_run(N)
                redis_server.resume()
                print(f"16 texts (8 cached, 8 new), Redis paused    {percentiles(paused)}  failures {f2}")
            server.terminate()
            import asyncio

            from gateway.adapters.litellm_loader import load_litellm_sync

            load_litellm_sync()  # as in a warmed-up gateway
            for l1_bytes, label in ((0, "Redis only"), (32 * 1024 * 1024, "L1 + Redis")):
                times = asyncio.run(in_process(redis_server.url, fake.base_url, l1_bytes, N * 2))
                print(f"64 x 384 cached, gateway time, {label:10}  {percentiles(times)}")
        finally:
            server.terminate()
            server.wait()
            redis_server.stop()


async def in_process(redis_url: str, upstream: str, l1_bytes: int, n: int) -> list[float]:
    """Gateway time alone: the ASGI app called directly, no HTTP server or client."""
    import asyncio

    import orjson

    from gateway.app import create_app
    from gateway.config import parse_config

    config = {
        "dify": {"inner_api_key": KEY},
        "cache": {"redis_url": redis_url, "key_prefix": f"inproc{l1_bytes}:", "embeddings": {"l1_max_bytes": l1_bytes}},
        "routes": [
            {
                "match": {"type": "text-embedding"},
                "targets": [{"model": "openai/{model}", "api_base": upstream, "api_key": "x"}],
            }
        ],
    }
    app = create_app(parse_config(config, "<bench>", env={}))
    payload = orjson.dumps(body([f"cached chunk number {i} of a document" for i in range(64)], "small"))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/inner/api/invoke/text-embedding",
        "headers": [(b"x-inner-api-key", KEY.encode()), (b"content-length", str(len(payload)).encode())],
        "query_string": b"",
    }

    async def call() -> None:
        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(message: dict[str, object]) -> None:
            pass

        await app(scope, receive, send)  # type: ignore[arg-type]

    await call()
    await asyncio.sleep(0.3)  # the first call's cache writes land
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    await app.backends.aclose()
    if app.embedding_cache is not None:
        await app.embedding_cache.store.aclose()
    return times


if __name__ == "__main__":
    main()
