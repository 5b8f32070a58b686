"""The gateway with its embedded defaults (no routes configured): every model type is
answered by the real embedded models, through HTTP, read the way the daemon reads it (the
LLM's own behaviour: test_embedded_llm.py)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.invoke.text_split import speech_pieces
from tests.support.client import invoke_body, post_stream, post_unary
from tests.support.server import TEST_KEY, GatewayServer

SENTENCE = "The weather today is sunny and warm, so we will walk to the park."


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayServer]:
    with GatewayServer({"dify": {"inner_api_key": TEST_KEY}}) as server:
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "embedded models did not load"
            time.sleep(0.05)
        yield server


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def speak(gateway: GatewayServer, text: str, voice: str = "alloy") -> bytes:
    reply = post_stream(
        gateway.url, "/inner/api/invoke/tts", invoke_body("tts", "tts-1", content_text=text, voice=voice), kind="tts"
    )
    assert reply.status == 200 and reply.outcome.error is None and reply.outcome.dropped == []
    assert all(c["mime_type"] == "audio/mpeg" for c in reply.outcome.chunks)
    return b"".join(bytes.fromhex(c["result"]) for c in reply.outcome.chunks)


def test_readiness_lists_the_loaded_models(gateway: GatewayServer) -> None:
    """Whisper loads on its first call (this module's first test runs before any)."""
    body = httpx.get(f"{gateway.url}/readyz").json()
    assert body["embedded_models"] == {
        "local/smollm2-135m-instruct": "ready",
        "local/multilingual-e5-small": "ready",
        "local/espeak-ng": "ready",
        "local/whisper-tiny.en": "not loaded",
        "local/moderation-rules": "ready",
    }


def test_a_preload_list_loads_exactly_those_models() -> None:
    config = {"dify": {"inner_api_key": TEST_KEY}, "server": {"preload_local_models": ["local/whisper-tiny.en"]}}
    with GatewayServer(config) as server:
        deadline = time.monotonic() + 30
        while (reply := httpx.get(f"{server.url}/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "embedded models did not load"
            time.sleep(0.05)
        models = reply.json()["embedded_models"]
    assert models["local/whisper-tiny.en"] == "ready"
    assert models["local/multilingual-e5-small"] == "not loaded"


def test_text_embedding(gateway: GatewayServer) -> None:
    texts = ["how do I bake bread", "Instructions for baking a loaf at home", "The stock market fell today"]
    data = post_unary(
        gateway.url, "text-embedding", invoke_body("text_embedding", texts=texts, input_type="document")
    ).ok()
    assert data["model"] == "m" and len(data["embeddings"]) == 3
    assert {len(v) for v in data["embeddings"]} == {384}
    usage = data["usage"]
    assert usage["tokens"] == usage["total_tokens"] > 0 and usage["total_price"] == "0" and usage["latency"] > 0
    query = post_unary(
        gateway.url, "text-embedding", invoke_body("text_embedding", texts=texts[:1], input_type="query")
    )
    q = query.ok()["embeddings"][0]
    paraphrase, distractor = (sum(a * b for a, b in zip(q, d, strict=True)) for d in data["embeddings"][1:])
    assert paraphrase > distractor


def test_empty_texts_give_no_vectors(gateway: GatewayServer) -> None:
    data = post_unary(gateway.url, "text-embedding", invoke_body("text_embedding", texts=[], input_type="query")).ok()
    assert data["embeddings"] == [] and data["usage"]["tokens"] == 0


def test_multimodal_embedding_of_text_and_refusal_of_images(gateway: GatewayServer) -> None:
    docs = [{"content": "a cat", "content_type": "text"}, {"content": "a dog", "content_type": "text"}]
    body = invoke_body("multimodal_embedding", documents=docs, input_type="query")
    assert len(post_unary(gateway.url, "multimodal-embedding", body).ok()["embeddings"]) == 2
    docs.append({"content": "iVBORw0KGgo=", "content_type": "image"})
    reply = post_unary(gateway.url, "multimodal-embedding", body)
    assert reply.data is None and reply.error is not None and "text only" in reply.error


def test_rerank_orders_the_paraphrase_first(gateway: GatewayServer) -> None:
    docs = ["The stock market fell today", "Instructions for baking a loaf at home", "Cats sleep a lot"]
    body = invoke_body("rerank", query="how do I bake bread", docs=docs, score_threshold=0, top_n=2)
    data = post_unary(gateway.url, "rerank", body).ok()
    assert [d["index"] for d in data["docs"]][0] == 1 and len(data["docs"]) == 2
    assert data["docs"][0]["text"] == docs[1] and data["docs"][0]["score"] >= data["docs"][1]["score"]


def test_rerank_of_no_docs(gateway: GatewayServer) -> None:
    body = invoke_body("rerank", query="anything", docs=[], score_threshold=0, top_n=0)
    assert post_unary(gateway.url, "rerank", body).ok() == {"model": "m", "docs": []}


def test_multimodal_rerank_of_text(gateway: GatewayServer) -> None:
    body = invoke_body(
        "multimodal_rerank",
        query={"content": "cat", "content_type": "text"},
        docs=[{"content": "stock prices", "content_type": "text"}, {"content": "a cat", "content_type": "text"}],
        score_threshold=0,
        top_n=0,
    )
    docs = post_unary(gateway.url, "multimodal-rerank", body).ok()["docs"]
    assert [d["index"] for d in docs] == [1, 0] and docs[0]["text"] == "a cat"


def test_moderation(gateway: GatewayServer) -> None:
    assert post_unary(gateway.url, "moderation", invoke_body("moderation", text="I am going to kill you")).ok() == {
        "result": True
    }
    assert post_unary(gateway.url, "moderation", invoke_body("moderation", text="kill the process")).ok() == {
        "result": False
    }


def test_tts_then_speech_to_text_round_trip(gateway: GatewayServer) -> None:
    audio = speak(gateway, SENTENCE)
    assert audio[:2] in (b"\xff\xf3", b"\xff\xfb") or audio[:3] == b"ID3"
    transcript = post_unary(gateway.url, "speech2text", invoke_body("speech2text", "whisper-1", file=audio.hex())).ok()
    heard = set(words(transcript["result"]))
    expected = words(SENTENCE)
    assert sum(w in heard for w in expected) >= 0.7 * len(expected), transcript


def test_long_tts_streams_one_frame_per_piece_at_least(gateway: GatewayServer) -> None:
    text = " ".join(f"This is sentence number {n} of a long reply." for n in range(1, 80))
    reply = post_stream(
        gateway.url, "/inner/api/invoke/tts", invoke_body("tts", "tts-1", content_text=text, voice="x"), kind="tts"
    )
    assert reply.status == 200 and reply.outcome.error is None
    assert len(reply.outcome.chunks) >= len(speech_pieces(text)) >= 5
    audio = b"".join(bytes.fromhex(c["result"]) for c in reply.outcome.chunks)
    assert len(audio) > 200_000  # about a minute of speech: every piece is there


def test_speech_to_text_refuses_bad_hex_and_bad_audio(gateway: GatewayServer) -> None:
    odd = post_unary(gateway.url, "speech2text", invoke_body("speech2text", file="abc"))
    assert odd.error is not None and "odd length" in odd.error
    garbage = post_unary(gateway.url, "speech2text", invoke_body("speech2text", file=(b"not audio at all" * 64).hex()))
    assert garbage.error is not None and "decode" in garbage.error


def test_summary_without_a_model_is_a_clear_error(gateway: GatewayServer) -> None:
    reply = post_unary(
        gateway.url, "summary", {"tenant_id": "t", "user_id": "u", "text": "x" * 2000, "instruction": ""}
    )
    assert reply.error is not None and "summary_model" in reply.error


def test_llm_calls_of_any_provider_and_model_go_to_the_embedded_llm(gateway: GatewayServer) -> None:
    messages = [{"role": "user", "content": "Say hi"}]
    body = {**invoke_body("llm", "gpt-4o-mini"), "mode": "chat", "prompt_messages": messages, "stream": True}
    reply = post_stream(gateway.url, "/inner/api/invoke/llm", body)
    assert reply.status == 200 and reply.outcome.error is None and reply.text.strip()
    assert reply.headers["x-dify-gateway-target"] == "local/smollm2-135m-instruct"


@pytest.mark.asyncio
async def test_embedding_answers_promptly_while_audio_work_is_queued(gateway: GatewayServer) -> None:
    audio = speak(gateway, SENTENCE)
    async with httpx.AsyncClient(base_url=gateway.url, headers={"X-Inner-Api-Key": TEST_KEY}, timeout=120) as client:
        stt = invoke_body("speech2text", "whisper-1", file=audio.hex())
        tts = invoke_body("tts", "tts-1", content_text=SENTENCE * 3, voice="alloy")
        busy = [
            asyncio.create_task(
                client.post("/inner/api/invoke/" + ("speech2text" if i % 2 else "tts"), json=stt if i % 2 else tts)
            )
            for i in range(20)
        ]
        await asyncio.sleep(0.3)  # the audio work is queued and running
        started = time.monotonic()
        reply = await client.post(
            "/inner/api/invoke/text-embedding", json=invoke_body("text_embedding", texts=["ping"], input_type="query")
        )
        elapsed = time.monotonic() - started
        still_busy = sum(not t.done() for t in busy)
        results = await asyncio.gather(*busy)
    assert reply.status_code == 200 and reply.json()["error"] == ""
    assert still_busy > 0, "the audio calls finished too early to prove anything"
    assert elapsed < 1.5, f"an embedding took {elapsed:.2f} s while audio work ran"
    assert all(r.status_code == 200 for r in results)
