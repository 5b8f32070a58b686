"""The HTTP edge helpers: bounded body reading, JSON and model parsing, the key check, the hang-up watch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.requests import Request

from gateway.errors import BadRequest, PayloadTooLarge, Unauthorized
from gateway.http import (
    BODY_TIMED_OUT,
    ClientGone,
    DisconnectWatch,
    check_inner_api_key,
    parse_json_object,
    parse_model,
    read_body,
    unless_disconnected,
)
from gateway.trace import Trace, current_trace

Message = dict[str, Any]


def receiver(messages: list[Message], then: Message | None = None) -> Callable[[], Awaitable[Message]]:
    """An ASGI receive(): the given messages in order, then ``then`` (default: wait forever)."""
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is not None:
            return then
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def request(
    chunks: list[bytes],
    *,
    headers: dict[str, str] | None = None,
    disconnect_after: bool = False,
    extra_scope: dict[str, Any] | None = None,
) -> Request:
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1 or disconnect_after}
        for i, chunk in enumerate(chunks)
    ]
    if disconnect_after:
        messages.append({"type": "http.disconnect"})
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/inner/api/invoke/llm",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        **(extra_scope or {}),
    }
    return Request(scope, receiver(messages))


# read_body


@pytest.mark.asyncio
async def test_read_body_joins_the_streamed_chunks() -> None:
    body = await read_body(request([b'{"a":', b" 1", b"}"]), limit=100)
    assert body == b'{"a": 1}'


@pytest.mark.asyncio
async def test_read_body_accepts_a_body_of_exactly_the_limit() -> None:
    assert await read_body(request([b"x" * 10], headers={"content-length": "10"}), limit=10) == b"x" * 10


@pytest.mark.asyncio
async def test_read_body_refuses_a_declared_length_over_the_limit_before_reading() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        await read_body(request([b"tiny"], headers={"content-length": "11"}), limit=10)
    assert caught.value.message == "request body too large: 11 bytes, the limit is 10"
    assert caught.value.status == 413


@pytest.mark.asyncio
async def test_read_body_refuses_a_streamed_body_that_outgrows_a_smaller_declared_length() -> None:
    # The declared length is not trusted: the bytes that arrive are counted too.
    with pytest.raises(PayloadTooLarge) as caught:
        await read_body(request([b"x" * 6, b"x" * 6], headers={"content-length": "5"}), limit=10)
    assert caught.value.message == "request body too large: over the limit of 10 bytes"


@pytest.mark.asyncio
async def test_read_body_ignores_a_malformed_declared_length_and_counts_the_stream() -> None:
    assert await read_body(request([b"abc"], headers={"content-length": "lots"}), limit=10) == b"abc"
    with pytest.raises(PayloadTooLarge):
        await read_body(request([b"x" * 11], headers={"content-length": "-1"}), limit=10)


@pytest.mark.asyncio
async def test_read_body_turns_a_client_disconnect_into_client_gone_and_marks_the_trace() -> None:
    trace = Trace()
    token = current_trace.set(trace)
    try:
        with pytest.raises(ClientGone):
            await read_body(request([b"part"], disconnect_after=True), limit=100)
    finally:
        current_trace.reset(token)
    assert trace.outcome == "client_gone"


@pytest.mark.asyncio
async def test_read_body_tells_a_body_timeout_from_a_hang_up() -> None:
    trace = Trace()
    token = current_trace.set(trace)
    try:
        with pytest.raises(ClientGone):
            await read_body(request([b"part"], disconnect_after=True, extra_scope={BODY_TIMED_OUT: True}), limit=100)
    finally:
        current_trace.reset(token)
    assert trace.outcome == "client_timeout"


@pytest.mark.asyncio
async def test_read_body_disconnect_without_a_trace_is_still_client_gone() -> None:
    assert current_trace.get() is None
    with pytest.raises(ClientGone):
        await read_body(request([], disconnect_after=True), limit=100)


# parse_json_object


def test_parse_json_object_returns_the_object() -> None:
    assert parse_json_object(b'{"model": "m", "n": [1, 2]}') == {"model": "m", "n": [1, 2]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "invalid payload: the request body is empty"),
        (b"[1, 2]", "invalid payload: expected a JSON object, got a JSON list"),
        (b'"text"', "invalid payload: expected a JSON object, got a JSON str"),
        (b"null", "invalid payload: expected a JSON object, got a JSON NoneType"),
    ],
)
def test_parse_json_object_names_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json_object(body)
    assert caught.value.message == message


def test_parse_json_object_reports_where_the_json_breaks() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json_object(b'{"a": }')
    assert caught.value.message.startswith("invalid JSON body: ")
    assert " at position " in caught.value.message


# parse_model


class Inner(BaseModel):
    size: int


class Payload(BaseModel):
    model: str
    inner: Inner
    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0
    e: int = 0


def test_parse_model_validates_into_the_model() -> None:
    parsed = parse_model(Payload, {"model": "m", "inner": {"size": 3}})
    assert parsed.model == "m" and parsed.inner.size == 3


def test_parse_model_names_each_problem_by_its_dotted_location() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_model(Payload, {"inner": {"size": "big"}})
    assert caught.value.message == (
        "invalid payload: model: Field required; "
        "inner.size: Input should be a valid integer, unable to parse string as an integer"
    )


def test_parse_model_lists_at_most_five_problems() -> None:
    data = {"model": 1, "inner": {"size": "x"}, "a": "x", "b": "x", "c": "x", "d": "x", "e": "x"}
    with pytest.raises(BadRequest) as caught:
        parse_model(Payload, data)
    message = caught.value.message
    assert message.startswith("invalid payload: model: ")
    assert message.count("; ") == 4


def test_parse_model_names_an_unexpected_field() -> None:
    class Strict(BaseModel):
        model_config = {"extra": "forbid"}
        x: int = 0

    with pytest.raises(BadRequest) as caught:
        parse_model(Strict, {"y": 1})
    assert caught.value.message == "invalid payload: y: Extra inputs are not permitted"


# check_inner_api_key


def test_check_inner_api_key_accepts_the_right_key() -> None:
    check_inner_api_key(request([], headers={"X-Inner-Api-Key": "secret"}), b"secret")


@pytest.mark.parametrize("headers", [{}, {"X-Inner-Api-Key": "wrong"}, {"X-Inner-Api-Key": ""}])
def test_check_inner_api_key_refuses_a_missing_or_wrong_key(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized) as caught:
        check_inner_api_key(request([], headers=headers), b"secret")
    assert caught.value.message == "unauthorized: missing or wrong X-Inner-Api-Key"
    assert caught.value.status == 401


# DisconnectWatch / unless_disconnected


@pytest.mark.asyncio
async def test_unless_disconnected_returns_the_result_when_the_caller_stays() -> None:
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert await unless_disconnected(receiver([]), work) == "done"


@pytest.mark.asyncio
async def test_unless_disconnected_cancels_the_work_when_the_caller_hangs_up() -> None:
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    hang_up = receiver([{"type": "http.request", "body": b"", "more_body": False}], then={"type": "http.disconnect"})
    with pytest.raises(ClientGone):
        await asyncio.wait_for(unless_disconnected(hang_up, work), timeout=5)
    assert cancelled.is_set()
    # The hang-up's cancellation was withdrawn: the task itself is not left cancelling.
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


@pytest.mark.asyncio
async def test_unless_disconnected_passes_on_a_cancellation_that_is_not_a_hang_up() -> None:
    started = asyncio.Event()

    async def work() -> str:
        started.set()
        await asyncio.sleep(10)
        return "never"

    task = asyncio.create_task(unless_disconnected(receiver([]), work))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_unless_disconnected_lets_the_works_own_error_through() -> None:
    async def work() -> str:
        raise BadRequest("bad")

    with pytest.raises(BadRequest):
        await unless_disconnected(receiver([], then={"type": "http.disconnect"}), work)


@pytest.mark.asyncio
async def test_disconnect_watch_records_a_hang_up_after_it_stopped_watching_without_cancelling() -> None:
    disconnect = asyncio.Event()

    async def receive() -> Message:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    watch = DisconnectWatch(receive)
    watch.active = False  # past the watched section: a hang-up must not cancel the owner
    disconnect.set()
    await asyncio.sleep(0.01)
    assert watch.gone
    assert not watch.hung_up()
    watch.stop()


@pytest.mark.asyncio
async def test_disconnect_watch_stop_ends_its_task() -> None:
    watch = DisconnectWatch(receiver([]))
    await asyncio.sleep(0)
    watch.stop()
    await asyncio.sleep(0)
    assert not watch.active
    assert not watch.gone
    assert not watch.hung_up()
