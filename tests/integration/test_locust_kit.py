"""The Locust kit (deploy/loadtest/locustfile.py), run as an operator runs it: ``locust --headless``
against a real gateway (its upstream the loopback fake), and against a scripted Dify stand-in whose
replies break the daemon's rules one way each. Locust's own CSV reports are what is checked.

Locust runs in subprocesses only: it monkey-patches its process with gevent. All runs go at once.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.protocol.envelope import error_frame
from gateway.protocol.framing import encode_frame
from tests.fakes.dify import DifyRequest, FakeDify, Frames, Json, frames
from tests.fakes.upstream import Chat, FakeUpstream
from tests.support.server import TEST_KEY, GatewayServer, gateway_config, one_target_route

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = "deploy/loadtest/locustfile.py"
MODELS = [
    "--llm=openai:gpt-4o-mini",
    "--embedding=openai:text-embedding-3-small",
    "--rerank=cohere:rerank-v3.5",
    "--tts=openai:tts-1",
    "--moderation=openai:omni-moderation-latest",
]
ALL_TYPES = ["llm-stream", "llm", "embed", "embed-cached", "rerank", "tts", "moderation"]


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    prefix: Path

    def wait(self) -> LocustResult:
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"locust did not end within 60 s:\n{self.output()[-3000:]}") from None
        try:
            stats, failures = _rows(self.prefix, "stats"), _rows(self.prefix, "failures")
        except FileNotFoundError:
            raise AssertionError(f"locust wrote no CSV report:\n{self.output()[-3000:]}") from None
        return LocustResult(self.process.returncode, stats, failures, self.output())

    def output(self) -> str:
        return self.prefix.with_name(f"{self.prefix.name}.log").read_text(errors="replace")


@dataclass
class LocustResult:
    returncode: int
    stats: list[dict[str, str]]
    failures: list[dict[str, str]]
    output: str  # stdout and stderr

    def entry(self, name: str, kind: str = "POST") -> dict[str, str]:
        rows = [r for r in self.stats if r["Type"] == kind and r["Name"] == name]
        assert len(rows) == 1, f"no {kind} {name} entry in {[(r['Type'], r['Name']) for r in self.stats]}"
        return rows[0]

    def counts(self, name: str, kind: str = "POST") -> tuple[int, int]:
        row = self.entry(name, kind)
        return int(row["Request Count"]), int(row["Failure Count"])

    def errors(self, name: str) -> list[str]:
        return [r["Error"] for r in self.failures if r["Name"] == name]


def _rows(prefix: Path, table: str) -> list[dict[str, str]]:
    path = prefix.with_name(f"{prefix.name}_{table}.csv")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def start_locust(host: str, prefix: Path, *options: str, seconds: int, key: str | None = TEST_KEY) -> Run:
    """``locust -f deploy/loadtest/locustfile.py --headless`` from the checkout's root, as the docs say."""
    # No proxies (the test session points them at a closed port) and no inherited DIFY_ settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if "proxy" not in k.lower() and (not k.startswith("DIFY_") or k == "DIFY_GATEWAY_DATA_DIR")
    }
    env["NO_PROXY"] = "127.0.0.1,localhost"
    if key is not None:
        env["DIFY_INNER_API_KEY"] = key  # the key from the environment; other runs pass --inner-api-key
    command = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "-u", "5", "-r", "5"]
    command += ["-t", f"{seconds}s", "--host", host, "--csv", str(prefix), "--loglevel", "WARNING", *options]
    # Output to a file: the runs are waited for one after the other, and a full pipe would stall the others.
    with prefix.with_name(f"{prefix.name}.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Run(process, prefix)


def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    """An LLMResultChunk the daemon accepts, without usage."""
    message = {"role": "assistant", "content": text, "name": None, "tool_calls": []}
    delta = {"index": 0, "message": message, "usage": None, "finish_reason": finish}
    return {"model": "m", "prompt_messages": [], "system_fingerprint": None, "delta": delta}


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayServer]:
    routes = [
        one_target_route("llm", "openai", "openai/{model}", upstream.base_url),
        one_target_route("text-embedding", "openai", "openai/{model}", upstream.base_url),
        one_target_route("rerank", "cohere", "cohere/{model}", upstream.root_url),
        one_target_route("tts", "openai", "openai/{model}", upstream.base_url),
        one_target_route("moderation", "openai", "openai/{model}", upstream.base_url),
    ]
    with GatewayServer(gateway_config(routes)) as server:
        yield server


