"""Liveness under load: ``GET /healthz`` latency while cached embeddings flood the gateway.

The gateway runs as its own process (``dify-gateway serve``, one worker by default) with
a loopback fake upstream and the in-process embedding cache; every flood request is a
cache hit, so the flood is the gateway's own work and nothing else. A second process
floods it over keep-alive connections as fast as they answer; this process samples
``/healthz`` on its own connection every ``--interval-ms`` and prints p50/p99/max.

Run: .venv/bin/python bench/healthz_flood.py [--seconds 20] [--connections 64] [--workers 1]
     (no network needed)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = "bench-key"
PATH = "/inner/api/invoke/text-embedding"


def _request(port: int) -> bytes:
    body = orjson.dumps(
        {
            "tenant_id": "t1",
            "user_id": "u",
            "provider": "openai",
            "model": "small",
            "texts": ["a cached text", "another cached text"],
            "input_type": "document",
        }
    )
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-inner-api-key: {KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_reply(reader: asyncio.StreamReader) -> int:
    """One HTTP/1.1 reply with a Content-Length (all of the gateway's unary replies); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _flood(port: int, connections: int, seconds: float) -> None:
    request = _request(port)
    deadline = time.monotonic() + seconds
    counts = {"ok": 0, "other": 0}

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            writer.write(request)
            status = await _read_reply(reader)
            counts["ok" if status == 200 else "other"] += 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(connections)))
    elapsed = time.monotonic() - started
    print(orjson.dumps({"rate": counts["ok"] / elapsed, **counts}).decode(), flush=True)


async def _sample(port: int, seconds: float, interval_s: float) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode()
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        writer.write(request)
        if await _read_reply(reader) != 200:
            raise RuntimeError("/healthz did not answer 200")
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(interval_s)
    writer.close()
    return samples


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    return f"p50 {at(0.5):7.2f} ms  p99 {at(0.99):7.2f} ms  max {ordered[-1] * 1000:7.2f} ms  ({len(ordered)} samples)"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(port: int) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the gateway did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--interval-ms", type=float, default=10)
    parser.add_argument("--flood-port", type=int, help=argparse.SUPPRESS)  # the flooding child process
    args = parser.parse_args()
    if args.flood_port:
        import uvloop

        uvloop.run(_flood(args.flood_port, args.connections, args.seconds))
        return

    import httpx
    import yaml

    from tests.fakes.upstream import Embeddings, FakeUpstream

    with FakeUpstream() as fake:
        fake.default(Embeddings(dims=384))
        port = _free_port()
        config = {
            "dify": {"inner_api_key": KEY},
            "server": {"request_log": False},
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
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--host", "127.0.0.1"]
        server = subprocess.Popen(
            [*command, "--port", str(port), "--workers", str(args.workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_ready(port)
            reply = httpx.post(
                f"http://127.0.0.1:{port}{PATH}",
                content=_request(port).split(b"\r\n\r\n", 1)[1],
                headers={"x-inner-api-key": KEY, "content-type": "application/json"},
            )
            if reply.status_code != 200 or reply.json()["error"]:
                raise RuntimeError(f"the embedding request failed: {reply.text[:200]}")
            time.sleep(8)  # the background litellm import competes for the CPU: let it finish
            idle = asyncio.run(_sample(port, 3, args.interval_ms / 1000))
            print(f"/healthz, idle             {_summary(idle)}")
            flood = subprocess.Popen(
                [sys.executable, __file__, "--flood-port", str(port), "--seconds", str(args.seconds + 1)]
                + ["--connections", str(args.connections)],
                stdout=subprocess.PIPE,
            )
            time.sleep(1)  # the flood reaches its rate
            cpu_before = _cpu_s(server.pid)
            loaded = asyncio.run(_sample(port, args.seconds - 1, args.interval_ms / 1000))
            out, _ = flood.communicate(timeout=args.seconds + 30)
            cpu_s = _cpu_s(server.pid) - cpu_before
            result = orjson.loads(out.strip().splitlines()[-1])
            print(f"/healthz, under the flood  {_summary(loaded)}")
            print(f"flood: {result['rate']:.0f} cached embedding req/s over {args.connections} connections, ", end="")
            print(f"{result['ok']} answered 200, {result['other']} other")
            # Under a shared CPU the rate depends on the neighbours; CPU per request does not much.
            per_request_ms = cpu_s / (result["rate"] * (args.seconds - 1)) * 1000
            print(f"gateway CPU: {per_request_ms:.3f} ms per request (sampled window)")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
