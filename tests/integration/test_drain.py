"""Graceful drain: SIGTERM to the real server process while slow streams are in flight."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.fakes.upstream import Chat, FakeUpstream
from tests.integration.test_cli import command, free_port, offline_env
from tests.support.client import llm_request
from tests.support.daemon import read_stream_reply

KEY = "drain-key"
STREAMS = 12
DELTAS = [f"t{i} " for i in range(12)]
GAP_S = 0.25  # each stream takes ~3 s


def start(
    tmp_path: Path, fake: FakeUpstream, grace_s: float, timeout_s: float, workers: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        orjson.dumps(
            {
                "server": {"drain_grace_s": grace_s, "drain_timeout_s": timeout_s},
                "routes": [
                    {
                        "match": {"type": "llm"},
                        "targets": [{"model": "openai/{model}", "api_base": fake.base_url, "api_key": "sk-x"}],
                    }
                ],
            }
        ).decode()
    )
    port = free_port()
    process = subprocess.Popen(
        command(
            "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)
        ),
        env=offline_env(DIFY_INNER_API_KEY=KEY),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the gateway did not start: {process.communicate()[0].decode()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the server if a test left it running, and close its pipe (never leaked to a later test)."""
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def stream(url: str, model: str, results: dict[str, tuple[int, str, bool, str | None]]) -> None:
    try:
        response = httpx.post(
            f"{url}/inner/api/invoke/llm", json=llm_request(model), headers={"X-Inner-Api-Key": KEY}, timeout=30
        )
    except httpx.TransportError as exc:
        results[model] = (-1, "", False, f"connection cut: {exc}")
        return
    outcome = read_stream_reply(response.status_code, response.content, "llm")
    text = "".join(c["delta"]["message"]["content"] for c in outcome.chunks)
    finished = any(c["delta"]["usage"] for c in outcome.chunks)
    results[model] = (response.status_code, text, finished, outcome.error)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_streams_in_flight_and_exits_cleanly(tmp_path: Path, fake: FakeUpstream, workers: int) -> None:
    """With several workers the supervisor passes SIGTERM on to each (it looks every 0.5 s)."""
    fake.default(Chat(deltas=DELTAS, gap_s=GAP_S))
    process, url = start(tmp_path, fake, grace_s=1.5, timeout_s=20, workers=workers)
    try:
        # Warm the path so every stream below is really in flight (each worker's first call).
        warm: dict[str, tuple[int, str, bool, str | None]] = {}
        for i in range(2 * workers):
            stream(url, f"warm-up{i}", warm)
        assert all(finished for _, _, finished, _ in warm.values()), warm

        results: dict[str, tuple[int, str, bool, str | None]] = {}
        threads = [threading.Thread(target=stream, args=(url, f"s{i}", results)) for i in range(STREAMS)]
        for thread in threads:
            thread.start()
        # Generous: on a loaded 2-core machine twelve fresh client connections can take seconds.
        fake.wait_until(lambda: sum(1 for r in fake.requests if (r.model or "").startswith("s")) == STREAMS, 20)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)

        # Readiness turns 503 at once (within the supervisor's 0.5 s look with several workers);
        # the instance still serves new requests in the grace.
        ready = httpx.get(f"{url}/readyz", timeout=2)
        while ready.status_code == 200 and workers > 1 and time.monotonic() - signalled < 1.0:
            time.sleep(0.05)
            ready = httpx.get(f"{url}/readyz", timeout=2)
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        late: dict[str, tuple[int, str, bool, str | None]] = {}
        late_thread = threading.Thread(target=stream, args=(url, "late", late))
        late_thread.start()

        for thread in [*threads, late_thread]:
            thread.join(timeout=30)
        output, _ = process.communicate(timeout=30)
        exited_after = time.monotonic() - signalled

        expected = "".join(DELTAS)
        for model, (status, text, finished, error) in {**results, **late}.items():
            assert status == 200, (model, status, error)
            assert error is None, (model, error)
            assert text == expected and finished, (model, text)
        assert len(results) == STREAMS and "late" in late
        assert process.returncode == 0, output.decode()
        # Exit follows the last stream, not the drain timeout.
        assert exited_after < 10, exited_after
        assert b"SIGTERM: draining" in output
    finally:
        stop(process)


def test_new_connections_are_refused_after_the_grace(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.default(Chat(deltas=DELTAS, gap_s=GAP_S))
    process, url = start(tmp_path, fake, grace_s=0.3, timeout_s=20)
    try:
        results: dict[str, tuple[int, str, bool, str | None]] = {}
        holder = threading.Thread(target=stream, args=(url, "holder", results))
        holder.start()
        fake.wait_until(lambda: any(r.model == "holder" for r in fake.requests), 10)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.8)
        refused = False
        try:
            httpx.get(f"{url}/healthz", timeout=1)
        except httpx.TransportError:
            refused = True
        assert refused, "the listener should be closed after the grace"
        holder.join(timeout=30)
        assert results["holder"][2], results  # the stream in flight still completed
        process.communicate(timeout=30)
        assert process.returncode == 0
    finally:
        stop(process)


def test_drain_timeout_cuts_what_is_still_running(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.default(Chat(deltas=[f"x{i}" for i in range(100)], gap_s=0.2))  # a 20 s stream
    process, url = start(tmp_path, fake, grace_s=0.1, timeout_s=1.0)
    try:
        results: dict[str, tuple[int, str, bool, str | None]] = {}
        holder = threading.Thread(target=stream, args=(url, "long", results))
        holder.start()
        fake.wait_until(lambda: any(r.model == "long" for r in fake.requests), 10)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        assert time.monotonic() - started < 5
        holder.join(timeout=30)
        # Past the drain timeout the server stops waiting: the stream is cut, not finished.
        status, _, finished, _ = results["long"]
        assert not finished and status in (200, -1)
    finally:
        stop(process)
