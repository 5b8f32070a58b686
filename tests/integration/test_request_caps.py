"""``limits``: through a real gateway process with the embedded models, each cap refuses a
request one over it with a clear 413 before any model work, and a request at a cap is served.

One process serves two sets of routes: the embedded defaults (default limits) for every
model name, and, in front of them, the same models for model ``small`` with small caps of
their own (a route's ``limits``), so requests at those caps are cheap to serve.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.catalog import LOCAL_MODELS
from gateway.config import default_routes
from tests.support.client import invoke_body, post_stream
from tests.support.daemon import read_unary_reply
from tests.support.server import TEST_KEY, GatewayProcess

SENTENCE = "The weather today is sunny and warm, so we will walk to the park. "
SUFFIX = " (set in the gateway configuration)"
WAV_BYTES = 44 + 2 * 16_000  # one second of 16 kHz mono 16-bit PCM
SMALL = {
    "embedding_inputs": 8,
    "embedding_input_chars": 3000,
    "rerank_docs": 8,
    "rerank_doc_chars": 3000,
    "tts_chars": 400,
    "moderation_chars": 5000,
    "speech2text_bytes": WAV_BYTES,
}


def small_routes() -> list[dict[str, Any]]:
    return [
        {
            "name": f"small-{model_type}",
            "match": {"type": model_type, "model": "small"},
            "targets": [{"model": models[0]}],
            "limits": SMALL,
        }
        for model_type, models in LOCAL_MODELS.items()
    ]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    # No drain grace: nothing routes traffic here, and it would add 5 s to the teardown.
    config = {"routes": [*small_routes(), *default_routes()], "server": {"drain_grace_s": 0}}
    with GatewayProcess(config, tmp_path_factory.mktemp("caps"), ready_timeout_s=60) as process:
        yield process


def wav(n_bytes: int) -> bytes:
    """A valid WAV file of exactly ``n_bytes`` (silence, then a quiet tone)."""
    samples = (n_bytes - 44) // 2
    pcm = b"".join(struct.pack("<h", 800 if (i // 20) % 2 else -800) for i in range(samples))
    pcm += b"\0" * ((n_bytes - 44) % 2)
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    )
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm


def post(gateway: GatewayProcess, path: str, body: dict[str, Any]) -> tuple[int, bytes, float]:
    started = time.monotonic()
    reply = httpx.post(
        f"{gateway.url}/inner/api/invoke/{path}",
        content=orjson.dumps(body),
        headers={"X-Inner-Api-Key": TEST_KEY, "Content-Type": "application/json"},
        timeout=120,
    )
    return reply.status_code, reply.content, time.monotonic() - started


def refused(setting: str, what: str, seen: int, unit: str, cap: int) -> str:
    return f"{setting}: {what} has {seen:,} {unit}, over the limit of {cap:,}{SUFFIX}"


def text_docs(n: int) -> list[dict[str, str]]:
    return [{"content": f"document {i}", "content_type": "text"} for i in range(n)]


# (path, body, expected message) one over each default cap.
OVER_DEFAULTS: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    (
        "text-embedding",
        lambda: invoke_body("text-embedding", "e5", texts=["a"] * 2049),
        refused("limits.embedding_inputs", "texts", 2049, "inputs", 2048),
    ),
    (
        "text-embedding",
        lambda: invoke_body("text-embedding", "e5", texts=["fine", "a" * 200_001]),
        refused("limits.embedding_input_chars", "texts[1]", 200_001, "characters", 200_000),
    ),
    (
        "multimodal-embedding",
        lambda: invoke_body("multimodal-embedding", "e5", documents=text_docs(2049)),
        refused("limits.embedding_inputs", "documents", 2049, "inputs", 2048),
    ),
    (
        "rerank",
        lambda: invoke_body("rerank", "r", query="park", docs=[f"doc {i}" for i in range(1001)]),
        refused("limits.rerank_docs", "docs", 1001, "documents", 1000),
    ),
    (
        "rerank",
        lambda: invoke_body("rerank", "r", query="q" * 200_001, docs=["doc"]),
        refused("limits.rerank_doc_chars", "query", 200_001, "characters", 200_000),
    ),
    (
        "rerank",
        lambda: invoke_body("rerank", "r", query="park", docs=["doc", "doc", "d" * 200_001]),
        refused("limits.rerank_doc_chars", "docs[2]", 200_001, "characters", 200_000),
    ),
    (
        "multimodal-rerank",
        lambda: invoke_body(
            "multimodal-rerank", "r", query={"content": "q", "content_type": "text"}, docs=text_docs(1001)
        ),
        refused("limits.rerank_docs", "docs", 1001, "documents", 1000),
    ),
    (
        "moderation",
        lambda: invoke_body("moderation", "m", text="x" * 1_000_001),
        refused("limits.moderation_chars", "text", 1_000_001, "characters", 1_000_000),
    ),
    (
        "speech2text",
        lambda: invoke_body("speech2text", "whisper-1", file="00" * (30 * 1024 * 1024 + 1)),
        refused("limits.speech2text_bytes", "file", 30 * 1024 * 1024 + 1, "bytes of audio", 30 * 1024 * 1024),
    ),
]


@pytest.mark.parametrize(("path", "body", "message"), OVER_DEFAULTS, ids=[m.split(":")[0] for _, _, m in OVER_DEFAULTS])
def test_one_over_a_default_cap_is_a_clear_413_before_any_work(
    gateway: GatewayProcess, path: str, body: Callable[[], dict[str, Any]], message: str
) -> None:
    status, content, took = post(gateway, path, body())
    assert status == 413
    data, error = read_unary_reply(content, path.replace("-", "_"))
    assert data is None and error == f"request failed: {message}"
    # Served, 2049 texts take the embedded model ~25 s and 1001 documents ~15 s.
    assert took < 10, took


def test_tts_over_the_default_cap_is_refused_before_the_stream(gateway: GatewayProcess) -> None:
    text = (SENTENCE * 1600)[:100_001]
    started = time.monotonic()
    reply = post_stream(
        gateway.url, "/inner/api/invoke/tts", invoke_body("tts", "tts-1", content_text=text), kind="tts"
    )
    assert time.monotonic() - started < 10
    assert reply.status == 413 and reply.outcome.chunks == []
    envelope = orjson.loads(reply.body)
    assert envelope == {
        "data": None,
        "error": refused("limits.tts_chars", "content_text", 100_001, "characters", 100_000),
    }


# (path, body at the small cap, one over it, check of the served reply)
AT_SMALL_CAPS: list[tuple[str, dict[str, Any], dict[str, Any], Callable[[dict[str, Any]], bool], str]] = [
    (
        "text-embedding",
        invoke_body("text-embedding", "small", texts=[f"text {i}" for i in range(8)]),
        invoke_body("text-embedding", "small", texts=[f"text {i}" for i in range(9)]),
        lambda data: len(data["embeddings"]) == 8,
        refused("route 'small-text-embedding' limits.embedding_inputs", "texts", 9, "inputs", 8),
    ),
    (
        "text-embedding",
        invoke_body("text-embedding", "small", texts=["short", (SENTENCE * 50)[:3000]]),
        invoke_body("text-embedding", "small", texts=["short", (SENTENCE * 50)[:3001]]),
        lambda data: len(data["embeddings"]) == 2,
        refused("route 'small-text-embedding' limits.embedding_input_chars", "texts[1]", 3001, "characters", 3000),
    ),
    (
        "multimodal-embedding",
        invoke_body("multimodal-embedding", "small", documents=text_docs(8)),
        invoke_body("multimodal-embedding", "small", documents=text_docs(9)),
        lambda data: len(data["embeddings"]) == 8,
        refused("route 'small-multimodal-embedding' limits.embedding_inputs", "documents", 9, "inputs", 8),
    ),
    (
        "rerank",
        invoke_body("rerank", "small", query="park", docs=[f"a walk in park {i}" for i in range(7)] + ["d" * 3000]),
        invoke_body("rerank", "small", query="park", docs=[f"a walk in park {i}" for i in range(9)]),
        lambda data: len(data["docs"]) == 8,
        refused("route 'small-rerank' limits.rerank_docs", "docs", 9, "documents", 8),
    ),
    (
        "multimodal-rerank",
        invoke_body("multimodal-rerank", "small", query={"content": "q", "content_type": "text"}, docs=text_docs(8)),
        invoke_body("multimodal-rerank", "small", query={"content": "q" * 3001, "content_type": "text"}, docs=[]),
        lambda data: len(data["docs"]) == 8,
        refused("route 'small-multimodal-rerank' limits.rerank_doc_chars", "query", 3001, "characters", 3000),
    ),
    (
        "moderation",
        invoke_body("moderation", "small", text=(SENTENCE * 100)[:4990] + " kill yourself"[:10]),
        invoke_body("moderation", "small", text="y" * 5001),
        lambda data: isinstance(data["result"], bool),
        refused("route 'small-moderation' limits.moderation_chars", "text", 5001, "characters", 5000),
    ),
    (
        "speech2text",
        invoke_body("speech2text", "small", file=wav(WAV_BYTES).hex()),
        invoke_body("speech2text", "small", file=wav(WAV_BYTES + 1).hex()),
        lambda data: isinstance(data["result"], str),
        refused(
            "route 'small-speech2text' limits.speech2text_bytes", "file", WAV_BYTES + 1, "bytes of audio", WAV_BYTES
        ),
    ),
]


@pytest.mark.parametrize(
    ("path", "at_cap", "over", "served", "message"), AT_SMALL_CAPS, ids=[m.split(":")[0] for *_, m in AT_SMALL_CAPS]
)
def test_a_route_cap_serves_a_request_at_it_and_names_the_route_one_over(
    gateway: GatewayProcess,
    path: str,
    at_cap: dict[str, Any],
    over: dict[str, Any],
    served: Callable[[dict[str, Any]], bool],
    message: str,
) -> None:
    status, content, _ = post(gateway, path, at_cap)
    data, error = read_unary_reply(content, path.replace("-", "_"))
    assert status == 200 and error is None and data is not None, content[:300]
    assert served(data)
    status, content, _ = post(gateway, path, over)
    assert status == 413
    assert read_unary_reply(content, path.replace("-", "_")) == (None, f"request failed: {message}")


def test_tts_at_a_route_cap_is_spoken_and_one_over_is_refused(gateway: GatewayProcess) -> None:
    text = (SENTENCE * 10)[:400]
    reply = post_stream(
        gateway.url, "/inner/api/invoke/tts", invoke_body("tts", "small", content_text=text), kind="tts"
    )
    assert reply.status == 200 and reply.outcome.error is None and len(reply.outcome.chunks) >= 1
    reply = post_stream(gateway.url, "/inner/api/invoke/tts", invoke_body("tts", "small", content_text=text + "x"))
    assert reply.status == 413
    expected = refused("route 'small-tts' limits.tts_chars", "content_text", 401, "characters", 400)
    assert orjson.loads(reply.body)["error"] == expected


@pytest.mark.parametrize("blank", [" \n ", " " * 5000], ids=["short", "split-on-a-thread"])
def test_tts_of_a_blank_text_is_a_400_before_the_stream(gateway: GatewayProcess, blank: str) -> None:
    reply = post_stream(gateway.url, "/inner/api/invoke/tts", invoke_body("tts", "tts-1", content_text=blank))
    assert reply.status == 400
    assert orjson.loads(reply.body) == {"data": None, "error": "invalid payload: content_text has nothing to speak"}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_long_allowed_tts_text_streams_with_bounded_memory(gateway: GatewayProcess) -> None:
    """A long text (split on a worker thread) is spoken piece by piece: the first audio comes
    early and the gateway's memory grows by far less than the audio it sends."""
    assert gateway.process is not None
    pid = gateway.process.pid
    text = (SENTENCE * 200)[:10_000]
    before = peak = rss_bytes(pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    first_byte: float | None = None
    sent = 0
    try:
        body = orjson.dumps(invoke_body("tts", "tts-1", content_text=text))
        with httpx.stream(
            "POST",
            f"{gateway.url}/inner/api/invoke/tts",
            content=body,
            headers={"X-Inner-Api-Key": TEST_KEY, "Content-Type": "application/json"},
            timeout=120,
        ) as reply:
            assert reply.status_code == 200
            for chunk in reply.iter_bytes():
                first_byte = first_byte or time.monotonic() - started
                sent += len(chunk)
    finally:
        stop.set()
        sampler.join()
    total = time.monotonic() - started
    assert first_byte is not None and sent > 8 * 2**20  # ~10 min of speech, hex-encoded
    assert first_byte < total / 3, (first_byte, total)
    # Gathered, the audio and its hex would be in memory at once: more than ``sent``.
    assert peak - before < sent / 2, (before, peak, sent)


def test_healthz_stays_prompt_while_20_mib_of_moderation_text_is_refused(gateway: GatewayProcess) -> None:
    """Before the cap, 20 MiB of text kept the rules busy for about a minute."""
    latencies: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                started = time.perf_counter()
                assert client.get(f"{gateway.url}/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        time.sleep(0.1)
        status, content, took = post(gateway, "moderation", invoke_body("moderation", "m", text="word " * 4 * 2**20))
        time.sleep(0.1)
    finally:
        stop.set()
        poller.join()
    assert status == 413 and b"limits.moderation_chars: text has 20,971,520 characters" in content
    assert took < 10
    assert len(latencies) > 5 and max(latencies) < 1.0, max(latencies)
