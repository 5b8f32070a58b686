"""The ``dify-gateway`` command as a user runs it: a real process, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.cpus import auto_workers

CLOSED_PROXY = "http://127.0.0.1:9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if (not k.startswith("DIFY_") or k == "DIFY_GATEWAY_DATA_DIR")}
    env.update({"HTTP_PROXY": CLOSED_PROXY, "HTTPS_PROXY": CLOSED_PROXY, "NO_PROXY": "127.0.0.1,localhost"})
    env.update(extra)
    return env


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_serve_becomes_ready_fast_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "server: {drain_grace_s: 0.2}\n"
        "routes:\n  - match: {type: llm}\n    targets: [{model: 'openai/{model}', api_base: 'http://127.0.0.1:9/v1'}]\n"
    )
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        command("serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)),
        env=offline_env(DIFY_INNER_API_KEY="k"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ready_after = None
        while time.monotonic() - started < 20:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    ready_after = time.monotonic() - started
                    break
            except httpx.TransportError:
                time.sleep(0.02)
        assert ready_after is not None, "the gateway never became ready"
        # Generous bound for a loaded 2-core machine (two workers start here, beside other tests'
        # servers); benchmarks state the measured figure.
        assert ready_after < 10.0
        assert rss_mb(process.pid) > 0
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
        # A complete drain is a clean exit, not "killed by SIGTERM".
        assert process.returncode == 0, output.decode()
        assert b"Application shutdown complete" in output
        # No --workers and no DIFY_GATEWAY_WORKERS: one worker per available CPU.
        assert f"{auto_workers()} worker(s)".encode() in output, output.decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_without_key_explains_what_to_set() -> None:
    result = subprocess.run(command("serve"), env=offline_env(), capture_output=True, timeout=30)
    assert result.returncode == 2
    assert b"no inner API key: set DIFY_INNER_API_KEY" in result.stderr


def test_check_config_prints_the_route_table_without_secrets(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "routes:\n  - name: chat\n    match: {type: llm, provider: openai, model: 'gpt-*'}\n"
        "    targets: [{model: 'openai/{model}', api_key: os.environ/OPENAI_KEY}]\n"
        "cache: {redis_url: 'redis://:redis-secret@cache:6379/0'}\n"
        "serverless: {enabled: true, default_tenant: dev, api_key: serverless-secret}\n"
        "dify: {api_url: 'http://api:5001', passthrough: false}\n"
    )
    result = subprocess.run(
        command("check-config", "--config", str(config)),
        env=offline_env(OPENAI_KEY="sk-very-secret", DIFY_INNER_API_KEY="inner-secret"),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    for secret in (b"sk-very-secret", b"inner-secret", b"redis-secret", b"serverless-secret"):
        assert secret not in result.stdout
    report = orjson.loads(result.stdout)
    assert report["inner_api_key"] == "<set>"
    assert report["forwarding"] == "to http://api:5001; model calls without a route are answered with a no-route error"
    assert report["embedding_cache"]["store"] == "redis (single) + in-process L1"
    assert report["serverless"]["api_key"] == "<set>" and report["serverless"]["default_tenant"] == "dev"
    assert report["routes"] == [
        {
            "route": "chat",
            "types": ["llm"],
            "provider": "openai",
            "model": "gpt-*",
            "tenants": None,
            "targets": [{"model": "openai/{model}", "weight": 1.0, "api_key": "<set>"}],
            "fallbacks": [],
            "balancing": "weighted",
            "retries": 2,
            "max_attempts": 3,
            "timeouts": {"connect_s": 10.0, "ttft_s": 60.0, "idle_s": 60.0, "total_s": 230.0},
        }
    ]


@pytest.mark.parametrize("subcommand", ["serve", "check-config"])
def test_invalid_config_fails_with_file_and_key(tmp_path: Path, subcommand: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("routes:\n  - match: {type: llm}\n    targets: [{model: m, wieght: 2}]\n")
    result = subprocess.run(
        command(subcommand, "--config", str(config)), env=offline_env(), capture_output=True, timeout=30
    )
    assert result.returncode == 2
    assert f"{config}: invalid configuration".encode() in result.stderr
    assert b"routes[0].targets[0].wieght: Extra inputs are not permitted" in result.stderr
    assert b"Traceback" not in result.stderr


def test_check_config_names_the_backend_of_each_target(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "routes:\n  - name: chat\n    match: {type: llm}\n"
        "    targets: [{model: 'openai/{model}'}, {model: 'anthropic/claude', backend: litellm}]\n"
        "    fallbacks: [{model: 'hosted_vllm/m', api_base: 'http://vllm:8000/v1'}]\n"
    )
    result = subprocess.run(command("check-config", "--config", str(config)), env=offline_env(), capture_output=True)
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["backends"] == {
        "chat": {"openai/{model}": "openai", "anthropic/claude": "litellm", "hosted_vllm/m": "openai"}
    }


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("{model: anthropc/claude}", b"route 'chat', target 'anthropc/claude': litellm does not know the provider"),
        ("{model: tei/bge, api_base: 'http://tei'}", b"route 'chat', target 'tei/bge': backend tei cannot serve llm"),
        (
            "{model: hosted_vllm/m, backend: openai}",
            b"route 'chat', target 'hosted_vllm/m': backend openai needs api_base",
        ),
    ],
)
def test_check_config_reports_backend_problems(tmp_path: Path, target: str, expected: bytes) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"routes:\n  - name: chat\n    match: {{type: llm}}\n    targets: [{target}]\n")
    result = subprocess.run(command("check-config", "--config", str(config)), env=offline_env(), capture_output=True)
    assert result.returncode == 2
    assert expected in result.stderr and b"routes[0]" in result.stderr
    assert b"Traceback" not in result.stderr


def test_workers_do_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL to the parent (an OOM kill, a hard stop): its workers drain and exit too."""
    config = tmp_path / "gateway.yaml"
    config.write_text("server: {drain_grace_s: 0.1, drain_timeout_s: 2}\nroutes: []\n")
    port = free_port()
    process = subprocess.Popen(
        command("serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"),
        env=offline_env(DIFY_INNER_API_KEY="k"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            workers = [
                int(c) for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")
            ]
            time.sleep(0.1)
        assert len(workers) == 2, "the workers did not start"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        process.kill()
        process.wait()
        gone_by = time.monotonic() + 10
        alive = workers
        while alive and time.monotonic() < gone_by:
            time.sleep(0.1)
            alive = [w for w in workers if Path(f"/proc/{w}").exists() and _not_zombie(w)]
        assert not alive, f"workers {alive} outlived their parent"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
