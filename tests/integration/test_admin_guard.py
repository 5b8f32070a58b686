"""Wrong keys on the admin surfaces (``/console/api/*``, ``/status/targets``) against a real
gateway: throttled per client address (a second loopback address, 127.0.0.2, plays another
client), logged without the key, and the JSON API's security headers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.key_guard import BURST, LOG_BURST, LOG_REFILL_S, REFILL_S
from tests.support.server import TEST_KEY, GatewayServer, gateway_config

ADMIN = "guarded-admin-key-4242"
STATUS = "/console/api/status"
JSON_API_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


@pytest.fixture
def gateway() -> Iterator[GatewayServer]:
    """A fresh gateway per test: fresh buckets."""
    with GatewayServer(gateway_config([], console={"enabled": True, "admin_key": ADMIN})) as server:
        yield server


@pytest.fixture
def here(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


@pytest.fixture
def elsewhere(gateway: GatewayServer) -> Iterator[httpx.Client]:
    """Another client address on the same machine."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=gateway.url, transport=transport, timeout=10) as client:
        yield client


def admin(key: str) -> dict[str, str]:
    return {"X-Admin-Key": key}


def exhaust(client: httpx.Client, path: str = STATUS, header: str = "X-Admin-Key") -> None:
    for i in range(BURST):
        assert client.get(path, headers={header: f"guess-{i}"}).status_code == 401, i


def test_wrong_keys_are_throttled_per_address_and_a_right_key_elsewhere_still_works(
    here: httpx.Client, elsewhere: httpx.Client
) -> None:
    exhaust(here)
    refused = here.get(STATUS, headers=admin("guess-next"))
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= REFILL_S
    assert refused.json()["data"] is None and "too many wrong keys" in refused.json()["error"]
    # Deliberately: the throttled address is refused before its key is compared, right or wrong.
    assert here.get(STATUS, headers=admin(ADMIN)).status_code == 429
    assert here.get(STATUS, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 429
    # Nobody else is locked out, and other addresses keep their own budget.
    assert elsewhere.get(STATUS, headers=admin(ADMIN)).status_code == 200
    assert elsewhere.get(STATUS, headers=admin("guess-x")).status_code == 401


def test_guessing_at_full_speed_gets_only_the_burst_compared(here: httpx.Client) -> None:
    statuses: list[int] = []
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        statuses.append(here.get(STATUS, headers=admin(f"guess-{len(statuses)}")).status_code)
    assert statuses.count(401) == BURST, statuses.count(401)
    assert statuses.count(429) == len(statuses) - BURST and len(statuses) > BURST


def test_missing_keys_cost_nothing(here: httpx.Client) -> None:
    for _ in range(BURST + 5):
        assert here.get(STATUS).status_code == 401
        assert here.get(STATUS, headers={"X-Admin-Key": ""}).status_code == 401
    assert here.get(STATUS, headers=admin(ADMIN)).status_code == 200


def test_status_targets_shares_the_budget(here: httpx.Client, elsewhere: httpx.Client) -> None:
    exhaust(here, "/status/targets", header="X-Inner-Api-Key")
    assert here.get("/status/targets", headers={"X-Inner-Api-Key": TEST_KEY}).status_code == 429
    assert here.get(STATUS, headers=admin(ADMIN)).status_code == 429
    assert elsewhere.get("/status/targets", headers={"X-Inner-Api-Key": TEST_KEY}).status_code == 200
    # The inner API itself is not throttled (the daemon's own address must never be refused).
    assert here.post("/inner/api/invoke/llm", json={}, headers={"X-Inner-Api-Key": TEST_KEY}).status_code != 429


def test_failures_are_logged_with_the_address_never_the_key(
    here: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dify_gateway"):
        exhaust(here)  # as many lines as the log's own burst (LOG_BURST)
        here.get(STATUS, headers=admin("guess-refused"))  # these two are left out ...
        here.get("/status/targets", headers={"X-Inner-Api-Key": "inner-guess"})
        time.sleep(LOG_REFILL_S * 1.2)
        here.get(STATUS, headers=admin("guess-later"))  # ... and counted in the next line
    lines = [r.getMessage() for r in caplog.records if r.name == "dify_gateway"]
    wrong = [line for line in lines if line.startswith("console: wrong key from 127.0.0.1 (")]
    assert len(wrong) == BURST == LOG_BURST and len(lines) == BURST + 1, lines
    assert lines[-1].startswith("console: refused a request from 127.0.0.1: too many wrong keys, retry in ")
    assert lines[-1].endswith(" s (2 similar lines left out)")
    for line in lines:
        assert "guess" not in line and ADMIN not in line and TEST_KEY not in line


@pytest.mark.parametrize(
    ("method", "path", "key", "status"),
    [
        ("GET", STATUS, ADMIN, 200),
        ("GET", "/console/api/errors", ADMIN, 200),
        ("GET", STATUS, None, 401),
        ("GET", STATUS, "wrong", 401),
        ("POST", STATUS, ADMIN, 405),
        ("GET", "/console/api/nothing", ADMIN, 404),
        ("POST", "/console/api/try", ADMIN, 400),
    ],
)
def test_json_api_replies_carry_the_security_headers(
    here: httpx.Client, method: str, path: str, key: str | None, status: int
) -> None:
    reply = here.request(method, path, headers=admin(key) if key else {}, content=b"{}" if method == "POST" else None)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    for name, value in JSON_API_HEADERS.items():
        assert reply.headers[name] == value, name
    policy = reply.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy


def test_a_throttled_reply_carries_them_too(here: httpx.Client) -> None:
    exhaust(here)
    reply = here.get(STATUS, headers=admin("guess"))
    assert reply.status_code == 429
    for name, value in JSON_API_HEADERS.items():
        assert reply.headers[name] == value, name
    assert "frame-ancestors 'none'" in reply.headers["content-security-policy"]
