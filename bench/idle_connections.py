"""Many idle keep-alive connections to one gateway process: what holding them costs.

Run: .venv/bin/python -m bench.idle_connections [--connections 10000] [--idle-s 20] [--keep-alive-s 120]

Starts ``dify-gateway serve`` (one worker, no routes, ``server.keep_alive_timeout_s`` set to
``--keep-alive-s``), opens ``--connections`` connections that each send one ``GET /healthz``
and keep the connection open, holds them idle for ``--idle-s``, then asks a sample of them
again. Prints the gateway's CPU and RSS for opening and for idling, and how many of the
sampled connections still answered (all of them, when the keep-alive timeout is longer than
the idle time; none when it is shorter: idle connections are closed, as they should be).
The client needs a file-descriptor limit above ``--connections`` (``ulimit -n``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import Server
from bench.systems import free_port

ROOT = Path(__file__).resolve().parents[1]
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
BATCH = 500  # connections opened before their replies are read
SAMPLE = 200  # connections asked again after idling


def cpu_s_and_rss_mb(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return cpu_s, int(line.split()[1]) / 1024
    return cpu_s, 0.0


async def _ask(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """Read one /healthz reply (its JSON body ends with ``}``)."""
    try:
        await asyncio.wait_for(reader.readuntil(b"}"), timeout_s)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return False
    return True


async def measure(port: int, pid: int, connections: int, idle_s: float) -> dict[str, float | int]:
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    cpu0, rss0 = cpu_s_and_rss_mb(pid)
    started = time.monotonic()
    failed = 0
    for first in range(0, connections, BATCH):
        batch = [await asyncio.open_connection("127.0.0.1", port) for _ in range(min(BATCH, connections - first))]
        for _, writer in batch:
            writer.write(REQUEST)
        answers = await asyncio.gather(*(_ask(reader, 10) for reader, _ in batch))
        failed += answers.count(False)
        opened += batch
        print(f"  {len(opened):>6} connections open", file=sys.stderr, end="\r")
    open_s = time.monotonic() - started
    cpu1, rss1 = cpu_s_and_rss_mb(pid)
    print(file=sys.stderr)
    await asyncio.sleep(idle_s)
    cpu2, rss2 = cpu_s_and_rss_mb(pid)
    sample = opened[:: max(1, len(opened) // SAMPLE)]
    for _, writer in sample:
        writer.write(REQUEST)
    still = sum(await asyncio.gather(*(_ask(reader, 5) for reader, _ in sample)))
    for _, writer in opened:
        writer.close()
    return {
        "connections": len(opened),
        "first_replies_failed": failed,
        "open_s": round(open_s, 2),
        "open_cpu_s": round(cpu1 - cpu0, 2),
        "rss_idle_mb": round(rss0, 1),
        "rss_held_mb": round(rss1, 1),
        "kb_per_connection": round((rss1 - rss0) * 1024 / max(1, len(opened)), 1),
        "idle_s": idle_s,
        "idle_cpu_s": round(cpu2 - cpu1, 2),
        "rss_after_idle_mb": round(rss2, 1),
        "sampled": len(sample),
        "sampled_still_answering": still,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000, help="connections to hold (default 10000)")
    parser.add_argument("--idle-s", type=float, default=20.0, help="how long they stay idle (default 20)")
    parser.add_argument("--keep-alive-s", type=float, default=120.0, help="server.keep_alive_timeout_s (default 120)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = args.connections + 64
    if soft < needed:
        if hard < needed:
            sys.exit(f"the file-descriptor limit is {hard}; {needed} are needed (raise it: ulimit -n {needed})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "gateway.json"
        config.write_text(json.dumps({"routes": [], "server": {"keep_alive_timeout_s": args.keep_alive_s}}))
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--workers", "1"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        env = dict(os.environ, DIFY_INNER_API_KEY="bench-key", DIFY_GATEWAY_WORKERS="1")
        server = Server("gateway", command, env, Path(work) / "gateway.log", ROOT)
        try:
            server.wait_http(f"http://127.0.0.1:{port}/readyz", 60)
            print(f"gateway ready on port {port}; opening {args.connections} keep-alive connections", file=sys.stderr)
            result = asyncio.run(measure(port, server.pid, args.connections, args.idle_s))
        finally:
            server.stop()
    print(
        f"opened {result['connections']} connections in {result['open_s']} s "
        f"({result['first_replies_failed']} first replies failed), gateway CPU {result['open_cpu_s']} s, "
        f"RSS {result['rss_idle_mb']} -> {result['rss_held_mb']} MB ({result['kb_per_connection']} KB each)\n"
        f"idle {result['idle_s']:g} s: gateway CPU {result['idle_cpu_s']} s, RSS {result['rss_after_idle_mb']} MB\n"
        f"then {result['sampled_still_answering']} of {result['sampled']} sampled connections still answered"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
