"""The systems a run compares: the gateway, the LiteLLM proxy, and the fake upstream itself
(the floor), each as a base URL, the headers its clients send and the process to watch."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import RID
from bench.procs import Server, StartError
from bench.scenarios import Models, Request

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_KEY = "sk-bench"
PROXY_KEY = "sk-bench-proxy"


@dataclass
class System:
    name: str  # one of GATEWAYS | litellm-proxy | direct | target
    kind: str  # dify | openai
    url: str
    headers: dict[str, str]
    pid: int | None = None  # the process whose CPU and RSS are measured (None: not on this machine)
    rerank_path: str = "/v1/rerank"
    notes: dict[str, object] = field(default_factory=dict)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    # BLAS/OpenMP threads spin when they cannot get a core; this box is shared by all the processes.
    env |= {"NO_PROXY": "127.0.0.1,localhost", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **extra}
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned(command: list[str], cpus: str | None) -> list[str]:
    """``command`` on the CPUs ``cpus`` (``taskset -c``: every thread and child it starts inherits them)."""
    return ["taskset", "-c", cpus, *command] if cpus else command


def start_upstream(
    latency_ms: float, chunks: int, gap_ms: float, dims: int, logs: Path, cpus: str | None = None
) -> tuple[Server, str]:
    port = free_port()
    command = [sys.executable, "-m", "bench.upstream", "--port", str(port), "--latency-ms", str(latency_ms)]
    command += ["--chunks", str(chunks), "--gap-ms", str(gap_ms), "--dims", str(dims)]
    server = Server("fake upstream", pinned(command, cpus), _env(), logs / "upstream.log", ROOT)
    url = f"http://127.0.0.1:{port}"
    server.wait_http(url + "/_bench/health", 20)
    return server, url


def _gateway_command() -> list[str]:
    script = Path(sys.executable).with_name("dify-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


# The gateway as the benchmark runs it: its governance (ledger, budgets, rate limits) by system name.
GATEWAYS = ("gateway", "gateway-off", "gateway-governed", "gateway-governed-pg")


def governance(name: str, work: Path) -> dict[str, object]:
    """The configuration blocks of each gateway variant:

    - ``gateway``: as shipped (the SQLite ledger on, no budgets or limits);
    - ``gateway-off``: no ledger (the baseline the governance costs are measured against);
    - ``gateway-governed``: SQLite ledger, budgets and rate limits counted in Redis
      (``$REDIS_URL``, else 127.0.0.1:6379), limits high enough that nothing is refused;
    - ``gateway-governed-pg``: the same with the ledger in PostgreSQL (``$DATABASE_URL``, else the
      local server's ``test`` database)."""
    sqlite = {"database_url": f"sqlite:///{work / f'usage-{name}.db'}"}
    if name == "gateway":
        return {"ledger": sqlite}
    if name == "gateway-off":
        return {"ledger": {"enabled": False}}
    limits = {
        "cache": {"redis_url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), "key_prefix": "dgw-bench:"},
        "budgets": {"default": [{"period": "day", "usd": 1_000_000}, {"period": "month", "tokens": 10**15}]},
        "rate_limits": {"default": {"rpm": 10**8, "tpm": 10**12, "user_rpm": 10**8}},
    }
    if name == "gateway-governed":
        return {"ledger": sqlite, **limits}
    postgres = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    return {"ledger": {"database_url": postgres}, **limits}


def start_gateway(
    upstream: str,
    key: str,
    workers: int,
    work: Path,
    src: Path | None,
    cpus: str | None = None,
    name: str = "gateway",
) -> tuple[Server, System]:
    """``src``: a directory holding another ``gateway/`` package to run instead of the installed one
    (e.g. ``git archive HEAD gateway | tar -x -C DIR``), with the same virtualenv. ``name``: one of
    ``GATEWAYS`` (see ``governance``)."""
    target = {"api_base": f"{upstream}/v1", "api_key": UPSTREAM_KEY}
    config: dict[str, object] = {
        "dify": {"inner_api_key": "os.environ/DIFY_INNER_API_KEY"},
        "routes": [
            {"match": {"type": "llm", "provider": "openai"}, "targets": [{"model": "openai/{model}", **target}]},
            {
                "match": {"type": "text-embedding", "provider": "openai"},
                "targets": [{"model": "openai/{model}", **target}],
            },
            {
                "match": {"type": "rerank", "provider": "openai"},
                "targets": [{"model": "cohere/{model}", "api_base": upstream, "api_key": UPSTREAM_KEY}],
            },
        ],
        **governance(name, work),
    }
    import yaml  # only local runs write configuration files

    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [*_gateway_command(), "serve", "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers)]  # always: the gateway's own default is one per CPU
    env = _env(DIFY_INNER_API_KEY=key)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src.resolve()), env.get("PYTHONPATH")]))
    server = Server(name, pinned(command, cpus), env, work / "logs" / f"{name}.log", ROOT)
    url = f"http://127.0.0.1:{port}"
    ready = server.wait_http(url + "/readyz", 60)
    system = System(name, "dify", url, {"X-Inner-Api-Key": key, "Content-Type": "application/json"}, server.pid)
    system.notes["ready_s"] = round(ready, 2)
    system.notes["source"] = str(src or ROOT)
    system.notes["revision"] = revision(src or ROOT)
    return server, system


