"""How long ``/healthz`` waits while one big request is being handled (event-loop stalls).

Starts ``dify-gateway serve`` (embedded defaults, one worker) from a source tree, polls
``/healthz`` every 10 ms on its own connection while one large invocation runs, and prints
the poll latencies. Also times ``orjson.loads`` of a body of ``server.max_body_bytes``, which
runs on the event loop before any handler logic.

Run: .venv/bin/python bench/loop_stall.py [--tree DIR] [--config FILE] [--mb 20] [--path moderation|tts]
     (--tree: another checkout, e.g. one exported with ``git archive``; default: this one)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-inner-key"
WORDS = "the quick brown fox jumps over the lazy dog while we walk to the park in the sun ".split()


def big_text(n_bytes: int) -> str:
    line = " ".join(WORDS) + ".\n"
    return (line * (n_bytes // len(line) + 1))[:n_bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(tree: Path, port: int, log: Path, config: Path | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFY_")}
    env.update({"DIFY_INNER_API_KEY": KEY, "NO_PROXY": "127.0.0.1", "PYTHONPATH": str(tree)})
    command = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if config is not None:
        command += ["--config", str(config.resolve())]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the gateway did not become ready:\n{log.read_text()}")


def poll(url: str, stop: threading.Event, samples: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            client.get(f"{url}/healthz")
            samples.append(time.perf_counter() - t0)
            time.sleep(0.01)


def body_for(path: str, text: str) -> bytes:
    common = {"tenant_id": "t", "user_id": "u", "provider": "langgenius/openai/openai"}
    if path == "moderation":
        return orjson.dumps({**common, "type": "moderation", "model": "omni-moderation-latest", "text": text})
    return orjson.dumps({**common, "type": "tts", "model": "tts-1", "content_text": text, "voice": "alloy"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--config", type=Path, default=None, help="default: the embedded defaults")
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--path", choices=["moderation", "tts"], default="moderation")
    args = parser.parse_args()

    max_body = 64 * 1024 * 1024
    doc = orjson.dumps({"tenant_id": "t", "text": big_text(max_body - 100)})
    parse = []
    for _ in range(3):
        t0 = time.perf_counter()
        orjson.loads(doc)
        parse.append(time.perf_counter() - t0)
    print(f"orjson.loads of a {len(doc) / 2**20:.0f} MiB body: {min(parse) * 1000:.0f} ms (best of 3)")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        process = start(args.tree.resolve(), port, Path(tmp) / "gateway.log", args.config)
        try:
            body = body_for(args.path, big_text(int(args.mb * 2**20)))
            idle: list[float] = []
            stop = threading.Event()
            poller = threading.Thread(target=poll, args=(url, stop, idle))
            poller.start()
            time.sleep(1.0)
            stop.set()
            poller.join()
            busy: list[float] = []
            stop = threading.Event()
            poller = threading.Thread(target=poll, args=(url, stop, busy))
            poller.start()
            time.sleep(0.2)
            t0 = time.perf_counter()
            reply = httpx.post(
                f"{url}/inner/api/invoke/{args.path}",
                content=body,
                headers={"X-Inner-Api-Key": KEY, "Content-Type": "application/json"},
                timeout=300,
            )
            took = time.perf_counter() - t0
            time.sleep(0.2)
            stop.set()
            poller.join()
        finally:
            process.terminate()
            process.wait(timeout=30)
    head = reply.content[:160].decode(errors="replace")
    print(f"{args.path} of {args.mb:g} MiB: HTTP {reply.status_code} in {took:.2f} s: {head}")
    for name, samples in (("idle", idle), ("during the request", busy)):
        ms = sorted(s * 1000 for s in samples)
        print(
            f"/healthz {name}: n={len(ms)} p50={statistics.median(ms):.1f} ms "
            f"p99={ms[int(len(ms) * 0.99) - 1]:.1f} ms max={ms[-1]:.1f} ms"
        )


if __name__ == "__main__":
    main()
