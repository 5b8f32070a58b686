"""The fault matrix: what the daemon receives when the upstream misbehaves in each known way.

Each case scripts the fake upstream (one model name per case, so breakers and scripts never
mix), sends one LLM invocation as the daemon would, and checks: the frames as the daemon
decodes them, the exact number of upstream attempts, that the text is never duplicated or
spliced (always a prefix of what the upstream meant to say, the whole of it on success),
and how long it took against the configured deadlines.

Route settings (short, so the matrix runs in seconds): 2 retries, TTFT and idle deadlines
of 0.5 s, a 3 s total, backoff 10-50 ms.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from gateway.adapters.litellm_loader import load_litellm_sync
from tests.fakes.upstream import Chat, FakeUpstream, Hang, HttpError, Reset
from tests.support.client import StreamReply, llm_request, post_stream
from tests.support.server import TEST_KEY, GatewayServer, gateway_config

LLM = "/inner/api/invoke/llm"
WORDS = [f"w{i} " for i in range(1, 9)]
FULL = "".join(WORDS)
TTFT_S = IDLE_S = 0.5
TOTAL_S = 3.0
TOLERANCE_S = 0.1  # a deadline fires within this of its value (measured with client overhead)
# Room for the rest of the reply on a loaded 2-core machine (litellm under coverage tracing took
# 0.4 s for a retried stream); every stall scripted here lasts seconds longer, so a late deadline still fails.
SLACK_S = 0.8


@pytest.fixture(scope="module", params=["native", "litellm"])
def gateway(upstream: FakeUpstream, request: pytest.FixtureRequest) -> Iterator[GatewayServer]:
    """The matrix runs against both chat clients: the native OpenAI-compatible one and litellm."""
    native = request.param == "native"
    target = {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-test", "native": native}
    timeouts = {"ttft_s": TTFT_S, "idle_s": IDLE_S, "total_s": TOTAL_S}
    routes = [
        {"name": "matrix", "match": {"type": "llm", "provider": "openai"}, "targets": [target], "timeouts": timeouts},
        {
            "name": "with-fallback",
            "match": {"type": "llm", "provider": "fb"},
            "targets": [target],
            "fallbacks": [{**target, "model": "openai/backup-model"}],
            "timeouts": timeouts,
        },
        {"name": "emb", "match": {"type": "text-embedding"}, "targets": [target], "timeouts": timeouts},
    ]
    resilience = {"retry": {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "retry_after_max_s": 1.0}}
    load_litellm_sync()  # its import (seconds) would count against the 3 s total deadline
    with GatewayServer(gateway_config(routes, resilience=resilience)) as server:
        yield server


def chat(**faults: Any) -> Chat:
    return Chat(deltas=WORDS, **faults)


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Any, ...]
    attempts: int  # upstream attempts the gateway must make, exactly
    ok: bool  # the daemon gets the whole answer
    min_s: float = 0.0  # the reply takes at least ...
    max_s: float = 2.0  # ... and at most this long
    stream: bool = True


CASES = [
    Case("reset before headers, then success", (Reset(), chat()), attempts=2, ok=True),
    Case(
        "429 with Retry-After, then success",
        (HttpError(429, headers={"Retry-After": "0.3"}), chat()),
        attempts=2,
        ok=True,
        min_s=0.3,
    ),
    Case("503 then 500, then success", (HttpError(503), HttpError(500), chat()), attempts=3, ok=True),
    Case("502 twice and 504, budget spent", (HttpError(502), HttpError(502), HttpError(504)), attempts=3, ok=False),
    Case("400 is never retried", (HttpError(400), chat()), attempts=1, ok=False),
    Case("404 is never retried", (HttpError(404), chat()), attempts=1, ok=False),
    Case("422 is never retried", (HttpError(422), chat()), attempts=1, ok=False),
    Case(
        "stall before the headers (TTFT), then success",
        (chat(headers_delay_s=5), chat()),
        attempts=2,
        ok=True,
        min_s=TTFT_S,
        max_s=TTFT_S + TOLERANCE_S + SLACK_S,
    ),
    Case(
        "stall after the headers, before the first chunk (TTFT), then success",
        (chat(stall_after=0), chat()),
        attempts=2,
        ok=True,
        min_s=TTFT_S,
        max_s=TTFT_S + TOLERANCE_S + SLACK_S,
    ),
    Case(
        "stall mid-stream (idle deadline): one error frame, no retry",
        (chat(stall_after=3), chat()),
        attempts=1,
        ok=False,
        min_s=IDLE_S,
        max_s=IDLE_S + TOLERANCE_S + SLACK_S,
    ),
    Case("reset after chunk 0 (nothing sent yet), then success", (chat(reset_after=0), chat()), attempts=2, ok=True),
    *(
        Case(f"reset after chunk {k}: error frame, no retry", (chat(reset_after=k), chat()), attempts=1, ok=False)
        for k in (1, 3, 7)
    ),
    Case("truncated before any chunk, then success", (chat(truncate_after=0), chat()), attempts=2, ok=True),
    Case("truncated SSE after 4 chunks: error frame", (chat(truncate_after=4), chat()), attempts=1, ok=False),
    Case(
        "slow drip past the total deadline: error frame at the deadline",
        (Chat(deltas=[f"d{i} " for i in range(40)], gap_s=0.2),),
        attempts=1,
        ok=False,
        min_s=TOTAL_S,
        max_s=TOTAL_S + TOLERANCE_S + SLACK_S,
    ),
    Case(
        "upstream never answers: TTFT on every attempt, budget spent",
        (Hang(),),
        attempts=3,
        ok=False,
        min_s=3 * TTFT_S,
        max_s=3 * TTFT_S + SLACK_S,
    ),
    Case("non-stream: 500 then success", (HttpError(500), chat()), attempts=2, ok=True, stream=False),
    Case("non-stream: reset then success", (Reset(), chat()), attempts=2, ok=True, stream=False),
]


def expected_prefix(case: Case) -> str:
    last = case.steps[-1]
    if isinstance(last, Chat):
        return "".join(last.deltas)
    return FULL


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_matrix(gateway: GatewayServer, fake: FakeUpstream, case: Case) -> None:
    model = f"matrix-{CASES.index(case)}"
    fake.script(model, *case.steps)
    started = time.monotonic()
    reply = post_stream(gateway.url, LLM, llm_request(model, stream=case.stream))
    elapsed = time.monotonic() - started

    assert reply.outcome.dropped == [], "the daemon would drop frames"
    assert fake.count(model=model) == case.attempts
    # Never duplicated, never spliced: what arrived is a prefix of one upstream answer.
    assert expected_prefix(case).startswith(reply.text) or FULL.startswith(reply.text), reply.text
    if case.ok:
        assert reply.outcome.error is None, reply.outcome.error
        assert reply.text == expected_prefix(case)
        assert len(reply.usages) == 1
    else:
        assert reply.outcome.error is not None
        assert reply.usages == []
        assert_error_shape(reply, case)
    assert case.min_s <= elapsed <= case.max_s, f"took {elapsed:.3f} s"


def assert_error_shape(reply: StreamReply, case: Case) -> None:
    """Before any frame: a non-200 envelope; after: one final error frame on the 200 stream."""
    if reply.text:
        assert reply.status == 200
        assert reply.outcome.error is not None and reply.outcome.error.startswith("request failed: ")
    else:
        assert reply.status != 200
        assert orjson.loads(reply.body)["data"] is None
        if case.attempts > 1:
            assert f"[{case.attempts} attempts" in orjson.loads(reply.body)["error"]


def test_idle_deadline_fires_on_time(gateway: GatewayServer, fake: FakeUpstream) -> None:
    """The gap between the last frame and the error frame is the idle deadline."""
    fake.script("idle-timing", chat(stall_after=2))
    started = time.monotonic()
    reply = post_stream(gateway.url, LLM, llm_request("idle-timing"))
    elapsed = time.monotonic() - started
    assert reply.text == "w1 w2 "
    assert "idle deadline" in (reply.outcome.error or "")
    assert IDLE_S <= elapsed <= IDLE_S + TOLERANCE_S + SLACK_S


def test_auth_failure_moves_to_the_fallback_which_reports_its_model(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("primary-401", HttpError(401))
    fake.script("backup-model", chat())
    before = fake.count(model="backup-model")
    body = llm_request("primary-401", provider="fb")
    reply = post_stream(gateway.url, LLM, body)
    assert reply.outcome.error is None, reply.outcome.error
    assert reply.text == FULL
    assert fake.count(model="primary-401") == 1  # credentials refused: not retried on that target
    assert fake.count(model="backup-model") == before + 1
    assert {c["model"] for c in reply.outcome.chunks} == {"backup-model"}
    assert reply.headers["x-dify-gateway-target"] == "openai/backup-model"
    assert reply.headers["x-dify-gateway-attempts"] == "2"


def test_fallback_after_the_primary_spends_its_retries(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("primary-503", HttpError(503))
    fake.script("backup-model", chat())
    before = fake.count(model="backup-model")
    reply = post_stream(gateway.url, LLM, llm_request("primary-503", provider="fb"))
    assert reply.outcome.error is None
    assert fake.count(model="primary-503") == 3
    assert fake.count(model="backup-model") == before + 1
    assert reply.headers["x-dify-gateway-attempts"] == "4"


def test_request_errors_never_reach_the_fallback(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("primary-400", HttpError(400))
    before = fake.count(model="backup-model")
    reply = post_stream(gateway.url, LLM, llm_request("primary-400", provider="fb"))
    assert reply.status == 400
    assert fake.count(model="primary-400") == 1
    assert fake.count(model="backup-model") == before


def test_no_retry_once_a_frame_was_sent_even_with_a_fallback(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("primary-midreset", chat(reset_after=2))
    before = fake.count(model="backup-model")
    reply = post_stream(gateway.url, LLM, llm_request("primary-midreset", provider="fb"))
    assert reply.text == "w1 w2 "
    assert reply.outcome.error is not None
    assert fake.count(model="primary-midreset") == 1
    assert fake.count(model="backup-model") == before


def test_retry_after_longer_than_the_cap_is_not_waited_for(gateway: GatewayServer, fake: FakeUpstream) -> None:
    """Retry-After 30 s is over the 1 s cap: the next target instead of a wait."""
    fake.script("primary-429-long", HttpError(429, headers={"Retry-After": "30"}))
    fake.script("backup-model", chat())
    started = time.monotonic()
    reply = post_stream(gateway.url, LLM, llm_request("primary-429-long", provider="fb"))
    assert reply.outcome.error is None
    assert time.monotonic() - started < 1.0
    assert fake.count(model="primary-429-long") == 1


def test_malformed_sse_before_any_text_is_retried(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("malformed-first", chat(malformed_after=0), chat())
    reply = post_stream(gateway.url, LLM, llm_request("malformed-first"))
    assert reply.outcome.dropped == []
    # litellm may skip the bad line (one attempt, whole text) or fail on it (a retry):
    # either way the daemon gets the whole answer exactly once.
    assert reply.outcome.error is None, reply.outcome.error
    assert reply.text == FULL
    assert fake.count(model="malformed-first") in (1, 2)


def test_malformed_sse_mid_stream_never_duplicates(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("malformed-mid", chat(malformed_after=3), chat())
    reply = post_stream(gateway.url, LLM, llm_request("malformed-mid"))
    assert reply.outcome.dropped == []
    assert FULL.startswith(reply.text)
    assert fake.count(model="malformed-mid") == 1
    if reply.outcome.error is None:
        assert reply.text == FULL


def test_client_going_away_cancels_the_upstream_call(gateway: GatewayServer, fake: FakeUpstream) -> None:
    import httpx

    fake.script("warm-cancel", chat())
    post_stream(gateway.url, LLM, llm_request("warm-cancel"))  # litellm builds its client on a first call
    fake.script("hang-cancel", Hang())
    body = llm_request("hang-cancel")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}{LLM}", json=body, headers={"X-Inner-Api-Key": TEST_KEY}, timeout=0.3)
    hung = [r for r in fake.requests if r.model == "hang-cancel"]
    fake.wait_until(lambda: all(r.ended_at is not None for r in hung), within=1.0)
    assert len(hung) == 1
    assert gateway.app.in_flight == 0


def test_client_going_away_cancels_a_non_streamed_llm_call(gateway: GatewayServer, fake: FakeUpstream) -> None:
    import httpx

    fake.script("warm-whole", chat())
    post_stream(gateway.url, LLM, llm_request("warm-whole"))  # litellm builds its client on a first call
    fake.script("hang-whole", Hang())
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway.url}{LLM}",
            json=llm_request("hang-whole", stream=False),
            headers={"X-Inner-Api-Key": TEST_KEY},
            timeout=0.3,
        )
    hung = [r for r in fake.requests if r.model == "hang-whole"]
    fake.wait_until(lambda: all(r.ended_at is not None for r in hung), within=1.0)
    assert len(hung) == 1 and hung[0].outcome == "disconnected"
    assert gateway.app.in_flight == 0


def test_client_going_away_mid_stream_stops_the_upstream_stream(gateway: GatewayServer, fake: FakeUpstream) -> None:
    """After the first frame has gone out: the caller hangs up, the upstream stream ends early."""
    import httpx

    fake.script("leave-mid", Chat(deltas=tuple(f"w{i} " for i in range(40)), gap_s=0.05))
    with httpx.stream(
        "POST", f"{gateway.url}{LLM}", json=llm_request("leave-mid"), headers={"X-Inner-Api-Key": TEST_KEY}
    ) as reply:
        assert reply.status_code == 200
        next(reply.iter_raw())  # the first frame (or more) arrived; now leave
    left_at = time.monotonic()
    served = [r for r in fake.requests if r.model == "leave-mid"]
    fake.wait_until(lambda: all(r.ended_at is not None for r in served), within=1.0)
    assert len(served) == 1 and served[0].outcome == "disconnected"
    assert served[0].ended_at is not None and served[0].ended_at - left_at < 0.5  # not the whole 2 s
    fake.wait_until(lambda: gateway.app.in_flight == 0, within=1.0)


def test_connect_deadline_fires_on_time(fake: FakeUpstream) -> None:
    """A backend that never completes the TCP handshake: the connect deadline, not the total."""
    import socket

    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(0)  # never accepted: once the queue is full, handshakes go unanswered
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(black_hole.getsockname())
        fillers.append(filler)
    port = black_hole.getsockname()[1]
    routes = [
        {
            "match": {"type": "llm"},
            "targets": [{"model": "openai/{model}", "api_base": f"http://127.0.0.1:{port}/v1", "api_key": "sk-x"}],
            "retries": 0,
            "timeouts": {"connect_s": 0.3, "total_s": 10},
        }
    ]
    load_litellm_sync()
    try:
        with GatewayServer(gateway_config(routes)) as server:
            post_stream(server.url, LLM, llm_request("unreachable"))  # the first call builds the client
            started = time.monotonic()
            reply = post_stream(server.url, LLM, llm_request("unreachable"))
            elapsed = time.monotonic() - started
    finally:
        for sock in [*fillers, black_hole]:
            sock.close()
    assert reply.status in (502, 504), reply.body
    assert 0.3 <= elapsed <= 0.3 + TOLERANCE_S + SLACK_S, (elapsed, reply.body)


def test_caller_going_away_cancels_a_unary_upstream_call(gateway: GatewayServer, fake: FakeUpstream) -> None:
    import httpx

    body = {"tenant_id": "t", "user_id": "u", "provider": "openai", "model": "hang-emb", "texts": ["x"]}
    fake.script("hang-emb", Hang())
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway.url}/inner/api/invoke/text-embedding",
            json={**body, "input_type": "document"},
            headers={"X-Inner-Api-Key": TEST_KEY},
            timeout=0.3,
        )
    hung = [r for r in fake.requests if r.model == "hang-emb"]
    fake.wait_until(lambda: all(r.ended_at is not None for r in hung), within=1.0)
    assert len(hung) == 1