def revision(path: Path) -> str:
    """The git commit of a checkout, with ``+changes`` when gateway/ differs from it (or the
    content of a ``REVISION`` file, for an exported tree)."""
    if (path / "REVISION").is_file():
        return (path / "REVISION").read_text().strip()
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "gateway"], capture_output=True, text=True
        )
        return head.stdout.strip() + (" +changes" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def start_proxy(
    litellm: Path, upstream: str, models: Models, work: Path, workers: int = 1, cpus: str | None = None
) -> tuple[Server, System]:
    params = {"api_base": f"{upstream}/v1", "api_key": UPSTREAM_KEY}
    config = {
        "model_list": [
            {"model_name": models.llm[1], "litellm_params": {"model": f"openai/{models.llm[1]}", **params}},
            {"model_name": models.embedding[1], "litellm_params": {"model": f"openai/{models.embedding[1]}", **params}},
            {
                "model_name": models.rerank[1],
                "litellm_params": {
                    "model": f"cohere/{models.rerank[1]}",
                    "api_base": upstream,
                    "api_key": UPSTREAM_KEY,
                },
            },
        ],
        "general_settings": {"master_key": PROXY_KEY},
    }
    import yaml

    path = work / "litellm-proxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [str(litellm), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--num_workers", str(workers)]
    env = _env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    env.pop("DATABASE_URL", None)
    server = Server("LiteLLM proxy", pinned(command, cpus), env, work / "logs" / "litellm-proxy.log", ROOT)
    url = f"http://127.0.0.1:{port}"
    ready = server.wait_http(url + "/health/liveliness", 180)
    headers = {"Authorization": f"Bearer {PROXY_KEY}", "Content-Type": "application/json"}
    system = System("litellm-proxy", "openai", url, headers, server.pid)
    system.notes["ready_s"] = round(ready, 2)
    version = subprocess.run(
        [str(litellm.with_name("python")), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    system.notes["litellm"] = version.stdout.strip() or "?"
    return server, system


def direct(upstream: str, pid: int) -> System:
    headers = {"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"}
    return System("direct", "openai", upstream, headers, pid, rerank_path="/v2/rerank")


def prime(system: System, request: Request, kind_name: str, timeout_s: float = 90) -> str | None:
    """Send one request and check its reply in full (the daemon's own reader for the gateway,
    when tests/ is at hand); returns a problem or None. Also waits out lazy imports."""
    body = request.template.replace(RID, "prime").encode()
    call = urllib.request.Request(system.url + request.path, data=body, headers=system.headers, method="POST")
    try:
        with urllib.request.urlopen(call, timeout=timeout_s) as reply:
            status, content = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, content = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return f"no reply: {exc}"
    if status != 200:
        return f"HTTP {status}: {content[:300]!r}"
    if system.kind != "dify":
        return None
    try:
        from tests.support.daemon import read_stream_reply, read_unary_reply
    except ImportError:
        return None
    if request.reply == "frames":
        outcome = read_stream_reply(status, content, "llm")
        if outcome.error or outcome.dropped:
            return f"the daemon would fail: {outcome.error or outcome.dropped[0][1]}"
        return None
    _, error = read_unary_reply(content, kind_name)
    return f"the daemon would fail: {error}" if error else None


def upstream_times(upstream: str) -> tuple[dict[str, list[float]], int]:
    """Service times the fake recorded since the last call (and forgets them)."""
    import orjson

    with urllib.request.urlopen(upstream + "/_bench/times", timeout=30) as reply:
        data = orjson.loads(reply.read())
    return data["times"], data["untagged"]


def versions() -> dict[str, str]:
    def run(*command: str) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            return "?"

    return {"python": sys.version.split()[0], "gateway": run(*_gateway_command(), "--version")}


__all__ = ["StartError", "System"]
