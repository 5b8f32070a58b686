"""The in-flight count and the fast refusal above server.max_in_flight."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.types import Message

from gateway.admission import Admission
from gateway.errors import Overloaded
from gateway.trace import Trace, current_trace


def _request(headers: list[tuple[bytes, bytes]], messages: list[Message]) -> Request:
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/inner/api/x", "headers": headers}
    return Request(scope, receive)


def test_requests_count_once_and_are_released() -> None:
    admission = Admission(max_in_flight=2)
    first, second = {"type": "http"}, {"type": "http"}
    admission.admit(first)
    admission.admit(first)  # the same request again: still one
    admission.admit(second)
    assert admission.in_flight == 2 and admission.full
    admission.release(first)
    admission.release({"type": "http"})  # never counted: nothing to release
    assert admission.in_flight == 1 and not admission.full


def test_above_the_cap_is_refused_with_the_outcome_set() -> None:
    admission = Admission(max_in_flight=1)
    admission.admit({"type": "http"})
    trace = Trace(request_id="r", model_type="llm")
    token = current_trace.set(trace)
    try:
        with pytest.raises(Overloaded, match="1 requests in flight"):
            admission.admit({"type": "http"})
    finally:
        current_trace.reset(token)
    assert trace.outcome == "overloaded"
    assert admission.in_flight == 1


def test_no_cap_admits_everything() -> None:
    admission = Admission(max_in_flight=0)
    for _ in range(10_000):
        admission.admit({"type": "http"})
    assert admission.in_flight == 10_000 and not admission.full


@pytest.mark.asyncio
async def test_a_forwarded_body_counts_once_it_has_arrived() -> None:
    admission = Admission(max_in_flight=5)
    request = _request(
        [(b"content-length", b"6")],
        [
            {"type": "http.request", "body": b"abc", "more_body": True},
            {"type": "http.request", "body": b"def", "more_body": False},
        ],
    )
    forwarded = admission.forwarded(request)
    assert admission.in_flight == 0
    await forwarded.receive()
    assert admission.in_flight == 0  # still arriving: holds no slot
    await forwarded.receive()
    assert admission.in_flight == 1
    admission.release(forwarded.scope)
    assert admission.in_flight == 0


def test_a_forwarded_request_without_a_body_counts_at_once_and_is_refused_when_full() -> None:
    admission = Admission(max_in_flight=1)
    admission.forwarded(_request([], []))
    assert admission.in_flight == 1
    with pytest.raises(Overloaded):
        admission.forwarded(_request([(b"content-length", b"3")], []))
