"""The soak's servers and probes: the fake upstream with faults, the gateway on a generated
configuration (two valid variants to alternate on reload), and what is read from the gateway
process (/proc and /metrics)."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.procs import Server
from bench.systems import ROOT, UPSTREAM_KEY, _env, _gateway_command, free_port

# The cache is kept small so it is full within the first minute: after that, growth is a leak,
# not the cache filling up (its default, 64 MB per worker, takes hours to fill at this rate).
CACHE_BYTES = 1024 * 1024


def start_upstream(fault_rate: float, seed: int, logs: Path) -> tuple[Server, str]:
    port = free_port()
    command = [sys.executable, "-m", "bench.upstream", "--port", str(port), "--latency-ms", "20"]
    command += ["--chunks", "20", "--gap-ms", "10", "--fault-rate", str(fault_rate), "--fault-seed", str(seed)]
    server = Server("fake upstream", command, _env(), logs / "upstream.log", ROOT)
    url = f"http://127.0.0.1:{port}"
    server.wait_http(url + "/_bench/health", 20)
    return server, url


def config(upstream: str, variant: int, retries: int, fallback: bool) -> dict[str, Any]:
    """Variant 0 and 1 differ in the LLM target's model name only (soak-a / soak-b)."""
    llm_model = "openai/soak-a" if variant == 0 else "openai/soak-b"
    v1 = {"api_base": f"{upstream}/v1", "api_key": UPSTREAM_KEY}
    root = {"api_base": upstream, "api_key": UPSTREAM_KEY}

    def route(kind: str, model: str, target: dict[str, str], backup: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": f"soak-{kind}",
            "match": {"type": kind, "provider": "openai"},
            "targets": [{"model": model, **target}],
            "retries": retries,
        }
        if fallback:  # another backend (model name) on the same fake: it has a breaker of its own
            out["fallbacks"] = [{"model": backup, **target}]
        return out

    return {
        "server": {"request_log": False},
        "dify": {"inner_api_key": "os.environ/DIFY_INNER_API_KEY"},
        "cache": {"embeddings": {"memory_max_bytes": CACHE_BYTES}},
        "resilience": {"retry": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5}},
        "routes": [
            route("llm", llm_model, v1, llm_model + "-fallback"),
            route("text-embedding", "openai/{model}", v1, "openai/soak-embedding-fallback"),
            route("rerank", "cohere/{model}", root, "cohere/soak-rerank-fallback"),
            {"name": "soak-tts", "match": {"type": "tts"}, "targets": [{"model": "local/espeak-ng"}]},
            {"name": "soak-stt", "match": {"type": "speech2text"}, "targets": [{"model": "local/whisper-tiny.en"}]},
        ],
    }


def write_config(path: Path, body: dict[str, Any]) -> None:
    """Replace the file in one rename, so a reload never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(body, sort_keys=False))
    os.replace(tmp, path)


def start_gateway(config_path: Path, key: str, logs: Path) -> tuple[Server, str, int]:
    port = free_port()
    command = [*_gateway_command(), "serve", "--config", str(config_path), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]  # one process: its pid is the one sampled
    server = Server("gateway", command, _env(DIFY_INNER_API_KEY=key), logs / "gateway.log", ROOT)
    url = f"http://127.0.0.1:{port}"
    server.wait_http(url + "/readyz", 120)
    return server, url, port


def reload(pid: int) -> None:
    os.kill(pid, signal.SIGHUP)


def rss_mb(pid: int) -> float | None:
    """VmRSS of the process itself (its embedded-model children are not counted here)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_fds(pid: int, port: int) -> tuple[int, int] | None:
    """(open fds, of which connections accepted on ``port``). The second is the client's doing:
    a keep-alive pool stays as large as its busiest moment, so it is left out of the verdict."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return None
    inbound = _accepted(pid, port)
    return len(links), sum(link.startswith("socket:[") and link[8:-1] in inbound for link in links)


def _accepted(pid: int, port: int) -> set[str]:
    """Socket inodes of TCP connections whose local port is ``port`` (the listener excluded)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; the inode is the tenth field
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "0A":
                inodes.add(fields[9])
    return inodes


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_values(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """``name`` or ``name{labels}`` -> value for the samples of these metric names."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(names):
            continue
        m = _SAMPLE.match(line)
        if m and m.group(1) in names:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


LAG = "dify_gateway_event_loop_lag_seconds"
TASKS = "dify_gateway_asyncio_tasks"
RELOADS = "dify_gateway_config_reloads_total"


def reloads(values: dict[str, float]) -> dict[str, int] | None:
    """Reload counts by result, or None when the gateway has no such metric."""
    found = {k: v for k, v in values.items() if k.startswith(RELOADS + "{")}
    if not found:
        return None
    out = {}
    for labelled, value in found.items():
        m = re.search(r'result="([^"]*)"', labelled)
        if m:
            out[m.group(1)] = int(value)
    return out