@dataclass
class Runs:
    results: dict[str, LocustResult]
    dify_requests: list[DifyRequest]  # what the stand-in received from runs "c" and "d"
    chats: list[dict[str, Any]]  # the chat requests the gateway's run brought to the fake upstream


@pytest.fixture(scope="module")
def runs(gateway: GatewayServer, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Four headless runs at once: a clean one and a wrong key against the gateway, two against the stand-in."""
    tmp = tmp_path_factory.mktemp("locust")
    upstream.reset()
    # Streams of about half a second whose first delta comes at once: the time to first frame must show it.
    upstream.script("gpt-4o-mini", Chat(deltas=["Hel", "lo", " world"], gap_s=0.1))
    with FakeDify() as dify:
        # /c: each type breaks one rule; /d: the remaining stream rules.
        dify.script("/c/inner/api/invoke/llm", Frames([*frames(chunk("Hel")), error_frame("the model fell over")]))
        dify.script("/c/inner/api/invoke/tts", Frames(frames({"result": "49443303"}, {"result": 7})))
        dify.script("/c/inner/api/invoke/text-embedding", Json({"data": None, "error": "quota exceeded"}))
        unscored = [{"index": i, "text": f"doc {i}"} for i in range(5)]  # the daemon requires a score
        dify.script("/c/inner/api/invoke/rerank", Json({"data": {"model": "m", "docs": unscored}, "error": ""}))
        # /c/inner/api/invoke/moderation is not scripted: Dify's 404 for an unknown path.
        dify.script("/d/inner/api/invoke/llm", Frames(frames(chunk("Hi"), chunk("", finish="stop"))))
        dify.script("/d/inner/api/invoke/tts", Frames([b"\x0e" + encode_frame(b"{}")[1:]]))
        mix = "--mix=llm-stream=2,llm=1,embed=1,embed-cached=1,rerank=1,tts=1,moderation=1"
        started = {
            "gateway": start_locust(gateway.url, tmp / "gw", *MODELS, mix, "--think-time=0", seconds=6),
            "wrong key": start_locust(
                gateway.url,
                tmp / "key",
                *MODELS,
                "--mix=llm-stream=1,embed=1",
                "--inner-api-key=not-the-key",
                "--think-time=0.05",
                key=None,
                seconds=3,
            ),
            "c": start_locust(
                dify.url + "/c/",  # a path prefix, with a trailing slash
                tmp / "c",
                *MODELS,
                "--mix=llm-stream=1,tts=1,embed=1,rerank=1,moderation=1",
                "--tenants=3",
                "--users-per-tenant=2",
                "--think-time=0.05",
                seconds=3,
            ),
            "d": start_locust(
                dify.url + "/d", tmp / "d", *MODELS, "--mix=llm-stream=1,tts=1", "--think-time=0.05", seconds=3
            ),
        }
        results = {name: run.wait() for name, run in started.items()}
        received = list(dify.requests)
    chats = [r.json for r in upstream.requests if r.path == "/v1/chat/completions"]
    upstream.reset()  # the session's fake: no script left behind for later modules
    return Runs(results, received, chats)


def test_every_type_is_sent_and_none_fails_against_a_gateway(runs: Runs) -> None:
    ok = runs.results["gateway"]
    assert ok.returncode == 0, ok.output[-3000:]
    for name in ALL_TYPES:
        requests, failures = ok.counts(name)
        assert requests > 0 and failures == 0, (name, requests, failures)
    assert ok.failures == []
    assert {c.get("stream", False) for c in runs.chats} == {True, False}  # both LLM types reached the upstream
    assert {c["model"] for c in runs.chats} == {"gpt-4o-mini"} and {c["max_tokens"] for c in runs.chats} == {32}


def test_streams_report_the_time_to_first_frame_as_an_entry_of_their_own(runs: Runs) -> None:
    ok = runs.results["gateway"]
    for name in ("llm-stream", "tts"):
        ttft, failures = ok.counts(name, "TTFT")
        assert 0 < ttft <= ok.counts(name)[0] and failures == 0
        assert float(ok.entry(name, "TTFT")["Average Response Time"]) <= float(ok.entry(name)["Average Response Time"])
    # The first frame is timed when it arrives, not when the stream ends (0.1 s between deltas upstream).
    assert int(ok.entry("llm-stream", "TTFT")["Median Response Time"]) + 200 < int(
        ok.entry("llm-stream")["Median Response Time"]
    )
    assert {r["Name"] for r in ok.stats if r["Type"] == "TTFT"} == {"llm-stream", "tts"}
    assert not [r for r in runs.results["c"].stats if r["Type"] == "TTFT"]  # failed streams report none


def test_a_wrong_key_fails_every_call_with_the_gateways_answer(runs: Runs) -> None:
    key = runs.results["wrong key"]
    assert key.returncode == 1  # Locust's exit code when any request failed
    for name in ("llm-stream", "embed"):
        requests, failures = key.counts(name)
        assert requests == failures > 0
        [error] = key.errors(name)
        assert "HTTP 401" in error and "X-Inner-Api-Key" in error, error


@pytest.mark.parametrize(
    ("run", "name", "message"),
    [
        ("c", "llm-stream", "error: the model fell over"),  # an error frame after a good one
        ("c", "tts", "invalid frame (the daemon drops it)"),  # result 7 is not a string
        ("c", "embed", "error: quota exceeded"),
        ("c", "rerank", "invalid reply (the daemon fails with: validate request failed"),
        ("c", "moderation", 'HTTP 404: {"code":"not_found"'),
        ("d", "llm-stream", "the stream ended without the final usage"),
        ("d", "tts", "framing: magic number mismatch: 14"),
    ],
)
def test_each_broken_reply_fails_with_the_reason(runs: Runs, run: str, name: str, message: str) -> None:
    result = runs.results[run]
    requests, failures = result.counts(name)
    assert requests == failures > 0, (requests, failures)
    [error] = result.errors(name)
    assert message in error, error


def test_tenants_users_prefix_and_key_reach_the_server_as_given(runs: Runs) -> None:
    seen = [r for r in runs.dify_requests if r.path.startswith("/c/")]
    assert {r.path.removeprefix("/c/inner/api/invoke/") for r in seen} == {
        "llm",
        "tts",
        "text-embedding",
        "rerank",
        "moderation",
    }
    assert {r.headers["x-inner-api-key"] for r in seen} == {TEST_KEY}
    users: dict[str, set[str]] = {}
    for r in seen:
        users.setdefault(r.json["tenant_id"], set()).add(r.json["user_id"])
    assert len(users) == 3 and all(len(u) == 2 for u in users.values())
    assert all(uuid.UUID(t) and all(uuid.UUID(u) for u in us) for t, us in users.items())
    assert len(set().union(*users.values())) == 6  # each user belongs to one tenant
    tts = next(r for r in seen if r.path.endswith("/tts"))
    assert list(tts.json) == ["user_id", "type", "provider", "model", "content_text", "voice", "tenant_id"]
    assert (tts.json["provider"], tts.json["model"], tts.json["voice"]) == ("openai", "tts-1", "alloy")
    llm = next(r for r in seen if r.path.endswith("/llm"))
    assert "@@RID@@" not in llm.body.decode() and llm.json["stream"] is True
