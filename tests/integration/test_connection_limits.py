"""What a hostile or broken client may cost a real gateway process: slow headers, slow or
endless bodies, huge headers, and the in-flight cap. Raw sockets from this process, the
gateway (``dify-gateway serve``, one worker) on loopback with short deadlines, and a fake
upstream for the invocations that must keep being answered meanwhile."""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fakes.dify import FakeDify, Json, dify_fixtures
from tests.fakes.upstream import Embeddings, FakeUpstream
from tests.integration.test_cli import command, offline_env
from tests.support.server import TEST_KEY, GatewayProcess, gateway_config

HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.5
MAX_IN_FLIGHT = 10
EMBED = "/inner/api/invoke/text-embedding"

dify_server, dify = dify_fixtures()


@pytest.fixture(scope="module")
def gateway(
    upstream: FakeUpstream, dify_server: FakeDify, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    route = {
        "match": {"type": "text-embedding"},
        "targets": [{"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "x"}],
    }
    config = gateway_config(
        [route],
        server={
            "header_timeout_s": HEADER_TIMEOUT_S,
            "body_timeout_s": BODY_TIMEOUT_S,
            "max_in_flight": MAX_IN_FLIGHT,
            "drain_grace_s": 0,
        },
        dify={"inner_api_key": TEST_KEY, "api_url": dify_server.url},
    )
    with GatewayProcess(config, tmp_path_factory.mktemp("limits")) as process:
        yield process


def embed_body(texts: list[str], model: str = "small") -> bytes:
    payload = {"tenant_id": "t1", "user_id": "u", "provider": "openai", "model": model, "texts": texts}
    return orjson.dumps(payload)


def post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: t\r\nx-inner-api-key: {TEST_KEY}\r\ncontent-type: application/json\r\n"
    return head.encode() + b"content-length: %d\r\n\r\n" % len(body) + body


GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n"


async def read_reply(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = b"" if head_only else await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0][9:12]), headers, body


async def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(read_reply(reader, head_only=data.startswith(b"HEAD ")), 10)
    finally:
        writer.close()


class Sampler:
    """Times ``/healthz`` and a (cached) embedding invocation, each on its own keep-alive
    connection, every 50 ms until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.times: dict[str, list[float]] = {"healthz": [], "invoke": []}
        self.statuses: set[int] = set()
        self._stop = asyncio.Event()

    async def _loop(self, name: str, request: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        while not self._stop.is_set():
            started = time.perf_counter()
            writer.write(request)
            status, _, _ = await asyncio.wait_for(read_reply(reader), 10)
            self.times[name].append(time.perf_counter() - started)
            self.statuses.add(status)
            await asyncio.sleep(0.05)
        writer.close()

    async def during(self, attack: Callable[[], Awaitable[Any]]) -> Any:
        body = embed_body(["a text that stays cached"])
        tasks = [
            asyncio.create_task(self._loop("healthz", GET_HEALTHZ)),
            asyncio.create_task(self._loop("invoke", post(EMBED, body))),
        ]
        try:
            return await attack()
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)

    def p90_ms(self, name: str) -> float:
        return statistics.quantiles(self.times[name], n=10)[-1] * 1000


async def baseline(port: int) -> dict[str, float]:
    """p90 of both probes with nothing else going on: the machine's own floor right now."""
    sampler = Sampler(port)
    await sampler.during(lambda: asyncio.sleep(1.0))
    return {name: sampler.p90_ms(name) for name in sampler.times}


async def until_closed(
    reader: asyncio.StreamReader, trickle: Callable[[], Coroutine[Any, Any, None]], started: float
) -> tuple[bytes, float]:
    """Run ``trickle`` until the server closes the connection; what it sent, and when (s)."""
    sending = asyncio.create_task(trickle())
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 15):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        sending.cancel()
    return received, time.monotonic() - started


async def slow_client(port: int, first: bytes, drip: bytes) -> tuple[bytes, float]:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(first)

    async def trickle() -> None:
        while True:
            await asyncio.sleep(1.0)
            writer.write(drip)  # one more byte (or chunk) a second

    try:
        return await until_closed(reader, trickle, started)
    finally:
        writer.close()


def assert_fast(sampler: Sampler, floor: dict[str, float]) -> None:
    """Under 100 ms at the 90th percentile, on top of this machine's floor measured just before."""
    for name, times in sampler.times.items():
        assert len(times) >= 10, (name, times, sampler.times)
        assert sampler.p90_ms(name) < 100 + floor[name], (name, sampler.p90_ms(name), floor[name])


def test_slow_headers_and_slow_or_endless_bodies_are_closed_by_the_deadlines(gateway: GatewayProcess) -> None:
    async def run() -> None:
        await exchange(gateway.port, post(EMBED, embed_body(["a text that stays cached"])))  # cached now
        floor = await baseline(gateway.port)
        sampler = Sampler(gateway.port)

        async def attack() -> list[tuple[bytes, float]]:
            body_head = post(EMBED, b"x" * 100)[:-99]  # the headers and the first body byte
            chunked = (
                f"POST {EMBED} HTTP/1.1\r\nhost: t\r\nx-inner-api-key: {TEST_KEY}\r\n"
                "transfer-encoding: chunked\r\n\r\n1\r\n{\r\n"
            ).encode()
            clients = [slow_client(gateway.port, b"POST / HTTP/1.1\r\nhost: t\r\nx", b"x") for _ in range(200)]
            clients += [slow_client(gateway.port, body_head, b"x") for _ in range(100)]
            clients += [slow_client(gateway.port, chunked, b"1\r\nx\r\n") for _ in range(100)]
            return await asyncio.gather(*clients)

        results = await sampler.during(attack)
        assert sampler.statuses == {200}
        for index, (reply, took) in enumerate(results):
            assert reply.startswith(b"HTTP/1.1 408 "), (index, reply[:100])
            assert orjson.loads(reply.split(b"\r\n\r\n", 1)[1])["data"] is None
            # Header or body deadline, plus the time to open 400 connections on a busy machine.
            assert HEADER_TIMEOUT_S - 0.1 < took < HEADER_TIMEOUT_S + 3, (index, took)
        assert_fast(sampler, floor)

    asyncio.run(run())
    log = gateway.log()
    assert '"outcome":"client_timeout"' in log
    assert '"level":"error"' not in log and "Traceback" not in log


def _send_forever(port: int, head: bytes, filler: bytes, total: int, out: dict[str, Any]) -> None:
    """A blocking client sending ``total`` bytes of ``filler`` after ``head``; the reply in ``out``."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        started = time.monotonic()

        def send() -> None:
            try:
                sock.sendall(head)
                for _ in range(total // len(filler)):
                    sock.sendall(filler)
            except OSError:
                pass  # the server stopped reading: expected

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
                if b"\r\n\r\n" in reply and reply.endswith(b"}"):
                    break
        except OSError:
            pass
        out["took"] = time.monotonic() - started
        out["reply"] = reply


@pytest.mark.parametrize(
    ("filler", "message"),
    [
        (b"a" * (1 << 20), "request headers too large: over 65536 bytes (server.max_header_bytes)"),
        (b"".join(b"x-h%05d: v\r\n" % i for i in range(10_000)), "too many request headers: over 100"),
    ],
    ids=["128-MiB-header", "10000-headers"],
)
def test_huge_headers_are_refused_at_once_without_blocking_others(
    gateway: GatewayProcess, filler: bytes, message: str
) -> None:
    head = b"GET /readyz HTTP/1.1\r\nhost: t\r\n" + (b"x-big: " if len(filler) == 1 << 20 else b"")
    total = 128 << 20 if len(filler) == 1 << 20 else len(filler)
    outs: list[dict[str, Any]] = []

    def attack() -> None:
        """One such client after another for 1.5 s, so the probes run during them."""
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            outs.append({})
            _send_forever(gateway.port, head, filler, total, outs[-1])

    async def run() -> None:
        floor = await baseline(gateway.port)
        sampler = Sampler(gateway.port)
        await sampler.during(lambda: asyncio.to_thread(attack))
        assert_fast(sampler, floor)

    asyncio.run(run())
    for out in outs:
        reply: bytes = out["reply"]
        assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
        assert b"content-type: application/json" in reply
        assert orjson.loads(reply.split(b"\r\n\r\n", 1)[1])["error"].startswith(message)
        assert out["took"] < 1


def test_slow_bodies_do_not_fill_the_in_flight_cap_and_readiness_tells_a_full_one(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    upstream.script("slow", Embeddings(delay_s=2.0))

    async def run() -> None:
        stalled = []
        for _ in range(5 * MAX_IN_FLIGHT):  # headers, one byte of the body, then nothing
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(post(EMBED, b"x" * 100)[:-99])
            stalled.append(writer)
        await asyncio.sleep(0.2)
        replies = [await exchange(gateway.port, post(EMBED, embed_body([f"text {i}"]))) for i in range(20)]
        assert [status for status, _, _ in replies] == [200] * 20
        status, _, body = await exchange(gateway.port, b"GET /readyz HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (status, orjson.loads(body)["status"]) == (200, "ready")

        # A truly full cap: ten invocations waiting on the upstream.
        slow = [
            asyncio.create_task(exchange(gateway.port, post(EMBED, embed_body([f"slow {i}"], "slow"))))
            for i in range(MAX_IN_FLIGHT)
        ]
        await asyncio.sleep(0.7)
        status, _, body = await exchange(gateway.port, b"GET /readyz HTTP/1.1\r\nhost: t\r\n\r\n")
        assert status == 503
        assert orjson.loads(body) == {
            "status": "overloaded",
            "in_flight": MAX_IN_FLIGHT,
            "max_in_flight": MAX_IN_FLIGHT,
        }
        status, headers, body = await exchange(gateway.port, post(EMBED, embed_body(["one too many"])))
        assert (status, headers["retry-after"]) == (429, "1")
        assert orjson.loads(body)["error"].startswith("gateway overloaded: 10 requests in flight")
        assert [status for status, _, _ in await asyncio.gather(*slow)] == [200] * MAX_IN_FLIGHT
        status, _, _ = await exchange(gateway.port, b"GET /readyz HTTP/1.1\r\nhost: t\r\n\r\n")
        assert status == 200
        for writer in stalled:
            writer.close()

    asyncio.run(run())


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_healthz_and_metrics_refuse_other_methods(gateway: GatewayProcess, path: str) -> None:
    async def run() -> None:
        status, headers, body = await exchange(gateway.port, post(path, b"{}"))
        assert (status, headers["allow"], headers["content-type"]) == (405, "GET, HEAD", "application/json")
        assert orjson.loads(body) == {"data": None, "error": f"POST {path}: only GET and HEAD are served"}
        status, headers, body = await exchange(gateway.port, f"HEAD {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
        assert status == 200 and body == b""

    asyncio.run(run())


def test_a_client_gone_while_sending_its_body_is_an_info_line(gateway: GatewayProcess) -> None:
    async def run() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(post(EMBED, b"x" * 100)[:-50])
        await asyncio.sleep(0.2)
        writer.close()
        await asyncio.sleep(0.3)

    before = gateway.log().count('"outcome":"client_gone"')
    asyncio.run(run())
    deadline = time.monotonic() + 5
    while gateway.log().count('"outcome":"client_gone"') == before and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [orjson.loads(line) for line in gateway.log().splitlines() if '"outcome":"client_gone"' in line]
    assert len(lines) == before + 1
    assert (lines[-1]["level"], lines[-1]["status"]) == ("info", 499)
    assert '"level":"error"' not in gateway.log()


def test_check_config_shows_the_connection_limits_and_refuses_nonsense(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(orjson.dumps({"server": {"max_headers": 50, "body_timeout_s": 30}}).decode())
    result = subprocess.run(
        command("check-config", "--config", str(config)), env=offline_env(), capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    assert orjson.loads(result.stdout)["connections"] == {
        "max_header_bytes": 65536,
        "max_headers": 50,
        "header_timeout_s": 10.0,
        "body_timeout_s": 30.0,
        "keep_alive_timeout_s": 5.0,
    }
    config.write_text(orjson.dumps({"server": {"max_header_bytes": 100}}).decode())
    result = subprocess.run(
        command("check-config", "--config", str(config)), env=offline_env(), capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert b"server.max_header_bytes" in result.stderr


def test_forwarded_requests_count_once_their_body_is_in(gateway: GatewayProcess, dify: FakeDify) -> None:
    """Forwarded to Dify as the body arrives: a slow body holds no slot, a sent one does."""
    dify.script("/inner/api/upload/slow", Json({"data": {"ok": True}, "error": ""}))
    dify.script("/inner/api/upload/held", Json({"data": {"ok": True}, "error": ""}, headers_delay_s=2.0))

    async def run() -> None:
        stalled = []
        for _ in range(5 * MAX_IN_FLIGHT):
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(post("/inner/api/upload/slow", b"x" * 100)[:-99])
            stalled.append(writer)
        await asyncio.sleep(0.3)
        replies = [await exchange(gateway.port, post(EMBED, embed_body([f"forward {i}"]))) for i in range(10)]
        assert [status for status, _, _ in replies] == [200] * 10
        status, _, _ = await exchange(gateway.port, b"GET /readyz HTTP/1.1\r\nhost: t\r\n\r\n")
        assert status == 200
        held = [
            asyncio.create_task(exchange(gateway.port, post("/inner/api/upload/held", b'{"n": %d}' % i)))
            for i in range(MAX_IN_FLIGHT)
        ]
        await asyncio.sleep(0.8)
        status, _, body = await exchange(gateway.port, b"GET /readyz HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (status, orjson.loads(body)["status"]) == (503, "overloaded")
        assert [status for status, _, _ in await asyncio.gather(*held)] == [200] * MAX_IN_FLIGHT
        for writer in stalled:
            writer.close()

    asyncio.run(run())
    # The stalled ones met the body deadline on their way to Dify: no error, no traceback.
    log = gateway.log()
    assert '"level":"error"' not in log and "Traceback" not in log, log[-3000:]
