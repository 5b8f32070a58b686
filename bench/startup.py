"""Start-up time and RSS of `dify-gateway serve`: embedded defaults, and with an LLM route.

Run: .venv/bin/python bench/startup.py   (uses port 18777; no network needed)
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx


def rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    """Child processes started by any of the process's threads (model processes are started
    by their model's worker thread)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def is_model_process(pid: int) -> bool:
    try:
        return b"gateway.adapters.local.child" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def tree_rss(pid: int) -> str:
    """The process's RSS, each worker's when it is a supervisor of several, and the embedded
    models' processes (one per model, per worker)."""
    kids = children(pid)
    workers = [k for k in kids if not is_model_process(k)]
    models = [k for k in kids if is_model_process(k)] + [m for w in workers for m in children(w) if is_model_process(m)]
    text = f"{rss(pid):.0f} MB"
    if workers:
        text += " parent + workers " + ", ".join(f"{rss(w):.0f}" for w in workers) + " MB"
    if models:
        text += f" + {len(models)} model processes " + ", ".join(f"{rss(m):.0f}" for m in models) + " MB"
    return text


def run(args: list[str], label: str, wait_after: float = 0.0) -> None:
    env = dict(os.environ, DIFY_INNER_API_KEY="k", HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    t = time.monotonic()
    p = subprocess.Popen(
        ["dify-gateway", "serve", "--host", "127.0.0.1", "--port", "18777", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:
        try:
            if httpx.get("http://127.0.0.1:18777/readyz", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.01)
    ready = time.monotonic() - t
    r0 = tree_rss(p.pid)
    time.sleep(wait_after)
    r1 = tree_rss(p.pid)
    p.terminate()
    p.wait()
    print(f"{label}: ready in {ready:.2f} s, RSS at ready {r0}, RSS after {wait_after:.0f} s {r1}")


def route_file(model: str) -> str:
    path = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False).name
    Path(path).write_text(
        f"routes:\n  - match: {{type: llm}}\n    targets: [{{model: '{model}', api_base: 'http://127.0.0.1:9/v1'}}]\n"
    )
    return path


def main() -> None:
    native = route_file("openai/{model}")
    litellm = route_file("anthropic/{model}")
    one = ["--workers", "1"]
    for _ in range(3):
        run(one, "embedded defaults, 1 worker", 1)
    run(["--workers", "auto"], "embedded defaults, --workers auto", 1)
    for _ in range(2):
        run([*one, "--config", native], "an OpenAI-compatible llm route (native client, no litellm), 1 worker", 10)
    for _ in range(2):
        run([*one, "--config", litellm], "an anthropic llm route (litellm imported in the background), 1 worker", 10)


if __name__ == "__main__":
    main()
