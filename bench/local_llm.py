"""The embedded LLM (SmolLM2-135M-Instruct on llama.cpp) through `dify-gateway serve`.

For each setting of ``server.local_llm`` (threads, instances): time to ready and the LLM
model process's RSS; one request at a time, time to the first text frame and decoding
speed (completion tokens / seconds after the first frame) for a short answer and a long
one; then 4 clients at once (answers per second and tokens per second in all). Last, a
route with the response cache: the same greedy request repeated, hit latency against the
miss that stored it.

    python -m bench.local_llm [--requests 10] [--hits 200] [--port 18790]

Needs the `.venv` with the `local` extra (`./scripts/quickstart` or `./scripts/test`).
The numbers depend on the machine: compare the lines of one run with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.procs import Server, rss_mb
from bench.startup import children, is_model_process
from bench.stats import percentile
from bench.wire import FrameReader

KEY = "bench-local-llm"
SHORT = "What is the capital of France? Answer in one word."
LONG = "Write a short story about a robot who learns to paint."


@dataclass
class Answer:
    first_text_s: float
    total_s: float
    completion_tokens: int
    text: str


def _body(question: str, max_tokens: int, temperature: float = 0.0) -> dict[str, Any]:
    return {
        "tenant_id": "bench",
        "user_id": "bench",
        "provider": "openai",
        "model": "any",
        "mode": "chat",
        "completion_params": {"temperature": temperature, "max_tokens": max_tokens},
        "prompt_messages": [{"role": "user", "content": question}],
        "tools": None,
        "stop": None,
        "stream": True,
    }


async def ask(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Answer:
    """One streamed call, read frame by frame; raises on an error frame or a non-200."""
    started = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    tokens = 0
    reader = FrameReader()
    async with client.stream("POST", f"{url}/inner/api/invoke/llm", json=body, headers={"X-Inner-Api-Key": KEY}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for data in r.aiter_raw():
            for payload in reader.feed(data):
                envelope = orjson.loads(payload)
                if envelope.get("error"):
                    raise RuntimeError(f"error frame: {envelope['error']}")
                delta = envelope["data"]["delta"]
                if delta["message"]["content"]:
                    if first is None:
                        first = time.perf_counter() - started
                    text.append(delta["message"]["content"])
                if delta.get("usage"):
                    tokens = int(delta["usage"]["completion_tokens"])
    total = time.perf_counter() - started
    return Answer(first if first is not None else total, total, tokens, "".join(text))


def _config(directory: Path, threads: int, instances: int, cache: bool) -> Path:
    route: dict[str, Any] = {"match": {"type": "llm"}, "targets": [{"model": "local/smollm2-135m-instruct"}]}
    if cache:
        route["cache"] = {"ttl_s": 600}
    config = {
        "server": {"local_llm": {"threads": threads, "instances": instances}, "request_log": False},
        "ledger": {"enabled": False},
        "routes": [route],
    }
    path = directory / f"llm-{threads}t-{instances}i{'-cache' if cache else ''}.yaml"
    path.write_text(orjson.dumps(config).decode())
    return path


def _start(config: Path, port: int, directory: Path) -> tuple[Server, float]:
    env = dict(os.environ, DIFY_INNER_API_KEY=KEY, DIFY_GATEWAY_DATA_DIR=str(directory))
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = Server(config.stem, command, env, directory / f"{config.stem}.log", Path.cwd())
    return server, server.wait_http(f"http://127.0.0.1:{port}/readyz", 120)


def _model_rss(pid: int) -> list[float]:
    return [rss_mb(child) for child in children(pid) if is_model_process(child)]


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms  p99 {percentile(ordered, 0.99) * 1000:7.1f} ms"


async def _one_at_a_time(url: str, requests: int) -> list[str]:
    lines = []
    async with httpx.AsyncClient(timeout=120) as client:
        await ask(client, url, _body(SHORT, 16))  # warm-up
        for label, question, max_tokens in (("short answer", SHORT, 32), ("long answer", LONG, 128)):
            answers = [await ask(client, url, _body(question, max_tokens)) for _ in range(requests)]
            first = [a.first_text_s for a in answers]
            speeds = [
                (a.completion_tokens - 1) / (a.total_s - a.first_text_s)
                for a in answers
                if a.completion_tokens > 1 and a.total_s > a.first_text_s
            ]
            tokens = statistics.median(a.completion_tokens for a in answers)
            lines.append(
                f"  {label:<13} first text {_ms(first)}   decoding {statistics.median(speeds):6.1f} tokens/s"
                f"   {tokens:.0f} tokens, whole answer p50 {statistics.median(a.total_s for a in answers):.2f} s"
            )
    return lines


async def _concurrent(url: str, clients: int, each: int) -> str:
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as client:
        started = time.perf_counter()

        async def worker() -> list[Answer]:
            return [await ask(client, url, _body(LONG, 64)) for _ in range(each)]

        results = await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    answers = [a for batch in results for a in batch]
    tokens = sum(a.completion_tokens for a in answers)
    return (
        f"  {clients} clients at once: {len(answers) / elapsed:5.2f} answers/s,"
        f" {tokens / elapsed:6.1f} tokens/s in all, whole answer {_ms([a.total_s for a in answers])}"
    )


async def _cache(url: str, hits: int) -> list[str]:
    async with httpx.AsyncClient(timeout=120) as client:
        body = _body(SHORT, 32)
        miss = await ask(client, url, body)
        replies = [await ask(client, url, body) for _ in range(hits)]
    assert all(r.text == miss.text for r in replies), "a cached answer differs from the stored one"
    return [
        f"  miss (stored):  {miss.total_s * 1000:7.1f} ms",
        f"  {hits} hits:     {_ms([r.total_s for r in replies])}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10, help="requests per one-at-a-time measurement")
    parser.add_argument("--hits", type=int, default=200, help="repeated requests in the cache measurement")
    parser.add_argument("--port", type=int, default=18790)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    print(f"embedded LLM through dify-gateway serve, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-local-llm-") as temp:
        directory = Path(temp)
        for threads, instances in ((1, 1), (2, 1), (1, 2)):
            server, ready_s = _start(_config(directory, threads, instances, cache=False), args.port, directory)
            try:
                rss = ", ".join(f"{m:.0f}" for m in _model_rss(server.pid))
                print(f"threads {threads}, instances {instances}: ready in {ready_s:.2f} s; model processes {rss} MB")
                if instances == 1:
                    for line in asyncio.run(_one_at_a_time(url, args.requests)):
                        print(line, flush=True)
                print(asyncio.run(_concurrent(url, 4, max(1, args.requests // 4))), flush=True)
            finally:
                server.stop()
        server, _ = _start(_config(directory, 1, 1, cache=True), args.port, directory)
        try:
            print("response cache (route cache, temperature 0, the short answer):")
            for line in asyncio.run(_cache(url, args.hits)):
                print(line, flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
