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
    r0 = rss(p.pid)
    time.sleep(wait_after)
    r1 = rss(p.pid)
    p.terminate()
    p.wait()
    print(f"{label}: ready in {ready:.2f} s, RSS at ready {r0:.0f} MB, RSS after {wait_after:.0f} s {r1:.0f} MB")


def route_file(model: str) -> str:
    path = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False).name
    Path(path).write_text(
        f"routes:\n  - match: {{type: llm}}\n    targets: [{{model: '{model}', api_base: 'http://127.0.0.1:9/v1'}}]\n"
    )
    return path


def main() -> None:
    native = route_file("openai/{model}")
    litellm = route_file("anthropic/{model}")
    for _ in range(3):
        run([], "embedded defaults", 1)
    for _ in range(2):
        run(["--config", native], "an OpenAI-compatible llm route (native client, no litellm)", 10)
    for _ in range(2):
        run(["--config", litellm], "an anthropic llm route (litellm imported in the background)", 10)


if __name__ == "__main__":
    main()
