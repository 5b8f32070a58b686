"""openai_compat's SSE reader against aiohttp's own StreamReader, fed the way a socket feeds it.

Lines split across reads at any byte, a last line without its newline, ``[DONE]`` cut in two,
over-long lines however they arrive, and a backlog merged: each case gives the events the
whole body gives, with nothing before a fault lost.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
import orjson
import pytest
from aiohttp.base_protocol import BaseProtocol
from hypothesis import given, settings, strategies as st

from gateway.adapters.base import ChatEvent
from gateway.adapters.openai_compat import MAX_SSE_LINE, MERGE_FROM, _sse_events
from gateway.errors import UpstreamUnavailable


def line(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def read(pieces: list[bytes]) -> tuple[list[ChatEvent], Exception | None]:
    """Feed ``pieces`` one socket read at a time, each read by the reader before the next arrives."""
    loop = asyncio.get_running_loop()
    protocol = BaseProtocol(loop)
    protocol.connection_made(asyncio.Transport())  # a connection with no socket: the test feeds the bytes
    reader = aiohttp.StreamReader(protocol, limit=MAX_SSE_LINE, loop=loop)  # never paused by the big lines here
    events: list[ChatEvent] = []
    failure: Exception | None = None

    async def consume() -> None:
        nonlocal failure
        try:
            async for event in _sse_events(SimpleNamespace(content=reader), "route r"):  # type: ignore[arg-type]
                events.append(event)
        except UpstreamUnavailable as exc:
            failure = exc

    task = asyncio.create_task(consume())
    for piece in pieces:
        reader.feed_data(piece)
        for _ in range(5):
            await asyncio.sleep(0)
    reader.feed_eof()
    await task
    return events, failure


def text(events: list[ChatEvent]) -> str:
    return "".join(e.text for e in events)


BODY = line("He") + line("llo") + b": a comment\n\n" + line(" world") + line(finish="stop") + DONE


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 64, len(BODY)])
async def test_lines_split_anywhere_read_the_same(size: int) -> None:
    events, failure = await read([BODY[i : i + size] for i in range(0, len(BODY), size)])
    assert failure is None
    assert text(events) == "Hello world"
    assert [e.finish_reason for e in events if e.finish_reason] == ["stop"]
    if size < len(BODY):
        assert len(events) >= 3  # fewer than MERGE_FROM chunks per read: one event each


@pytest.mark.asyncio
async def test_a_last_line_without_its_newline_counts() -> None:
    events, failure = await read([line("a"), line(finish="stop").rstrip(b"\n")])
    assert failure is None and [e.finish_reason for e in events] == [None, "stop"]

    events, failure = await read([line("a"), b"data: [DO", b"NE]"])
    assert text(events) == "a" and failure is None  # [DONE] ends the stream even without a finish reason


@pytest.mark.asyncio
async def test_a_stream_cut_before_its_finish_is_an_error() -> None:
    events, failure = await read([line("a"), line("b")])
    assert text(events) == "ab"
    assert failure is not None and "ended before the answer was finished" in str(failure)


@pytest.mark.asyncio
async def test_a_backlog_in_one_read_is_one_event_and_fewer_chunks_are_not_merged() -> None:
    words = [f"w{i} " for i in range(MERGE_FROM)]
    events, failure = await read([b"".join(line(w) for w in words) + line(finish="stop") + DONE])
    assert failure is None
    assert len(events) == 1 and events[0].text == "".join(words) and events[0].finish_reason == "stop"

    few = words[: MERGE_FROM - 2]
    events, failure = await read([b"".join(line(w) for w in few) + line(finish="stop") + DONE])
    assert failure is None and [e.text for e in events] == [*few, ""]


@pytest.mark.asyncio
async def test_an_unfinished_line_over_the_bound_is_refused_after_what_came_before() -> None:
    huge = b"data: " + b"x" * (MAX_SSE_LINE + 1)
    events, failure = await read([line("before") + huge[: MAX_SSE_LINE // 2], huge[MAX_SSE_LINE // 2 :]])
    assert text(events) == "before"
    assert failure is not None and "a line over" in str(failure)


@pytest.mark.asyncio
async def test_a_finished_line_over_the_bound_is_refused_however_it_arrives() -> None:
    huge = b"data: " + b"x" * (MAX_SSE_LINE + 1) + b"\n\n"
    for pieces in ([line("before") + huge], [line("before"), huge], [line("before") + huge[:100], huge[100:]]):
        events, failure = await read(pieces)
        assert text(events) == "before", pieces[0][:40]
        assert failure is not None and "a line over" in str(failure)


@pytest.mark.asyncio
async def test_a_fault_inside_a_backlog_delivers_the_chunks_before_it() -> None:
    words = [f"w{i} " for i in range(MERGE_FROM + 2)]
    body = b"".join(line(w) for w in words) + b"data: {not json\n\n" + line("after") + DONE
    events, failure = await read([body])
    assert text(events) == "".join(words) and len(events) == 1
    assert failure is not None and "a chunk is not JSON" in str(failure)


# Hostile upstream bytes: whatever arrives, however it is split, the reader ends cleanly or with
# UpstreamUnavailable (never another exception), and a well-formed stream reads the same text
# at every split.
SSE_PIECES = st.sampled_from(
    [
        line("a"),
        line("ü 🙂"),
        line(finish="stop"),
        DONE,
        b"data: {not json\n\n",
        b"data: []\n\n",
        b'data: {"choices": "x"}\n\n',
        b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": {"a": 1}}}]}}]}\n\n',
        b'data: {"choices": [{"delta": {"content": 5}}]}\n\n',
        b'data: {"error": {"message": "boom"}}\n\n',
        b": comment\n",
        b"\r\n",
        b"event: x\n",
    ]
)


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    return [body[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(SSE_PIECES, st.binary(max_size=40)), max_size=12), st.lists(st.integers(0, 10**6)))
def test_hostile_bytes_end_cleanly_or_as_upstream_unavailable(pieces: list[bytes], cuts: list[int]) -> None:
    body = b"".join(pieces)
    events, _failure = asyncio.run(read(split(body, cuts)))  # anything else would propagate and fail
    assert all(isinstance(e, ChatEvent) for e in events)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=20), st.lists(st.integers(0, 10**6)))
def test_a_well_formed_stream_reads_the_same_text_at_every_split(words: list[str], cuts: list[int]) -> None:
    body = b"".join(line(w) for w in words) + line(finish="stop") + DONE
    events, failure = asyncio.run(read(split(body, cuts)))
    assert failure is None
    assert text(events) == "".join(words)
    assert [e.finish_reason for e in events if e.finish_reason] == ["stop"]
