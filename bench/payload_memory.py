"""Peak memory of one worker for the largest payloads: 2,048 x 1,536 embeddings, a 10 MB
audio upload, a 1 MB TTS text.

Each case gets a fresh ``dify-gateway serve`` process (one worker, the ledger off) routed to
the loopback fake upstream (``tests.fakes.upstream``: OpenAI-shaped embeddings, speech and
transcriptions). After one small warm-up call of the same type and once its resident set
has stopped moving (litellm loads in the background), the peak resident set (``VmHWM`` in
/proc) is read, the large call is made, and the peak is read again: the
difference is what that payload cost at its highest. The TTS case raises ``limits.tts_chars``
to 1,000,000 (the default, 100,000, refuses a 1 MB text with 413 before any work).

Run: .venv/bin/python -m bench.payload_memory [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from tests.fakes.upstream import Embeddings, FakeUpstream, Speech
from tests.support.client import invoke_body
from tests.support.daemon import read_stream_reply, read_unary_reply
from tests.support.server import TEST_KEY, GatewayProcess, gateway_config

HEADERS = {"X-Inner-Api-Key": TEST_KEY}
WORDS = "the quick brown fox jumps over the lazy dog. ".split(" ")


def peak_mb(pid: int) -> float:
    """VmHWM: the highest resident set the process has had, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def settle(pid: int, timeout_s: float = 60) -> None:
    """Wait until the resident set stops moving (litellm is imported in the background after
    start-up, about +115 MB): what the payload adds must not include it."""
    deadline = time.monotonic() + timeout_s
    last = rss_mb(pid)
    steady = 0
    while steady < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_mb(pid)
        steady = steady + 1 if abs(now - last) < 1 else 0
        last = now


def text_of(size: int) -> str:
    """English-like text of ``size`` characters, in sentences (TTS splits at sentences)."""
    words: list[str] = []
    length = 0
    i = 0
    while length < size:
        word = WORDS[i % len(WORDS)] or "."
        words.append(word)
        length += len(word) + 1
        i += 1
    return " ".join(words)[:size]


def wav(payload_bytes: int) -> bytes:
    """A WAV header and ``payload_bytes`` of silence-ish PCM (16 kHz mono 16-bit)."""
    import struct

    header = b"RIFF" + struct.pack("<I", 36 + payload_bytes) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", payload_bytes)
    return header + bytes(payload_bytes)


def post(url: str, path: str, body: dict[str, Any], timeout: float = 600) -> httpx.Response:
    return httpx.post(f"{url}/inner/api/invoke/{path}", json=body, headers=HEADERS, timeout=timeout)


def embeddings(url: str, large: bool) -> str:
    count = 2048 if large else 4
    texts = [f"input number {i} " + "word " * 40 for i in range(count)]
    reply = post(url, "text-embedding", invoke_body("text-embedding", "text-embedding-3-large", texts=texts))
    data, error = read_unary_reply(reply.content, "text_embedding")
    assert error is None and data is not None, error
    vectors = data["embeddings"]
    assert len(vectors) == count and len(vectors[0]) == 1536
    return f"{count} x {len(vectors[0])}, reply {len(reply.content) / 1e6:.1f} MB"


def speech_to_text(url: str, large: bool) -> str:
    audio = wav(10 * 1024 * 1024 if large else 32_000)
    reply = post(url, "speech2text", invoke_body("speech2text", "whisper-1", file=audio.hex()))
    data, error = read_unary_reply(reply.content, "speech2text")
    assert error is None and data is not None, error
    return f"audio {len(audio) / 1e6:.1f} MB, body {len(audio) * 2 / 1e6:.1f} MB of hex"


def tts(url: str, large: bool) -> str:
    text = text_of(1_000_000 if large else 200)
    reply = post(url, "tts", invoke_body("tts", "tts-1", content_text=text, voice="alloy"))
    outcome = read_stream_reply(reply.status_code, reply.content, "tts")
    assert reply.status_code == 200 and outcome.error is None, (reply.status_code, outcome.error)
    return f"text {len(text) / 1e6:.1f} MB, {len(outcome.chunks)} audio frames, reply {len(reply.content) / 1e6:.1f} MB"


CASES: dict[str, tuple[str, Callable[[str, bool], str], dict[str, Any]]] = {
    "embeddings 2,048 x 1,536": ("text-embedding", embeddings, {}),
    "speech-to-text, 10 MB audio": ("speech2text", speech_to_text, {}),
    "TTS, 1 MB text": ("tts", tts, {"limits": {"tts_chars": 1_000_000}}),
}


def routes(fake: FakeUpstream) -> list[dict[str, Any]]:
    def route(model_type: str, model: str) -> dict[str, Any]:
        target = {"model": model, "api_base": fake.base_url, "api_key": "sk-bench"}
        return {"match": {"type": model_type}, "targets": [target]}

    return [
        route("text-embedding", "openai/text-embedding-3-large"),
        route("speech2text", "openai/whisper-1"),
        route("tts", "openai/tts-1"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case (fresh process each)")
    args = parser.parse_args()
    os.environ.setdefault("DIFY_GATEWAY_DATA_DIR", tempfile.mkdtemp(prefix="dgw-bench-data-"))
    fake = FakeUpstream()
    fake.start()
    fake.script("text-embedding-3-large", Embeddings(dims=1536))
    fake.script("tts-1", Speech(size=16_000))
    results: list[tuple[str, float, float, float, float, str]] = []
    try:
        for name, (_, call, extra) in CASES.items():
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as work:
                    config = gateway_config(routes(fake), ledger={"enabled": False}, **extra)
                    with GatewayProcess(config, Path(work), ready_timeout_s=60) as gateway:
                        assert gateway.process is not None
                        pid = gateway.process.pid
                        call(gateway.url, False)
                        settle(pid)
                        before = peak_mb(pid)
                        started = time.perf_counter()
                        detail = call(gateway.url, True)
                        seconds = time.perf_counter() - started
                        time.sleep(0.5)
                        results.append((name, before, peak_mb(pid), rss_mb(pid), seconds, detail))
                print(f"{name}: peak {results[-1][2]:.0f} MB ({results[-1][5]})", flush=True)
    finally:
        fake.stop()
    print()
    print(f"{'payload':30s} {'peak before':>12s} {'peak during':>12s} {'added':>8s} {'RSS after':>10s} {'time':>8s}")
    for name in CASES:
        rows = [r for r in results if r[0] == name]
        before = statistics.median(r[1] for r in rows)
        peak = statistics.median(r[2] for r in rows)
        after = statistics.median(r[3] for r in rows)
        seconds = statistics.median(r[4] for r in rows)
        print(
            f"{name:30s} {before:10.0f} MB {peak:10.0f} MB {peak - before:6.0f} MB {after:8.0f} MB {seconds:7.2f} s"
            f"   {rows[-1][5]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
