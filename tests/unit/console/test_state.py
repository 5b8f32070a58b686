"""gateway.console.state: the traffic and error bookkeeping, without credentials or request text."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.console.state import ConsoleState
from gateway.redaction import Redactor
from gateway.trace import Trace


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trace(model_type: str = "llm", route: str | None = "r1", **fields: Any) -> Trace:
    return Trace(request_id="req-1", model_type=model_type, route=route, **fields)


def test_traffic_counts_in_flight_rates_and_errors_per_type_and_route() -> None:
    clock = Clock()
    state = ConsoleState(Redactor([]), clock=clock, wall=lambda: 1_700_000_000.0)
    running = trace()
    state.begin(running)
    assert state.traffic()["llm"]["in_flight"] == 1
    state.record(running, "ok", 200, 0.2)
    failing = trace("rerank", route=None)
    state.begin(failing)
    state.record(failing, "no_route", 404, 0.001)
    overloaded = trace()  # refused before its handler started: no begin
    state.record(overloaded, "overloaded", 429, 0.0)
    llm = state.traffic()["llm"]
    assert llm["in_flight"] == 0 and llm["requests_last_minute"] == 2 and llm["errors_last_minute"] == 1
    assert llm["error_rate"] == 0.5 and llm["avg_duration_ms"] == 100.0 and llm["requests_total"] == 2
    assert state.route_traffic() == {
        "r1": {
            "requests_last_minute": 2,
            "requests_per_s": 0.033,
            "errors_last_minute": 1,
            "error_rate": 0.5,
            "avg_duration_ms": 100.0,
            "requests_total": 2,
            "errors_total": 1,
        }
    }
    clock.now += 61  # the window has passed; totals stay
    llm = state.traffic()["llm"]
    assert llm["requests_last_minute"] == 0 and llm["error_rate"] is None and llm["requests_total"] == 2
    messages = [e["message"] for e in state.recent_errors()]
    assert messages == ["refused: too many requests in flight (server.max_in_flight)", "no route (HTTP 404)"]


def test_errors_keep_the_callers_message_newest_first_and_at_most_the_capacity() -> None:
    state = ConsoleState(Redactor(["sk-secret-value"]), max_errors=3)
    for n in range(5):
        t = trace(errors=[f"attempt failed with key sk-secret-value ({n})"])
        state.begin(t)
        if n == 4:
            state.note_error(t, "route 'r1': every attempt failed")
        state.record(t, "upstream_error", 502, 0.01)
    errors = state.recent_errors()
    assert len(errors) == 3 and state.errors_total == 5 and state.error_capacity == 3
    assert errors[0]["message"] == "route 'r1': every attempt failed"
    assert [e["message"] for e in errors[1:]] == ["attempt failed with key *** (3)", "attempt failed with key *** (2)"]
    ok = trace()
    state.begin(ok)
    state.record(ok, "ok", 200, 0.01)
    state.record(trace(), "cancelled", 499, 0.01)
    state.record(trace(), "forwarded", 500, 0.01)
    assert len(state.recent_errors()) == 3 and state.errors_total == 5


def test_request_text_echoed_in_an_error_is_removed() -> None:
    state = ConsoleState(Redactor([]))
    prompt = "please summarise the merger terms for ACME and Globex in detail"
    body = orjson.dumps(
        {
            "tenant_id": "tenant-1",
            "provider": "openai",
            "model": "gpt-4o",
            "prompt_messages": [{"role": "user", "content": prompt}],
        }
    )
    t = trace(errors=[f"400 from upstream: invalid input {prompt!r}; also '{prompt[:40]}' for model gpt-4o"])
    state.record(t, "client_error", 400, 0.1, body)
    message = state.recent_errors()[0]["message"]
    assert "merger" not in message and "summarise" not in message
    assert message.startswith("400 from upstream: invalid input '[request text removed]'")
    assert message.endswith("for model gpt-4o")  # metadata such as the model name stays
    long = trace(errors=["x" * 2000])
    state.record(long, "error", 500, 0.1, b"not json")
    assert len(state.recent_errors()[0]["message"]) == 500
