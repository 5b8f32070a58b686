"""The usage ledger, budgets and rate limits through the running gateway, as an operator sees them."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from gateway.adapters.litellm_loader import load_litellm_sync
from gateway.usage.schema import usage
from tests.fakes.upstream import Chat, FakeUpstream
from tests.support.client import invoke_body, llm_request, post_stream, post_unary
from tests.support.daemon import read_stream_reply, read_unary_reply
from tests.support.server import TEST_KEY, GatewayProcess, GatewayServer, gateway_config

LLM = "/inner/api/invoke/llm"


def routes(upstream: FakeUpstream) -> list[dict[str, Any]]:
    def target(model: str, base: str) -> dict[str, Any]:
        return {"model": model, "api_base": base, "api_key": "sk-ledger"}

    return [
        {"name": "chat", "match": {"type": "llm"}, "targets": [target("openai/{model}", upstream.base_url)]},
        {"name": "emb", "match": {"type": "text-embedding"}, "targets": [target("openai/{model}", upstream.base_url)]},
        {"name": "rr", "match": {"type": "rerank"}, "targets": [target("cohere/{model}", upstream.root_url)]},
        {"name": "voice", "match": {"type": "tts"}, "targets": [{"model": "local/espeak-ng"}]},
    ]


def ledger_rows(database: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(database)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.select(usage))]
    finally:
        engine.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(scope="module", autouse=True)
def _litellm() -> None:
    load_litellm_sync()


def test_each_invocation_is_one_row_with_what_its_reply_reported(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.script("gpt-4o-mini", Chat(deltas=["Hel", "lo"], usage=(11, 7)))
    database = sqlite_url(tmp_path / "usage.db")
    config = gateway_config(routes(fake), ledger={"database_url": database, "flush_interval_ms": 50})
    replies: dict[str, Any] = {}
    with GatewayServer(config) as server:
        streamed = post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id="t-stream", user_id="u1"))
        whole = post_stream(server.url, LLM, llm_request("gpt-4o-mini", stream=False, tenant_id="t-whole"))
        texts = ["alpha", "beta", "gamma"]
        first = post_unary(
            server.url,
            "text-embedding",
            invoke_body(
                "text-embedding", "text-embedding-3-small", texts=texts, input_type="document", tenant_id="t-emb"
            ),
        )
        again = post_unary(
            server.url,
            "text-embedding",
            invoke_body(
                "text-embedding",
                "text-embedding-3-small",
                texts=[*texts, "delta"],
                input_type="document",
                tenant_id="t-emb",
            ),
        )
        ranked = post_unary(
            server.url, "rerank", invoke_body("rerank", "rerank-v3.5", query="q", docs=["a b", "q c"], tenant_id="t-rr")
        )
        spoken = post_stream(
            server.url,
            "/inner/api/invoke/tts",
            invoke_body("tts", "tts-1", content_text="Hello there.", voice="alloy", tenant_id="t-tts"),
            kind="tts",
        )
        replies = {"stream": streamed, "whole": whole, "first": first.ok(), "again": again.ok(), "rerank": ranked.ok()}
        assert spoken.status == 200
    rows = {(r["tenant_id"], r["model_type"], r["tokens_in"]): r for r in ledger_rows(database)}
    assert len(rows) == 6, sorted(rows)
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for row in rows.values():
        by_tenant.setdefault(row["tenant_id"], []).append(row)

    (stream_row,) = by_tenant["t-stream"]
    usage_frame = replies["stream"].usages[-1]
    assert (
        (stream_row["tokens_in"], stream_row["tokens_out"])
        == (11, 7)
        == (usage_frame["prompt_tokens"], usage_frame["completion_tokens"])
    )
    assert stream_row["price_usd"] == Decimal(usage_frame["total_price"]) > 0
    assert stream_row["user_id"] == "u1" and stream_row["route"] == "chat" and stream_row["outcome"] == "ok"
    assert stream_row["target"] == "openai/{model}" and stream_row["target_model"] == "openai/gpt-4o-mini"
    assert stream_row["provider"] == "langgenius/openai/openai" and stream_row["model"] == "gpt-4o-mini"
    assert stream_row["first_byte_ms"] is not None and stream_row["duration_ms"] >= stream_row["first_byte_ms"]
    (whole_row,) = by_tenant["t-whole"]
    assert whole_row["price_usd"] == Decimal(replies["whole"].usages[-1]["total_price"])

    embeddings = sorted(by_tenant["t-emb"], key=lambda r: r["created_at"])
    assert [r["tokens_in"] for r in embeddings] == [
        replies["first"]["usage"]["tokens"],
        replies["again"]["usage"]["tokens"],
    ]
    assert [r["price_usd"] for r in embeddings] == [
        Decimal(replies["first"]["usage"]["total_price"]),
        Decimal(replies["again"]["usage"]["total_price"]),
    ]
    assert embeddings[0]["cached_tokens"] == 0 and embeddings[1]["cached_tokens"] > 0  # three of four from the cache
    assert embeddings[1]["tokens_in"] < embeddings[0]["tokens_in"]

    (rerank_row,) = by_tenant["t-rr"]
    assert rerank_row["route"] == "rr" and rerank_row["outcome"] == "ok"
    (tts_row,) = by_tenant["t-tts"]
    assert tts_row["characters"] == len("Hello there.") and tts_row["target_model"] == "local/espeak-ng"
    assert len({r["id"] for r in rows.values()}) == 6


def test_hostile_identities_are_stored_verbatim(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.default(Chat(deltas=["x"], usage=(1, 1)))
    database = sqlite_url(tmp_path / "usage.db")
    hostile = ["t" * 10_000, "租户-🙂-ünï", "'; DROP TABLE usage; --", 'quo"te\\back', "new\nline\ttab", "%_*?["]
    config = gateway_config(routes(fake), ledger={"database_url": database, "flush_interval_ms": 50})
    with GatewayServer(config) as server:
        for tenant in hostile:
            reply = post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id=tenant, user_id=tenant[::-1]))
            assert reply.status == 200 and reply.outcome.error is None
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    stored = {(r["tenant_id"], r["user_id"]) for r in ledger_rows(database)}
    assert stored == {(t, t[::-1]) for t in hostile}
    assert "DROP TABLE" not in metrics and "租户" not in metrics and "t" * 100 not in metrics


def test_a_tenant_over_budget_is_refused_before_any_upstream_call(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.default(Chat(deltas=["spend"], usage=(100_000, 50_000)))  # ~$0.045 at gpt-4o-mini's prices
    config = gateway_config(
        routes(fake),
        ledger={"database_url": sqlite_url(tmp_path / "usage.db"), "flush_interval_ms": 50},
        budgets={"default": [{"period": "day", "usd": "0.01"}]},
    )
    with GatewayServer(config) as server:
        first = post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id="spender"))
        assert first.status == 200 and first.outcome.error is None  # under budget when it started: finished
        calls = fake.count()
        refused = None
        for _ in range(20):  # the charge is applied in the background, within moments
            reply = post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id="spender"))
            if reply.status != 200:
                refused = reply
                break
        assert refused is not None, "the tenant was never refused"
        assert refused.status == 429
        assert refused.outcome.error is not None and "daily budget" in refused.outcome.error
        assert "$0.01" in refused.outcome.error and "reset" in refused.outcome.error
        assert int(refused.headers["retry-after"]) >= 1
        upstream_after_refusal = fake.count()
        for _ in range(3):
            assert post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id="spender")).status == 429
        assert fake.count() == upstream_after_refusal  # refusals never reach the upstream
        assert upstream_after_refusal - calls <= 19
        other = post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id="frugal"))
        assert other.status == 200  # one tenant's budget is its own
        unary = post_unary(
            server.url,
            "text-embedding",
            invoke_body(
                "text-embedding", "text-embedding-3-small", texts=["a"], input_type="document", tenant_id="spender"
            ),
        )
        assert unary.error is not None and "daily budget" in unary.error  # the envelope's error on unary paths
    outcomes = [r["outcome"] for r in ledger_rows(sqlite_url(tmp_path / "usage.db")) if r["tenant_id"] == "spender"]
    assert outcomes.count("budget_exceeded") >= 4 and outcomes[0] == "ok"


def test_the_budget_report_lists_tenants_from_the_ledger_after_a_restart(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.default(Chat(deltas=["spend"], usage=(1000, 500)))
    config = gateway_config(
        routes(fake),
        ledger={"database_url": sqlite_url(tmp_path / "usage.db"), "flush_interval_ms": 50},
        budgets={"default": [{"period": "month", "usd": "5"}]},
    )
    with GatewayServer(config) as server:
        assert post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id="before-restart")).status == 200
    with GatewayServer(config) as server:  # in-process counters: this process has seen no tenant
        assert post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id="after-restart")).status == 200
        reply = httpx.get(f"{server.url}/admin/budgets", headers={"X-Admin-Key": TEST_KEY})
    assert reply.status_code == 200, reply.text
    spent = {b["tenant_id"]: Decimal(b["spent_usd"]) for b in reply.json()["budgets"]}
    assert set(spent) == {"before-restart", "after-restart"}
    assert spent["before-restart"] > 0  # rebuilt from the ledger


def test_rate_limit_gives_exactly_n_then_retry_after(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.default(Chat(deltas=["r"], usage=(1, 1)))
    config = gateway_config(
        routes(fake),
        ledger={"enabled": False},
        rate_limits={"default": {"rpm": 5}},
    )
    with GatewayServer(config) as server:
        statuses = [post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id="busy")).status for _ in range(8)]
        refused = post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id="busy"))
        calm = post_stream(server.url, LLM, llm_request("gpt-4o-mini", tenant_id="calm"))
    assert statuses == [200] * 5 + [429] * 3
    assert fake.count() == 6  # five of "busy", one of "calm"
    assert refused.status == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.outcome.error is not None and "rate limit" in refused.outcome.error
    assert calm.status == 200


def test_many_mixed_requests_over_many_tenants_with_two_workers(tmp_path: Path, fake: FakeUpstream) -> None:
    """1,000 requests (LLM streams and not, embeddings partly cached, rerank) from 50 tenants, two worker
    processes writing one database: exactly 1,000 rows, tokens and prices equal to the replies'."""
    fake.script("gpt-4o-mini", Chat(deltas=["a", "b", "c"], usage=(13, 5)))
    database = sqlite_url(tmp_path / "usage.db")
    config = gateway_config(routes(fake), ledger={"database_url": database, "flush_interval_ms": 100})
    rng = random.Random(18)
    tenants = [f"tenant-{i:02d}" for i in range(50)]
    jobs = []
    for i in range(1000):
        tenant = rng.choice(tenants)
        kind = rng.choice(["stream", "whole", "embed", "rerank"])
        jobs.append((i, tenant, kind))

    local = threading.local()

    def post(path: str, body: dict[str, Any]) -> httpx.Response:
        if not hasattr(local, "client"):  # one keep-alive client per thread, as the daemon keeps its connections
            local.client = httpx.Client(timeout=30, headers={"X-Inner-Api-Key": TEST_KEY})
            clients.append(local.client)
        return local.client.post(f"{process.url}{path}", json=body)

    def run(job: tuple[int, str, str]) -> tuple[str, str, int, Decimal]:
        i, tenant, kind = job
        if kind in ("stream", "whole"):
            response = post(LLM, llm_request("gpt-4o-mini", stream=kind == "stream", tenant_id=tenant))
            outcome = read_stream_reply(response.status_code, response.content, "llm")
            assert response.status_code == 200 and outcome.error is None, outcome.error
            (frame,) = [c["delta"]["usage"] for c in outcome.chunks if c["delta"]["usage"] is not None]
            return tenant, kind, frame["prompt_tokens"] + frame["completion_tokens"], Decimal(frame["total_price"])
        if kind == "embed":
            texts = [f"shared {i % 7}", f"own {i}"]  # one input often cached
            body = invoke_body(
                "text-embedding", "text-embedding-3-small", texts=texts, input_type="document", tenant_id=tenant
            )
            data, error = read_unary_reply(post("/inner/api/invoke/text-embedding", body).content, "text_embedding")
            assert error is None and data is not None, error
            return tenant, kind, data["usage"]["tokens"], Decimal(data["usage"]["total_price"])
        body = invoke_body("rerank", "rerank-v3.5", query="q", docs=["a", "q"], tenant_id=tenant)
        data, error = read_unary_reply(post("/inner/api/invoke/rerank", body).content, "rerank")
        assert error is None and data is not None, error
        return tenant, kind, 0, Decimal(0)

    clients: list[httpx.Client] = []
    with GatewayProcess(config, tmp_path, workers=2) as process, ThreadPoolExecutor(16) as pool:
        try:
            results = list(pool.map(run, jobs))
        finally:
            for client in clients:
                client.close()
    rows = ledger_rows(database)
    assert len(rows) == 1000
    assert len({r["id"] for r in rows}) == 1000
    per_tenant_tokens: dict[str, int] = {}
    per_tenant_price: dict[str, Decimal] = {}
    for tenant, _, tokens, price in results:
        per_tenant_tokens[tenant] = per_tenant_tokens.get(tenant, 0) + tokens
        per_tenant_price[tenant] = per_tenant_price.get(tenant, Decimal(0)) + price
    stored_tokens: dict[str, int] = {}
    stored_price: dict[str, Decimal] = {}
    for row in rows:
        stored_tokens[row["tenant_id"]] = stored_tokens.get(row["tenant_id"], 0) + row["tokens_in"] + row["tokens_out"]
        stored_price[row["tenant_id"]] = stored_price.get(row["tenant_id"], Decimal(0)) + row["price_usd"]
    assert stored_tokens == per_tenant_tokens
    assert stored_price == per_tenant_price


