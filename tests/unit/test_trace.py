"""gateway.trace: a request's summary fields and the traceparent it passes on."""

from __future__ import annotations

import pytest

from gateway.config import TargetConfig
from gateway.routing import Target
from gateway.trace import Trace, valid_traceparent

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_summary_names_the_request_and_its_target() -> None:
    target = Target(config=TargetConfig(model="openai/gpt-4o-mini"), model="openai/gpt-4o-mini")
    trace = Trace(request_id="r1", model_type="llm", route="chat", attempts=2, target=target)
    assert trace.summary("ok", 200, 0.0123456) == {
        "request_id": "r1",
        "type": "llm",
        "route": "chat",
        "target": target.label,
        "outcome": "ok",
        "status": 200,
        "attempts": 2,
        "duration_ms": 12.346,
    }
    assert trace.summary("ok", 200, 0.0123456, ms_digits=1)["duration_ms"] == 12.3


def test_summary_of_an_unrouted_request() -> None:
    summary = Trace(request_id="r2").summary("no_route", 404, 0.001)
    assert (summary["type"], summary["route"], summary["target"], summary["attempts"]) == ("other", None, None, 0)


@pytest.mark.parametrize(
    ("value", "passed_on"),
    [
        (VALID, VALID),
        (VALID.upper(), VALID),  # lower-cased
        (None, None),
        ("", None),
        (VALID[:-1], None),  # too short
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", None),  # all-zero trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", None),  # all-zero parent id
        ("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", None),  # not hex
        ("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", None),  # wrong separators
        ("000-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),  # fields of the wrong widths
    ],
)
def test_valid_traceparent(value: str | None, passed_on: str | None) -> None:
    assert valid_traceparent(value) == passed_on
