"""gateway.key_guard: wrong keys per client address, throttled and logged within limits."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.requests import Request

from gateway.key_guard import KeyGuard, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request_from(host: str | None) -> Request:
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}
    scope["client"] = (host, 40000) if host is not None else None
    return Request(scope)


def test_an_address_gets_its_burst_then_one_guess_per_refill() -> None:
    clock = Clock()
    guard = KeyGuard(burst=3, refill_s=6.0, clock=clock)
    assert [guard.failed("10.0.0.1") for _ in range(3)] == [2, 1, 0]
    assert guard.wait_s("10.0.0.1") == pytest.approx(6.0)
    assert guard.wait_s("10.0.0.2") == 0  # other addresses are not affected
    clock.now += 4.5
    assert guard.wait_s("10.0.0.1") == pytest.approx(1.5)
    clock.now += 1.5
    assert guard.wait_s("10.0.0.1") == 0
    guard.failed("10.0.0.1")
    assert guard.wait_s("10.0.0.1") == pytest.approx(6.0)  # one guess, then throttled again
    clock.now += 60
    assert guard.wait_s("10.0.0.1") == 0 and guard.failed("10.0.0.1") == 2  # refilled, never above the burst


def test_the_table_is_bounded_and_drops_refilled_buckets_first() -> None:
    clock = Clock()
    guard = KeyGuard(burst=2, refill_s=10.0, max_clients=3, clock=clock)
    guard.failed("a")
    clock.now += 1
    for client in ("b", "b", "c", "c"):
        guard.failed(client)
    clock.now += 10  # a is full again; b and c have one token back
    guard.failed("d")  # room made by dropping a (full: nothing to remember)
    guard.failed("e")  # none full: b, idle the longest, goes
    assert len(guard) == 3
    assert guard.failed("c") == 0  # kept: its one token taken
    assert guard.failed("b") == 1  # forgotten: a fresh bucket


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same host's other address
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("testclient", "testclient"),
        (None, "unknown"),
    ],
)
def test_addresses_are_counted_per_host(host: str | None, expected: str) -> None:
    assert client_address(request_from(host)) == expected


def test_wrong_keys_are_logged_with_the_address_limited_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    guard = KeyGuard(burst=100, log_burst=5, log_refill_s=1.0, clock=clock)
    request = request_from("198.51.100.4")
    with caplog.at_level("WARNING", logger="dify_gateway"):
        for _ in range(12):
            guard.wrong_key(request, "console")
        clock.now += 1.0
        guard.wrong_key(request, "console")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6
    assert all("wrong key from 198.51.100.4" in line for line in lines)
    assert lines[-1].endswith("(7 similar lines left out)")
    assert lines[0] == "console: wrong key from 198.51.100.4 (99 more before throttling)"


def test_a_throttled_address_is_refused_with_retry_after() -> None:
    clock = Clock()
    guard = KeyGuard(burst=1, refill_s=6.0, clock=clock)
    request = request_from("198.51.100.5")
    assert guard.refusal(request, "console") is None
    guard.wrong_key(request, "console")
    clock.now += 0.5
    refused = guard.refusal(request, "console", {"x-content-type-options": "nosniff"})
    assert refused is not None and refused.status_code == 429
    assert refused.headers["retry-after"] == "6" and refused.headers["x-content-type-options"] == "nosniff"
    assert orjson.loads(refused.body) == {"data": None, "error": "too many wrong keys from this address: retry in 6 s"}
    assert guard.refusal(request_from("198.51.100.6"), "console") is None
