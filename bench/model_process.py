"""What running an embedded model in its own process costs per call.

Compares, for the same engine and inputs, a call on a worker thread of this process (how
the models ran before they had processes of their own) with the same call through the
model's supervised process (``gateway.adapters.local.slot``): the difference is the IPC
(pickling the request and the float32 result, two socket hops, two thread hand-offs).
Also reports each model process's RSS.

    python -m bench.model_process [--calls 200] [--texts 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.adapters.local.embedding import _encode, load_e5
from gateway.adapters.local.runtime import LocalModels
from gateway.adapters.local.slot import ModelSlot, _loaded
from gateway.catalog import EMBEDDING_MODEL, MODERATION_MODEL, TTS_MODEL


async def _timed(calls: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(min(20, calls)):  # warm-up
        await call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _line(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{name:<44} p50 {statistics.median(ordered):8.3f} ms   p99 {p99:8.3f} ms"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main() -> None:
    # As the gateway sets it for its model processes; before the first model loads here too,
    # or the in-thread baseline would run with spinning OpenMP threads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--texts", type=int, default=16)
    args = parser.parse_args()
    texts = [f"short text number {i} about the weather in spring" for i in range(args.texts)]
    loop = asyncio.get_running_loop()

    # In this process, on a worker thread: the baseline.
    engine = load_e5()
    thread = ThreadPoolExecutor(max_workers=1)

    async def in_thread() -> Any:
        return await loop.run_in_executor(thread, _encode, engine, texts, False)

    async def noop_in_thread() -> Any:
        return await loop.run_in_executor(thread, _loaded, None)

    # Through the model's process.
    models = LocalModels()
    await models.preload([EMBEDDING_MODEL, TTS_MODEL, MODERATION_MODEL])
    slot: ModelSlot[Any] = models._e5

    async def in_process() -> Any:
        return await slot.run(_encode, texts, False, timeout_s=30, where="bench")

    async def noop_in_process() -> Any:
        return await slot.run(_loaded, timeout_s=30, where="bench")

    print(f"{args.calls} calls each, {args.texts} texts per embedding call (384-d float32)")
    results = {
        "no-op, worker thread": await _timed(args.calls, noop_in_thread),
        "no-op, model process": await _timed(args.calls, noop_in_process),
        f"embed {args.texts} texts, worker thread": await _timed(args.calls, in_thread),
        f"embed {args.texts} texts, model process": await _timed(args.calls, in_process),
    }
    for name, samples in results.items():
        print(_line(name, samples))
    names = list(results)
    ipc = statistics.median(results[names[1]]) - statistics.median(results[names[0]])
    embed = statistics.median(results[names[3]]) - statistics.median(results[names[2]])
    print(f"IPC cost per call (p50 difference): no-op {ipc:.3f} ms, embedding {embed:.3f} ms")
    for name, pid in models.processes().items():
        print(f"RSS of {name}'s process: {_rss_mb(pid):.0f} MB")
    models.close()
    thread.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
