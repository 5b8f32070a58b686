"""Governance through running gateway processes under faults: the ledger's database stopped
under load, a SIGTERM while rows can only be spilled, and two processes sharing one Redis
for a budget and a rate limit."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
import sqlalchemy as sa

from gateway.usage.schema import usage
from tests.fakes.upstream import Chat, FakeUpstream
from tests.integration.test_governance import routes
from tests.support.client import llm_request, post_stream
from tests.support.daemon import read_stream_reply
from tests.support.pacing import open_loop as paced
from tests.support.postgres import PrivatePostgres, fresh_database
from tests.support.redis import free_port
from tests.support.server import TEST_KEY, GatewayProcess, gateway_config

LLM = "/inner/api/invoke/llm"
Result = tuple[str, int, str | None]  # (request id, status, the daemon's error or None)


def answered(results: list[Result]) -> set[str]:
    return {request_id for request_id, status, error in results if status == 200 and error is None}


def stored_request_ids(url: str) -> list[str]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(sa.select(usage.c.request_id))]
    finally:
        engine.dispose()


def ledger_counts(base_url: str) -> dict[str, float]:
    """dify_gateway_ledger_rows_total by state, from the gateway's /metrics."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith("dify_gateway_ledger_rows_total{"):
            state = line.split('state="')[1].split('"')[0]
            counts[state] = float(line.rsplit(" ", 1)[1])
    return counts


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s:.0f} s")
        time.sleep(0.2)


async def open_loop(url: str, rate: float, stop: asyncio.Event, results: list[Result]) -> None:
    """Non-stream LLM calls at ``rate`` per second, each with its own x-request-id, until ``stop``."""
    body = orjson.dumps(llm_request("gpt-4o-mini", stream=False))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one() -> None:
            request_id = uuid.uuid4().hex
            headers = {"X-Inner-Api-Key": TEST_KEY, "Content-Type": "application/json", "X-Request-Id": request_id}
            try:
                async with session.post(f"{url}{LLM}", data=body, headers=headers) as reply:
                    content = await reply.read()
                    results.append((request_id, reply.status, read_stream_reply(reply.status, content, "llm").error))
            except aiohttp.ClientError as exc:
                results.append((request_id, -1, f"transport: {exc!r}"))

        await paced(rate, stop, one)


def ledger_config(url: str, **values: Any) -> dict[str, Any]:
    return {"database_url": url, "flush_interval_ms": 100, "buffer_rows": 500, "timeout_s": 1, **values}


def test_postgresql_stopped_for_twenty_seconds_under_load_fails_nothing_and_loses_no_row(
    tmp_path: Path, fake: FakeUpstream, private_postgres: PrivatePostgres
) -> None:
    """200 req/s through the gateway; its PostgreSQL stops for 20 s and comes back: every
    request is answered, and every one has exactly one row once the spill is replayed."""
    fake.default(Chat(deltas=["ok"], usage=(7, 3)))
    results: list[Result] = []
    with fresh_database(private_postgres.url) as url:
        config = gateway_config(routes(fake), ledger=ledger_config(url))
        with GatewayProcess(config, tmp_path, DIFY_GATEWAY_DATA_DIR=str(tmp_path / "data")) as gateway:

            async def scenario() -> None:
                stop = asyncio.Event()
                load = asyncio.create_task(open_loop(gateway.url, 200, stop, results))
                await asyncio.sleep(3)
                await asyncio.to_thread(private_postgres.stop)
                await asyncio.sleep(20)
                await asyncio.to_thread(private_postgres.start)
                await asyncio.sleep(3)
                stop.set()
                await load

            asyncio.run(scenario())
            failed = [r for r in results if r[1] != 200 or r[2] is not None]
            assert not failed, f"{len(failed)} of {len(results)} failed, for example {failed[:3]}"
            assert len(results) >= 200 * 26 * 0.8  # the load really ran at about its rate
            wait_until(lambda: len(stored_request_ids(url)) >= len(results), 90, "every row written")
            counts = ledger_counts(gateway.url)
        ids = stored_request_ids(url)
    assert sorted(ids) == sorted(answered(results))  # each exactly once
    assert counts.get("spilled", 0) > 0  # the outage outlasted the buffer: rows went through the spill file
    assert counts.get("replayed", 0) == counts["spilled"]
    assert counts.get("dropped", 0) == 0
    assert not [p for p in (tmp_path / "data").glob("usage-spill*") if p.stat().st_size > 0]


