"""What the request log and the metrics say about streams that did not end normally: a caller
hanging up mid-stream is ``cancelled`` (not ``ok``), and a stream or call cut by the route's
total deadline says that deadline and its length (not "within 0 s")."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.invoke.text_split import speech_pieces
from gateway.logs import REQUEST_LOGGER
from tests.fakes.upstream import Chat, Embeddings, FakeUpstream, Speech
from tests.support.client import invoke_body, llm_request, post_stream, post_unary
from tests.support.server import TEST_KEY, GatewayServer, gateway_config

LLM = "/inner/api/invoke/llm"
TTS = "/inner/api/invoke/tts"
TOTAL_S = 1.5
SENTENCES = " ".join(f"Sentence number {i} is here." for i in range(200))
PIECES = len(speech_pieces(SENTENCES))  # upstream calls for the whole text


class Lines(logging.Handler):
    """The request log lines' fields, as the app logs them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(dict(record.__dict__))

    def wait_for(self, request_id: str, timeout_s: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.get("request_id") == request_id:
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no request log line for {request_id}")


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger(REQUEST_LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayServer]:
    target = {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-x"}
    timeouts = {"total_s": TOTAL_S, "ttft_s": 30, "idle_s": 30}
    routes = [
        # Requests with provider "deadline" get the short total deadline, the others 30 s.
        *(
            {"match": {"type": kind, "provider": "deadline"}, "targets": [target], "retries": 0, "timeouts": timeouts}
            for kind in ("llm", "tts")
        ),
        {"match": {"type": "llm"}, "targets": [target], "retries": 0},
        {"match": {"type": "tts"}, "targets": [target], "retries": 0},
        {
            "name": "emb-own",
            "match": {"type": "text-embedding", "provider": "own"},
            "targets": [{**target, "timeout_s": 0.5}],
            "retries": 0,
            "timeouts": timeouts,
        },
        {
            "name": "emb-total",
            "match": {"type": "text-embedding", "provider": "total"},
            "targets": [{**target, "timeout_s": 5}],
            "retries": 0,
            "timeouts": timeouts,
        },
    ]
    with GatewayServer(gateway_config(routes)) as server:
        yield server


def hang_up_after_first_chunk(url: str, path: str, body: dict[str, Any], request_id: str) -> None:
    headers = {"X-Inner-Api-Key": TEST_KEY, "X-Request-Id": request_id}
    with httpx.stream("POST", url + path, json=body, headers=headers, timeout=10) as reply:
        assert reply.status_code == 200
        next(reply.iter_raw())
    # Leaving the block closes the connection with the rest of the stream unread.


def outcome_count(url: str, kind: str, outcome: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("dify_gateway_requests_total{") and f'type="{kind}"' in line:
            if f'outcome="{outcome}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# litellm's aspeech builds its coroutine in an executor thread: a piece cancelled there (the
# caller left) drops that coroutine unawaited, which Python reports when it is collected.
@pytest.mark.filterwarnings("ignore:coroutine 'OpenAIChatCompletion.async_audio_speech' was never awaited")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_tts_stream_the_caller_hangs_up_on_is_cancelled_not_ok(
    gateway: GatewayServer, fake: FakeUpstream, lines: Lines
) -> None:
    fake.script("tts-hangup", Speech(size=3000, chunk_size=1000, gap_s=0.1))
    before = outcome_count(gateway.url, "tts", "cancelled")
    body = invoke_body("tts", "tts-hangup", content_text=SENTENCES, voice="alloy")
    hang_up_after_first_chunk(gateway.url, TTS, body, "tts-hangup-1")
    line = lines.wait_for("tts-hangup-1")
    assert (line["outcome"], line["status"]) == ("cancelled", 200)
    assert outcome_count(gateway.url, "tts", "cancelled") == before + 1
    time.sleep(0.5)
    assert fake.count(model="tts-hangup") < PIECES  # the rest of the text was never synthesised
    gc.collect()  # the dropped coroutines are reported here, under this test's filters


def test_an_llm_stream_the_caller_hangs_up_on_is_cancelled_not_ok(
    gateway: GatewayServer, fake: FakeUpstream, lines: Lines
) -> None:
    fake.script("llm-hangup", Chat(deltas=["word "] * 30, gap_s=0.03))
    hang_up_after_first_chunk(gateway.url, LLM, llm_request("llm-hangup"), "llm-hangup-1")
    line = lines.wait_for("llm-hangup-1")
    assert (line["outcome"], line["status"]) == ("cancelled", 200)


def test_streams_read_to_the_end_are_still_ok(gateway: GatewayServer, fake: FakeUpstream, lines: Lines) -> None:
    fake.script("tts-whole", Speech(size=2000))
    fake.script("llm-whole", Chat(deltas=["a ", "b"]))
    headers = {"X-Inner-Api-Key": TEST_KEY}
    tts = invoke_body("tts", "tts-whole", content_text="One. Two.", voice="alloy")
    httpx.post(gateway.url + TTS, json=tts, headers={**headers, "X-Request-Id": "tts-whole-1"}, timeout=10)
    httpx.post(gateway.url + LLM, json=llm_request("llm-whole"), headers={**headers, "X-Request-Id": "llm-whole-1"})
    assert lines.wait_for("tts-whole-1")["outcome"] == "ok"
    assert lines.wait_for("llm-whole-1")["outcome"] == "ok"


DEADLINE_MESSAGE = f"the route's total deadline (timeouts.total_s) of {TOTAL_S:g} s was reached"


def test_a_tts_stream_cut_at_the_total_deadline_says_so(gateway: GatewayServer, fake: FakeUpstream) -> None:
    # Every piece takes ~0.6 s, three at a time: audio is out before the deadline cuts the rest.
    assert PIECES >= 9
    fake.script("tts-slow", Speech(size=3000, chunk_size=1000, gap_s=0.3))
    started = time.monotonic()
    body = invoke_body("tts", "tts-slow", provider="deadline", content_text=SENTENCES, voice="alloy")
    reply = post_stream(gateway.url, TTS, body, kind="tts")
    elapsed = time.monotonic() - started
    assert reply.status == 200 and reply.outcome.chunks, "audio went out before the deadline"
    assert reply.outcome.error is not None and DEADLINE_MESSAGE in reply.outcome.error, reply.outcome.error
    assert "within 0 s" not in reply.outcome.error
    assert TOTAL_S - 0.1 <= elapsed <= TOTAL_S + 2.0


def test_an_llm_stream_cut_at_the_total_deadline_says_so(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("llm-slow", Chat(deltas=[f"d{i} " for i in range(40)], gap_s=0.1))
    reply = post_stream(gateway.url, LLM, llm_request("llm-slow", provider="deadline"))
    assert reply.text, "text went out before the deadline"
    assert reply.outcome.error is not None and DEADLINE_MESSAGE in reply.outcome.error, reply.outcome.error


def test_a_unary_call_cut_by_a_deadline_names_the_deadline(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("emb-slow", Embeddings(delay_s=TOTAL_S + 1))
    # The target's own timeout_s (5 s) is longer than the route's total: the total cuts it.
    body = invoke_body("text-embedding", "emb-slow", provider="total", texts=["a"])
    reply = post_unary(gateway.url, "text-embedding", body)
    assert reply.error is not None and DEADLINE_MESSAGE in reply.error, reply.error
    # A target's own timeout_s shorter than the total is named instead (by the plan or by the
    # client, whichever notices first: both use that limit).
    body = invoke_body("text-embedding", "emb-slow", provider="own", texts=["a"])
    reply = post_unary(gateway.url, "text-embedding", body)
    assert reply.error is not None and " 0.5 s " in reply.error and "total" not in reply.error, reply.error
