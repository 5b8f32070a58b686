"""Latency of every non-LLM model type: the embedded models, and the remote adapters
against a loopback fake upstream. Prints p50 / p90 per path over N sequential calls.

Run: .venv/bin/python bench/model_types.py [N]     (default N=30; no network needed)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.upstream import FakeUpstream
from tests.support.client import invoke_body
from tests.support.server import TEST_KEY, GatewayServer, gateway_config

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
SENTENCE = "The weather today is sunny and warm, so we will walk to the park."


def cases(audio: bytes) -> list[tuple[str, dict[str, Any]]]:
    docs = [f"document {i} about topic {i % 5}" for i in range(20)]
    return [
        ("text-embedding (1 text)", invoke_body("text_embedding", texts=["hello world"], input_type="query")),
        ("text-embedding (16 texts)", invoke_body("text_embedding", texts=docs[:16], input_type="document")),
        ("rerank (20 docs)", invoke_body("rerank", query="topic 3", docs=docs, score_threshold=0, top_n=5)),
        ("tts (1 sentence)", invoke_body("tts", "tts-1", content_text=SENTENCE, voice="alloy")),
        ("speech2text (4 s mp3)", invoke_body("speech2text", "whisper-1", file=audio.hex())),
        ("moderation", invoke_body("moderation", text="I am going to walk the dog")),
    ]


PATHS = {"text": "text-embedding", "rera": "rerank", "tts ": "tts", "spee": "speech2text", "mode": "moderation"}


def measure(base_url: str, label: str, audio: bytes) -> None:
    client = httpx.Client(base_url=base_url, headers={"X-Inner-Api-Key": TEST_KEY}, timeout=60)
    for name, body in cases(audio):
        path = "/inner/api/invoke/" + PATHS[name[:4]]
        client.post(path, json=body).raise_for_status()  # warm-up
        times = []
        for _ in range(N):
            started = time.perf_counter()
            response = client.post(path, json=body)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
            if not path.endswith("tts"):
                assert response.json()["error"] == "", response.text[:300]
        times.sort()
        print(
            f"{label:8} {name:28} p50 {statistics.median(times):8.1f} ms   p90 {times[int(len(times) * 0.9)]:8.1f} ms"
        )


def main() -> None:
    with GatewayServer({"dify": {"inner_api_key": TEST_KEY}}) as local:
        while httpx.get(local.url + "/readyz").status_code != 200:
            time.sleep(0.05)
        reply = httpx.post(
            local.url + "/inner/api/invoke/tts",
            json=invoke_body("tts", "tts-1", content_text=SENTENCE, voice="alloy"),
            headers={"X-Inner-Api-Key": TEST_KEY},
        )
        from tests.support.daemon import read_stream_reply

        audio = b"".join(bytes.fromhex(c["result"]) for c in read_stream_reply(200, reply.content, "tts").chunks)
        measure(local.url, "local", audio)
    with FakeUpstream() as fake:
        routes = [
            {"match": {"type": t}, "targets": [{"model": m, "api_base": base, "api_key": "sk-x"}]}
            for t, m, base in [
                ("text-embedding", "openai/text-embedding-3-small", fake.base_url),
                ("rerank", "cohere/rerank-v3.5", fake.root_url),
                ("tts", "openai/tts-1", fake.base_url),
                ("speech2text", "openai/whisper-1", fake.base_url),
                ("moderation", "openai/omni-moderation-latest", fake.base_url),
            ]
        ]
        with GatewayServer(gateway_config(routes)) as remote:
            measure(remote.url, "remote", audio)


if __name__ == "__main__":
    main()