def test_sigterm_under_load_with_the_database_away_keeps_every_answered_row_for_the_restart(
    tmp_path: Path, fake: FakeUpstream, private_postgres: PrivatePostgres
) -> None:
    """The database stops, then the gateway is stopped under load: what it answered is
    spilled at the drain, and the next start replays it once the database is back."""
    fake.default(Chat(deltas=["ok"], usage=(7, 3)))
    results: list[Result] = []
    data = tmp_path / "data"
    with fresh_database(private_postgres.url) as url:
        config = gateway_config(routes(fake), ledger=ledger_config(url))
        first = GatewayProcess(config, tmp_path, DIFY_GATEWAY_DATA_DIR=str(data))
        with first:
            assert first.process is not None
            process = first.process

            async def scenario() -> None:
                stop = asyncio.Event()
                load = asyncio.create_task(open_loop(first.url, 100, stop, results))
                await asyncio.sleep(2)
                await asyncio.to_thread(private_postgres.stop)
                await asyncio.sleep(3)
                process.send_signal(signal.SIGTERM)
                exited = await asyncio.to_thread(process.wait, 60)
                stop.set()
                await load
                assert exited == 0, first.log()[-3000:]

            asyncio.run(scenario())
        before_restart = [p for p in data.glob("usage-spill*") if p.stat().st_size > 0]
        private_postgres.start()
        with GatewayProcess(config, tmp_path, DIFY_GATEWAY_DATA_DIR=str(data)) as second:
            want = answered(results)
            wait_until(lambda: want <= set(stored_request_ids(url)), 60, "every answered request's row")
            counts = ledger_counts(second.url)
        ids = stored_request_ids(url)
    assert len(want) >= 300  # the load was answered before the stop
    assert before_restart, "the drain spilled nothing although the database was away"
    assert counts.get("replayed", 0) > 0
    assert len(ids) == len(set(ids))  # a replayed row is not written twice
    assert set(ids) <= {request_id for request_id, _, _ in results}


@pytest.fixture
def shared_prefix(redis_url: str) -> Any:
    import redis

    prefix = f"dgw-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def two_processes(tmp_path: Path, config: dict[str, Any]) -> tuple[GatewayProcess, GatewayProcess]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return GatewayProcess(config, tmp_path / "a"), GatewayProcess(config, tmp_path / "b")


def test_two_processes_sharing_redis_enforce_one_rate_limit(
    tmp_path: Path, fake: FakeUpstream, redis_url: str, shared_prefix: str
) -> None:
    fake.default(Chat(deltas=["r"], usage=(1, 1)))
    config = gateway_config(
        routes(fake),
        ledger={"enabled": False},
        cache={"redis_url": redis_url, "key_prefix": shared_prefix},
        rate_limits={"default": {"rpm": 10}},
    )
    a, b = two_processes(tmp_path, config)
    with a, b:
        statuses = [
            post_stream((a, b)[i % 2].url, LLM, llm_request("gpt-4o-mini", tenant_id="shared")).status
            for i in range(24)
        ]
    assert statuses.count(200) == 10  # one limit for both, not ten each
    assert statuses[:10] == [200] * 10
    assert set(statuses[10:]) == {429}


def test_two_processes_sharing_redis_enforce_one_budget(
    tmp_path: Path, fake: FakeUpstream, redis_url: str, shared_prefix: str
) -> None:
    """Each call costs more than the daily budget: after the first is charged, both refuse.
    Calls one at a time, so the overshoot is bounded by the charge's short delay."""
    fake.default(Chat(deltas=["spend"], usage=(100_000, 50_000)))  # ~$0.045 at gpt-4o-mini's prices
    config = gateway_config(
        routes(fake),
        ledger={"enabled": False},
        cache={"redis_url": redis_url, "key_prefix": shared_prefix},
        budgets={"default": [{"period": "day", "usd": "0.01"}]},
    )
    a, b = two_processes(tmp_path, config)
    with a, b:
        first = post_stream(a.url, LLM, llm_request("gpt-4o-mini", tenant_id="spender"))
        replies = []
        for i in range(30):
            replies.append(post_stream((b, a)[i % 2].url, LLM, llm_request("gpt-4o-mini", tenant_id="spender")))
            time.sleep(0.05)
        other = post_stream(b.url, LLM, llm_request("gpt-4o-mini", tenant_id="frugal"))
    assert first.status == 200
    statuses = [r.status for r in replies]
    admitted = statuses.count(200)
    assert admitted <= 4, statuses  # the charge reached Redis within a few calls
    assert statuses[admitted:] == [429] * (30 - admitted), statuses  # then refused by both, for good
    refusal = replies[-1].outcome.error or ""
    assert "daily budget" in refusal and "$0.01" in refusal
    assert other.status == 200


def test_redis_down_refuses_when_configured_closed(tmp_path: Path, fake: FakeUpstream) -> None:
    """No Redis at the configured address: fail-closed refuses (never reaching the upstream),
    fail-open admits."""
    fake.default(Chat(deltas=["r"], usage=(1, 1)))
    closed_port = free_port()
    base = {"redis_url": f"redis://127.0.0.1:{closed_port}/0", "timeout_ms": 100}
    closed = gateway_config(
        routes(fake),
        ledger={"enabled": False},
        cache=base,
        rate_limits={"default": {"rpm": 1000}, "on_redis_error": "closed"},
    )
    opened = gateway_config(
        routes(fake),
        ledger={"enabled": False},
        cache=base,
        rate_limits={"default": {"rpm": 1000}, "on_redis_error": "open"},
    )
    (tmp_path / "closed").mkdir()
    (tmp_path / "open").mkdir()
    with GatewayProcess(closed, tmp_path / "closed") as gateway:
        refused = [post_stream(gateway.url, LLM, llm_request("gpt-4o-mini")) for _ in range(3)]
    assert fake.count() == 0
    with GatewayProcess(opened, tmp_path / "open") as gateway:
        admitted = [post_stream(gateway.url, LLM, llm_request("gpt-4o-mini")) for _ in range(3)]
    assert [r.status for r in refused] == [429] * 3
    assert all(r.outcome.error and "Redis" in r.outcome.error for r in refused), refused[0].outcome.error
    assert [r.status for r in admitted] == [200] * 3
    assert fake.count() == 3
