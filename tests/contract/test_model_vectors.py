"""The shared protocol vectors 07-15 (every non-LLM model path), sent to a running gateway
whose routes point at the loopback fake upstream with the providers the vectors name.

Replies are read the way the daemon reads them and compared with what the real SDK
received in the vector (``plugin_receives``), or with the vector's example body where the
vector has no ``plugin_receives``. Values the fake cannot reproduce (vector contents,
latency) are compared for type and shape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.upstream import (
    Chat,
    Embeddings,
    FakeUpstream,
    HttpError,
    Moderation,
    Rerank,
    Speech,
    Transcription,
    fake_audio,
    fake_embedding,
)
from tests.support.client import UNARY_KINDS, post_stream, post_unary
from tests.support.server import GatewayServer, gateway_config, one_target_route
from tests.support.vectors import load_vector


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayServer]:
    routes = [
        one_target_route("text-embedding", "openai", "openai/{model}", upstream.base_url),
        one_target_route("multimodal-embedding", "jina", "jina_ai/{model}", upstream.base_url),
        one_target_route("rerank", "cohere", "cohere/{model}", upstream.root_url),
        one_target_route("multimodal-rerank", "jina", "jina_ai/{model}", upstream.base_url),
        one_target_route("tts", "openai", "openai/{model}", upstream.base_url),
        one_target_route("speech2text", "openai", "openai/{model}", upstream.base_url),
        one_target_route("moderation", "openai", "openai/{model}", upstream.base_url),
    ]
    summary = {
        "model": "openai/gpt-4o-mini",
        "api_base": upstream.base_url,
        "api_key": "sk-test",
        "context_tokens": 256,
    }
    with GatewayServer(gateway_config(routes, summary_model=summary)) as server:
        yield server


def vector_reply(vector: dict[str, Any]) -> Any:
    return vector["response_example"]["body"]["data"]


def post_vector(gateway: GatewayServer, vector: dict[str, Any]) -> Any:
    name = vector["path"].removeprefix("/inner/api/invoke/")
    assert name in UNARY_KINDS
    return post_unary(gateway.url, name, vector["request"])


def assert_usage_shape(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(got) == set(expected)
    assert isinstance(got["latency"], float) and got["latency"] > 0
    assert {k: v for k, v in got.items() if k != "latency"} == {k: v for k, v in expected.items() if k != "latency"}


def test_07_text_embedding(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("07")
    fake.script("text-embedding-3-small", Embeddings(dims=4, usage_tokens=4))
    data = post_vector(gateway, vector).ok()
    expected = vector["plugin_receives"][0]["data"]
    assert data["model"] == expected["model"]
    assert data["embeddings"] == [fake_embedding("hello world", 4)]
    assert_usage_shape(data["usage"], expected["usage"])  # prices from litellm's model map match Dify's
    assert fake.requests[-1].json["input"] == ["hello world"]


def test_08_text_embedding_error_is_an_envelope_error_with_http_200(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("08")
    fake.script("text-embedding-3-small", HttpError(401, "Incorrect API key provided"))
    reply = post_vector(gateway, vector)
    assert reply.status == vector["response_example"]["http_status"] == 200
    assert reply.data is None and reply.error is not None
    assert reply.error.startswith("request failed: ") and "Incorrect API key provided" in reply.error
    assert "text-embedding-3-small" in reply.error and "sk-test" not in reply.error


def test_09_multimodal_embedding(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("09")
    data = post_vector(gateway, vector).ok()
    expected = vector_reply(vector)
    assert data["model"] == expected["model"] and len(data["embeddings"]) == 2
    assert set(data["usage"]) == set(expected["usage"])
    sent = fake.requests[-1].json["input"]
    assert sent[0] == {"text": "a cat"} and "iVBORw0KGgo=" in str(sent[1])


def test_10_rerank(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("10")
    fake.script("rerank-v3", Rerank(scores=[0.1033, 0.9412]))
    assert post_vector(gateway, vector).ok() == vector_reply(vector)
    assert fake.requests[-1].path == "/v2/rerank"


def test_10_rerank_threshold_filters(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("10")
    fake.script("rerank-v3", Rerank(scores=[0.05, 0.9412]))
    assert post_vector(gateway, vector).ok()["docs"] == [{"index": 1, "text": "b", "score": 0.9412}]


def test_11_multimodal_rerank(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("11")
    fake.script("jina-reranker-m0", Rerank(scores=[0.8123]))
    assert post_vector(gateway, vector).ok() == vector_reply(vector)


def test_12_tts(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("12")
    fake.script("tts-1", Speech(size=6))
    reply = post_stream(gateway.url, vector["path"], vector["request"], kind="tts")
    assert reply.status == 200 and reply.outcome.error is None and reply.outcome.dropped == []
    assert reply.outcome.chunks == [{"result": fake_audio(6).hex(), "mime_type": "audio/mpeg"}]
    assert reply.body[:14].hex(" ")[:11] == vector["response_example"]["first_frame_header_hex"][:11]
    sent = fake.requests[-1].json
    assert sent["input"] == "Hello" and sent["voice"] == "alloy"


def test_12_tts_upstream_error_is_an_error_frame(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("12")
    fake.script("tts-1", HttpError(500))
    reply = post_stream(gateway.url, vector["path"], vector["request"], kind="tts")
    assert reply.status == 200 and reply.outcome.chunks == []
    assert reply.outcome.error is not None and "tts-1" in reply.outcome.error


def test_12_tts_first_audio_arrives_before_the_text_is_done(gateway: GatewayServer, fake: FakeUpstream) -> None:
    text = "First sentence here. " + " ".join(f"Then sentence {n} follows with more words." for n in range(60))
    # The first piece answers at once; every later one takes 0.4 s to stream.
    fake.script("tts-1", Speech(size=100), *[Speech(size=2000, chunk_size=1000, gap_s=0.4)] * 20)
    body = {**load_vector("12")["request"], "content_text": text}
    started = time.monotonic()
    reply = post_stream(gateway.url, "/inner/api/invoke/tts", body, kind="tts")
    total = time.monotonic() - started
    assert reply.outcome.error is None and len(reply.outcome.chunks) >= 4
    arrivals = [r.arrived_at for r in fake.requests]
    assert reply.outcome.chunks[0]["result"] == fake_audio(100).hex()  # frames in text order
    assert len(arrivals) >= 4 and arrivals[2] - arrivals[0] < 0.3  # pieces requested ahead, concurrently
    assert total < 0.4 * (len(arrivals) - 1)  # faster than one piece after another


def test_13_speech2text(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("13")
    fake.script("whisper-1", Transcription(text="hello world"))
    assert post_vector(gateway, vector).ok() == vector_reply(vector)
    upload = fake.requests[-1].files[0]
    assert upload.data == b"ID3\x03\x00" and upload.filename is not None and upload.filename.endswith(".mp3")


def test_13_speech2text_sniffs_wav_and_takes_10_mb(gateway: GatewayServer, fake: FakeUpstream) -> None:
    audio = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(10 * 1024 * 1024)
    body = {**load_vector("13")["request"], "file": audio.hex()}
    assert post_unary(gateway.url, "speech2text", body, timeout=120).ok() == {"result": "hello world"}
    upload = fake.requests[-1].files[0]
    assert upload.filename is not None and upload.filename.endswith(".wav") and upload.data == audio


def test_14_moderation(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("14")
    assert post_vector(gateway, vector).ok() == vector_reply(vector) == {"result": False}
    fake.script("omni-moderation-latest", Moderation(flag_words=["some"]))
    assert post_vector(gateway, vector).ok() == {"result": True}


def test_15_summary(gateway: GatewayServer, fake: FakeUpstream) -> None:
    vector = load_vector("15")
    expected = vector_reply(vector)["summary"]
    fake.default(Chat(deltas=[expected]))
    data = post_vector(gateway, vector).ok()
    calls = fake.requests
    assert len(calls) >= 1 and all(c.path == "/v1/chat/completions" for c in calls)
    assert data == {"summary": "\n".join([expected] * len(calls))}
    sent = calls[0].json
    assert sent["temperature"] == 0.8 and sent["top_p"] == 0.8 and not sent.get("stream")
    assert sent["messages"][0]["role"] == "system" and "<extra_instruction>" in sent["messages"][0]["content"]
    assert sent["messages"][1]["content"] in vector["request"]["text"]


def test_summary_of_short_text_comes_back_unchanged_without_a_call(gateway: GatewayServer, fake: FakeUpstream) -> None:
    body = {**load_vector("15")["request"], "text": "short text"}
    assert post_unary(gateway.url, "summary", body).ok() == {"summary": "short text"}
    assert fake.requests == []


def test_summary_pieces_run_concurrently(gateway: GatewayServer, fake: FakeUpstream) -> None:
    text = "\n".join(f"Paragraph {n}: " + "words " * 60 for n in range(40))  # many pieces at 256 tokens
    fake.default(Chat(deltas=["s"], headers_delay_s=0.3))
    started = time.monotonic()
    data = post_unary(gateway.url, "summary", {**load_vector("15")["request"], "text": text}).ok()
    elapsed = time.monotonic() - started
    calls = len(fake.requests)
    assert calls >= 8 and data["summary"].split("\n") == ["s"] * calls
    assert elapsed < 0.3 * calls / 2  # four at a time, not one after another


def test_unknown_model_is_a_clear_error_on_every_unary_path(gateway: GatewayServer, fake: FakeUpstream) -> None:
    for prefix in ("07", "10", "13", "14"):
        vector = load_vector(prefix)
        reply = post_unary(
            gateway.url, vector["path"].removeprefix("/inner/api/invoke/"), {**vector["request"], "provider": "acme"}
        )
        assert reply.data is None and reply.error is not None and "no route" in reply.error
    assert fake.requests == []


def test_batch_of_2048_texts_keeps_order(gateway: GatewayServer, fake: FakeUpstream) -> None:
    texts = [f"text number {i}" for i in range(2048)]
    body = {**load_vector("07")["request"], "texts": texts}
    fake.script("text-embedding-3-small", Embeddings(dims=8))
    data = post_unary(gateway.url, "text-embedding", body, timeout=120).ok()
    assert data["embeddings"] == [fake_embedding(t, 8) for t in texts]
    assert fake.count("/v1/embeddings") == 1  # OpenAI takes 2,048 inputs per call


def test_12_tts_without_audio_is_an_error_frame(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("tts-1", Speech(size=0))
    reply = post_stream(gateway.url, "/inner/api/invoke/tts", load_vector("12")["request"], kind="tts")
    assert reply.status == 200 and reply.outcome.chunks == []
    assert reply.outcome.error is not None and "no audio" in reply.outcome.error
