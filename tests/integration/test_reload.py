"""Configuration reload in the real server process: SIGHUP under load, with a stream in
flight, and through the parent of several workers.

Two valid configurations send the LLM route to two different target models at the fake
upstream (``openai/alpha`` and ``openai/beta``); the fake records which model each request
asked for and the gateway names the target in ``x-dify-gateway-target``, so every request
is seen answered by exactly one configuration's route.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from tests.fakes.upstream import Chat, FakeUpstream
from tests.support.client import llm_request
from tests.support.daemon import read_stream_reply
from tests.support.pacing import open_loop
from tests.support.server import TEST_KEY, GatewayProcess

HEADERS = {"X-Inner-Api-Key": TEST_KEY}


def _config(fake: FakeUpstream, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "dify": {"inner_api_key": TEST_KEY},
        "server": {"request_log": False},
        "routes": [
            {
                "name": "chat",
                "match": {"type": "llm"},
                "targets": [{"model": f"openai/{model}", "api_base": fake.base_url, "api_key": "sk-reload"}],
            }
        ],
        **extra,
    }


INVALID = "routes:\n  - match: {type: llm}\n    targets: [{model: openai/gamma, no_such_key: 1}]\n"


def _write(path: Path, content: dict[str, Any] | str) -> None:
    """Replace the file atomically, as a deployment tool does (a reader never sees half of it)."""
    text = content if isinstance(content, str) else orjson.dumps(content).decode()
    partial = path.with_suffix(".tmp")
    partial.write_text(text)
    os.replace(partial, path)


def _reloads(url: str) -> dict[str, float]:
    page = httpx.get(f"{url}/metrics", timeout=5).text
    counts: dict[str, float] = {}
    for line in page.splitlines():
        if line.startswith("dify_gateway_config_reloads_total{"):
            result = line.split('result="')[1].split('"')[0]
            counts[result] = counts.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def _wait_for_reloads(url: str, total: float, within: float = 20) -> dict[str, float]:
    deadline = time.monotonic() + within
    while True:
        counts = _reloads(url)
        if sum(counts.values()) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def _target_of_one_call(url: str) -> str:
    reply = httpx.post(f"{url}/inner/api/invoke/llm", json=llm_request(stream=False), headers=HEADERS, timeout=30)
    outcome = read_stream_reply(reply.status_code, reply.content, "llm")
    assert outcome.error is None, outcome.error
    return reply.headers["x-dify-gateway-target"]


async def _load(url: str, rate: float, stop: asyncio.Event, results: list[tuple[int, str | None, str]]) -> None:
    """Open-loop LLM calls at ``rate`` per second until ``stop``; each result is
    (status, the daemon's error or None, the target header)."""
    body = orjson.dumps(llm_request(stream=False))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one() -> None:
            try:
                async with session.post(f"{url}/inner/api/invoke/llm", data=body, headers=HEADERS) as reply:
                    content = await reply.read()
                    outcome = read_stream_reply(reply.status, content, "llm")
                    results.append((reply.status, outcome.error, reply.headers.get("x-dify-gateway-target", "")))
            except aiohttp.ClientError as exc:
                results.append((-1, f"transport: {exc!r}", ""))

        await open_loop(rate, stop, one)


def test_twenty_reloads_under_400_requests_per_second_fail_nothing(tmp_path: Path, fake: FakeUpstream) -> None:
    """20 SIGHUPs cycling config B, an invalid file, config A: every request is answered,
    each by one configuration's target; the invalid file changes nothing and is counted."""
    configs: list[dict[str, Any] | str] = [_config(fake, "beta"), INVALID, _config(fake, "alpha")]
    expected_after = ["openai/beta", "openai/beta", "openai/alpha"]
    results: list[tuple[int, str | None, str]] = []
    with GatewayProcess(_config(fake, "alpha"), tmp_path) as gateway:
        assert gateway.process is not None
        path = tmp_path / "gateway.yaml"

        async def scenario() -> list[str]:
            stop = asyncio.Event()
            load = asyncio.create_task(_load(gateway.url, 400, stop, results))
            seen: list[str] = []
            try:
                for i in range(20):
                    await asyncio.sleep(0.25)
                    _write(path, configs[i % 3])
                    gateway.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
                    counts = await asyncio.to_thread(_wait_for_reloads, gateway.url, i + 1)
                    assert sum(counts.values()) == i + 1, counts
                    seen.append(await asyncio.to_thread(_target_of_one_call, gateway.url))
                await asyncio.sleep(0.25)
            finally:
                stop.set()
                await load
            return seen

        seen = asyncio.run(scenario())
        counts = _reloads(gateway.url)
        log = gateway.log()
    assert seen == [expected_after[i % 3] for i in range(20)]
    failed = [r for r in results if r[0] != 200 or r[1] is not None]
    assert failed == [], failed[:5]
    assert len(results) > 1500  # ~5 s at 400/s
    targets = {target for _, _, target in results}
    assert targets <= {"openai/alpha", "openai/beta"}, targets
    assert {"openai/alpha", "openai/beta"} <= targets
    # The fake saw exactly one call per request (no retries), each for one of the two models.
    calls = [r.model for r in fake.requests if r.path == "/v1/chat/completions"]
    assert len(calls) == len(results) + len(seen)
    assert set(calls) == {"alpha", "beta"}
    assert counts == {"applied": 13.0, "unchanged": 0.0, "invalid": 7.0}, counts
    assert "configuration reload (SIGHUP) failed, the running configuration is kept" in log
    assert "no_such_key" in log and "sk-reload" not in log


def test_a_stream_in_flight_finishes_on_the_old_route_and_the_next_call_uses_the_new(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    deltas = [f"w{i} " for i in range(16)]
    fake.script("alpha", Chat(deltas=deltas, gap_s=0.15))  # ~2.4 s
    with GatewayProcess(_config(fake, "alpha"), tmp_path) as gateway:
        assert gateway.process is not None

        async def scenario() -> tuple[str, str, str, bool]:
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    f"{gateway.url}/inner/api/invoke/llm", json=llm_request(), headers=HEADERS
                ) as reply:
                    first = await reply.content.read(64)  # the stream has begun
                    _write(tmp_path / "gateway.yaml", _config(fake, "beta"))
                    gateway.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
                    counts = await asyncio.to_thread(_wait_for_reloads, gateway.url, 1)
                    assert counts["applied"] == 1.0, counts
                    during = await asyncio.to_thread(_target_of_one_call, gateway.url)
                    rest = await reply.read()
                    outcome = read_stream_reply(reply.status, first + rest, "llm")
                    assert outcome.error is None, outcome.error
                    text = "".join(c["delta"]["message"]["content"] for c in outcome.chunks)
                    finished = bool(outcome.chunks) and outcome.chunks[-1]["delta"].get("usage") is not None
                    return reply.headers["x-dify-gateway-target"], during, text, finished

        stream_target, during, text, finished = asyncio.run(scenario())
    assert stream_target == "openai/alpha"
    assert text == "".join(deltas) and finished
    assert during == "openai/beta"
    assert [r.model for r in fake.requests] == ["alpha", "beta"]


def test_one_sighup_to_the_parent_reloads_every_worker(tmp_path: Path, fake: FakeUpstream) -> None:
    with GatewayProcess(_config(fake, "alpha"), tmp_path, workers=2, ready_timeout_s=60) as gateway:
        assert gateway.process is not None
        _write(tmp_path / "gateway.yaml", _config(fake, "beta"))
        gateway.process.send_signal(signal.SIGHUP)
        counts = _wait_for_reloads(gateway.url, 2, within=30)
        assert counts["applied"] == 2.0, counts  # summed over both workers' metrics files
        # Fresh connections land on either worker: every one answers with the new route.
        targets = {_target_of_one_call(gateway.url) for _ in range(40)}
        alive = gateway.process.poll() is None
        log = gateway.log()
    assert targets == {"openai/beta"}
    assert alive
    assert "SIGHUP: reloading the configuration in 2 worker(s)" in log
    assert log.count("configuration reload (SIGHUP) applied") == 2
