"""The fake OpenAI-compatible upstream, exercised over real loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.fakes.upstream import (
    Chat,
    Completion,
    Embeddings,
    FakeUpstream,
    Hang,
    HttpError,
    Moderation,
    Rerank,
    Reset,
    Speech,
    ToolCallSpec,
    Transcription,
    fake_audio,
    fake_embedding,
    rerank_score,
)

CHAT = "/v1/chat/completions"

# ``fake`` (tests/conftest.py) is a session-wide FakeUpstream, reset per test.


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def read_sse(resp: aiohttp.ClientResponse, into: list[str]) -> None:
    """Collect ``data:`` payloads into ``into`` (kept on error for assertions)."""
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            into.append(line.removeprefix("data: "))


async def stream_chat(session: aiohttp.ClientSession, fake: FakeUpstream, **body: Any) -> list[str]:
    payloads: list[str] = []
    payload = {"model": "m", "messages": [], "stream": True, **body}
    async with session.post(fake.base_url + "/chat/completions", json=payload) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        await read_sse(resp, payloads)
    return payloads


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# -- chat streaming --------------------------------------------------------


@pytest.mark.asyncio
async def test_stream_deltas_reassemble_in_openai_shape(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("m", Chat(deltas=["Hel", "lo", " there"], system_fingerprint="fp_1"))
    payloads = await stream_chat(session, fake)

    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert content_of(chunks) == "Hello there"
    first = chunks[0]
    assert first["object"] == "chat.completion.chunk"
    assert first["model"] == "m"
    assert first["system_fingerprint"] == "fp_1"
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 3 + ["stop"]
    # Without stream_options.include_usage there is no usage anywhere.
    assert all("usage" not in c for c in chunks)


@pytest.mark.asyncio
async def test_usage_chunk_only_with_include_usage(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("m", Chat(usage=(7, 3)))
    payloads = await stream_chat(session, fake, stream_options={"include_usage": True})

    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
    }
    assert all(c["usage"] is None for c in chunks[:-1])
    assert content_of(chunks) == "Hello world"


@pytest.mark.asyncio
async def test_tool_call_split_reassembles_arguments(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    calls = [
        ToolCallSpec("get_weather", '{"city": "Paris", "unit": "c"}'),
        ToolCallSpec("get_time", '{"tz": "UTC"}', id="call_custom"),
    ]
    fake.script("m", Chat(deltas=[], tool_calls=calls, tool_call_split=4))
    chunks = [json.loads(p) for p in (await stream_chat(session, fake))[:-1]]

    assembled: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for tc in chunk["choices"][0]["delta"].get("tool_calls", []):
            slot = assembled.setdefault(tc["index"], {"id": "", "name": "", "args": ""})
            if "id" in tc:
                assert not slot["id"], "id must only be in the first delta"
                slot["id"] = tc["id"]
            if "name" in tc["function"]:
                assert not slot["name"], "name must only be in the first delta"
                slot["name"] = tc["function"]["name"]
            slot["args"] += tc["function"]["arguments"]
    assert assembled == {
        0: {"id": "call_0", "name": "get_weather", "args": calls[0].arguments},
        1: {"id": "call_custom", "name": "get_time", "args": calls[1].arguments},
    }
    assert len(chunks) == 2 * 4 + 1  # 4 argument deltas per call + finish chunk
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["choices"][0]["delta"]["content"] is None
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.asyncio
async def test_non_stream_chat_body(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("text", Chat(usage=(4, 2)))
    fake.script("tools", Chat(deltas=[], tool_calls=[ToolCallSpec("f", "{}")]))
    url = fake.base_url + "/chat/completions"

    async with session.post(url, json={"model": "text", "messages": []}) as resp:
        body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hello world"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}

    async with session.post(url, json={"model": "tools", "messages": []}) as resp:
        message = (await resp.json())["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [{"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{}"}}]


# -- errors and connection faults ------------------------------------------


@pytest.mark.asyncio
async def test_http_error_status_body_and_retry_after(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("m", HttpError(429, headers={"Retry-After": "2"}))
    async with session.post(fake.base_url + "/chat/completions", json={"model": "m"}) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2"
        error = (await resp.json())["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert set(error) >= {"message", "type", "code"}

    fake.script("m", HttpError(502, body="<html>bad gateway</html>"))
    async with session.post(fake.base_url + "/chat/completions", json={"model": "m"}) as resp:
        assert resp.status == 502
        assert await resp.text() == "<html>bad gateway</html>"


@pytest.mark.asyncio
async def test_reset_before_headers_is_a_connection_error(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("m", Reset())
    with pytest.raises(aiohttp.ClientConnectionError):
        await stream_chat(session, fake)
    assert fake.requests[0].outcome == "reset"
    assert fake.requests[0].headers_sent_at is None


@pytest.mark.asyncio
async def test_reset_after_k_chunks(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("m", Chat(deltas=["a", "b", "c", "d"], reset_after=2))
    payloads: list[str] = []
    with pytest.raises(aiohttp.ClientPayloadError):  # wraps ECONNRESET mid-body
        async with session.post(fake.base_url + "/chat/completions", json={"model": "m", "stream": True}) as resp:
            assert resp.status == 200
            await read_sse(resp, payloads)
    assert content_of([json.loads(p) for p in payloads]) == "ab"
    assert fake.requests[0].outcome == "reset"


@pytest.mark.asyncio
async def test_stall_after_hits_client_read_timeout(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("m", Chat(stall_after=1))
    payloads: list[str] = []
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    with pytest.raises(asyncio.TimeoutError):
        async with session.post(
            fake.base_url + "/chat/completions",
            json={"model": "m", "stream": True},
            timeout=timeout,
        ) as resp:
            await read_sse(resp, payloads)
    assert content_of([json.loads(p) for p in payloads]) == "Hello"
    # The server notices the client leaving and ends the handler.
    await fake.await_until(lambda: fake.requests[0].outcome == "disconnected")


@pytest.mark.asyncio
async def test_malformed_line_is_inserted_and_stream_goes_on(
    fake: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fake.script("m", Chat(malformed_after=1))
    payloads = await stream_chat(session, fake)

    bad = [p for p in payloads if p != "[DONE]" and not p.startswith('{"')]
    assert len(bad) == 1
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad[0])
    assert payloads.index(bad[0]) == 1
    assert payloads[-1] == "[DONE]"


@pytest.mark.asyncio
async def test_truncate_ends_cleanly_without_done(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("m", Chat(truncate_after=2))
    payloads = await stream_chat(session, fake)  # no exception: clean end of body

    assert len(payloads) == 2
    assert "[DONE]" not in payloads
    await fake.await_until(lambda: fake.requests[0].outcome == "completed")


@pytest.mark.asyncio
async def test_hang_is_released_by_stop_within_a_second(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeUpstream()
    fake.start()
    fake.script("m", Hang())
    call = asyncio.ensure_future(session.post(fake.base_url + "/chat/completions", json={"model": "m"}))
    await fake.await_until(lambda: fake.count() == 1)

    started = time.monotonic()
    await asyncio.to_thread(fake.stop)
    with pytest.raises(aiohttp.ClientConnectionError):
        await call
    assert time.monotonic() - started < 1.0
    assert fake.requests[0].outcome == "disconnected"


# -- scripting and counters --------------------------------------------------


@pytest.mark.asyncio
async def test_script_queue_order_and_counters_include_failures(
    fake: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fake.script("m", HttpError(500), Reset(), Chat(deltas=["ok"]))
    url = fake.base_url + "/chat/completions"
    outcomes: list[object] = []
    for _ in range(4):
        try:
            async with session.post(url, json={"model": "m"}) as resp:
                outcomes.append(resp.status)
        except aiohttp.ClientConnectionError:
            outcomes.append("reset")

    # The last step is sticky: attempts 3 and 4 both succeed.
    assert outcomes == [500, "reset", 200, 200]
    assert fake.count() == 4
    assert fake.count(CHAT, model="m") == 4
    assert fake.count(CHAT, model="other") == 0
    assert fake.count("/v1/embeddings") == 0
    assert [type(r.behaviour).__name__ for r in fake.requests] == [
        "HttpError",
        "Reset",
        "Chat",
        "Chat",
    ]

    fake.reset()
    assert fake.count() == 0


@pytest.mark.asyncio
async def test_default_queue_and_model_scripts_are_separate(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.default(HttpError(503))
    fake.script("good", Chat())
    url = fake.base_url + "/chat/completions"
    async with session.post(url, json={"model": "good"}) as resp:
        assert resp.status == 200
    async with session.post(url, json={"model": "anything"}) as resp:
        assert resp.status == 503
    # A behaviour that cannot answer this endpoint fails loudly.
    fake.script("good", Chat())
    async with session.post(fake.base_url + "/embeddings", json={"model": "good"}) as resp:
        assert resp.status == 500


@pytest.mark.asyncio
async def test_request_recording_and_timings(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("m", Chat(headers_delay_s=0.05, gap_s=0.01))
    await stream_chat(session, fake, temperature=0.5)

    (rec,) = fake.requests
    # The client may see the last byte before the server thread records it.
    await fake.await_until(lambda: rec.ended_at is not None)
    assert rec.method == "POST"
    assert rec.path == CHAT
    assert rec.json["temperature"] == 0.5
    assert json.loads(rec.body) == rec.json
    assert rec.headers["content-type"] == "application/json"
    assert rec.status == 200
    assert rec.headers_sent_at is not None and rec.last_byte_at is not None
    assert rec.headers_sent_at - rec.arrived_at >= 0.05
    # 3 chunks + [DONE] -> 3 gaps of 10 ms.
    assert rec.last_byte_at - rec.headers_sent_at >= 0.03


def test_sync_client_and_non_stream_faults(fake: FakeUpstream) -> None:
    """A blocking client works too, and faults apply to non-stream bodies."""

    def post(model: str) -> bytes:
        data = json.dumps({"model": model}).encode()
        request = urllib.request.Request(
            fake.base_url + "/chat/completions",
            data=data,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=2) as resp:
            body: bytes = resp.read()
            return body

    assert json.loads(post("m"))["choices"][0]["message"]["content"] == "Hello world"

    fake.script("bad", Chat(malformed_after=0))
    with pytest.raises(json.JSONDecodeError):
        json.loads(post("bad"))

    fake.script("cut", Chat(truncate_after=0))
    with pytest.raises(json.JSONDecodeError):
        json.loads(post("cut"))

    fake.script("rst", Chat(reset_after=0))
    with pytest.raises((ConnectionError, urllib.error.URLError, OSError)):
        post("rst")

    fake.script("e", HttpError(401))
    with pytest.raises(urllib.error.HTTPError) as info:
        post("e")
    assert info.value.code == 401
    info.value.close()  # an HTTPError owns the response socket


# -- other endpoints ---------------------------------------------------------


@pytest.mark.asyncio
async def test_completions_stream_and_non_stream(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("m", Completion(deltas=["foo", "bar"]))
    url = fake.base_url + "/completions"
    async with session.post(url, json={"model": "m", "prompt": "x"}) as resp:
        body = await resp.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "foobar"
    assert body["usage"]["total_tokens"] == 15

    payloads: list[str] = []
    stream_body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    async with session.post(url, json=stream_body) as resp:
        await read_sse(resp, payloads)
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "foobar"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["prompt_tokens"] == 10
    assert payloads[-1] == "[DONE]"


@pytest.mark.asyncio
async def test_embeddings_deterministic_float_and_base64(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("emb", Embeddings(dims=16))
    url = fake.base_url + "/embeddings"
    texts = ["alpha beta", "gamma"]

    async with session.post(url, json={"model": "emb", "input": texts}) as resp:
        floats = await resp.json()
    async with session.post(url, json={"model": "emb", "input": texts, "encoding_format": "base64"}) as resp:
        b64 = await resp.json()
    async with session.post(url, json={"model": "emb", "input": "gamma"}) as resp:
        single = await resp.json()

    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert [d["embedding"] for d in floats["data"]] == [fake_embedding(t, 16) for t in texts]
    for item in b64["data"]:
        raw = base64.b64decode(item["embedding"])
        decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        assert decoded == floats["data"][item["index"]]["embedding"]
    assert single["data"][0]["embedding"] == fake_embedding("gamma", 16)
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert fake_embedding("alpha beta", 16) != fake_embedding("gamma", 16)

    fake.script("emb", Embeddings(fail=HttpError(500)))
    async with session.post(url, json={"model": "emb", "input": "x"}) as resp:
        assert resp.status == 500


@pytest.mark.asyncio
async def test_audio_moderation_and_rerank(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.script("tts", Speech(size=1000, chunk_size=300))
    async with session.post(fake.base_url + "/audio/speech", json={"model": "tts"}) as resp:
        assert resp.content_type == "audio/mpeg"
        assert await resp.read() == fake_audio(1000)

    fake.script("whisper", Transcription(text="bonjour"))
    form = aiohttp.FormData()
    form.add_field("model", "whisper")
    form.add_field("file", b"RIFF1234", filename="a.wav", content_type="audio/wav")
    async with session.post(fake.base_url + "/audio/transcriptions", data=form) as resp:
        assert await resp.json() == {"text": "bonjour"}
    upload = fake.requests[-1]
    assert upload.model == "whisper"
    assert upload.files[0].filename == "a.wav"
    assert upload.files[0].data == b"RIFF1234"

    fake.script("mod", Moderation(flag_words=["bomb"]))
    async with session.post(fake.base_url + "/moderations", json={"model": "mod", "input": ["hi", "a BOMB"]}) as resp:
        results = (await resp.json())["results"]
    assert [r["flagged"] for r in results] == [False, True]
    assert results[1]["categories"]["violence"] is True

    docs = ["cats and dogs", "the weather in paris", "paris cats"]
    rerank = {"model": "rr", "query": "paris cats", "documents": docs, "top_n": 2}
    fake.script("rr", Rerank())
    async with session.post(fake.base_url + "/rerank", json=rerank) as resp:
        v1 = await resp.json()
    async with session.post(fake.root_url + "/v2/rerank", json=rerank) as resp:
        v2 = await resp.json()
    assert [r["index"] for r in v1["results"]] == [2, 0]
    assert v1["results"][0] == {
        "index": 2,
        "relevance_score": 1.0,
        "document": {"text": "paris cats"},
    }
    assert v1["results"][1]["relevance_score"] == rerank_score("paris cats", docs[0])
    assert v2["results"] == [
        {"index": 2, "relevance_score": 1.0},
        {"index": 0, "relevance_score": 0.5},
    ]