def test_a_summary_is_one_row_with_the_tokens_and_price_of_all_its_calls(tmp_path: Path, fake: FakeUpstream) -> None:
    """Dify's summary runs several LLM calls for one invocation: its row (and its tenant's
    budget) carries all of them."""
    fake.default(Chat(deltas=["short"], usage=(120, 7)))
    database = sqlite_url(tmp_path / "usage.db")
    summary = {"model": "openai/gpt-4o-mini", "api_base": fake.base_url, "api_key": "sk-ledger", "context_tokens": 256}
    config = gateway_config(
        routes(fake), ledger={"database_url": database, "flush_interval_ms": 50}, summary_model=summary
    )
    text = "\n".join(f"Paragraph {n}: " + "words " * 60 for n in range(12))
    body = invoke_body("summary", "gpt-4o-mini", text=text, instruction="", tenant_id="summariser")
    with GatewayServer(config) as server:
        reply = post_unary(server.url, "summary", body)
        assert reply.error is None, reply.error
        calls = fake.count("/v1/chat/completions")
    deadline = time.monotonic() + 10
    while not (rows := [r for r in ledger_rows(database) if r["tenant_id"] == "summariser"]):
        assert time.monotonic() < deadline, "no ledger row for the summary"
        time.sleep(0.05)
    (row,) = rows
    assert calls >= 3
    assert (row["model_type"], row["tokens_in"], row["tokens_out"]) == ("summary", 120 * calls, 7 * calls)
    cost = load_litellm_sync().model_cost["gpt-4o-mini"]
    expected = Decimal(str(cost["input_cost_per_token"])) * 120 * calls
    expected += Decimal(str(cost["output_cost_per_token"])) * 7 * calls
    assert expected > 0 and abs(row["price_usd"] - expected) <= expected * Decimal("0.0001")
