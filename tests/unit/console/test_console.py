"""The console's pure parts: its configuration, the traffic and error bookkeeping, addresses
without credentials, and the try-it form turned into the daemon's request."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.requests import Request

from gateway.app import create_app
from gateway.config import ConfigError, parse_config
from gateway.console.state import ConsoleState
from gateway.console.status import _public_key, public_address
from gateway.console.tryit import _example, plan_try
from gateway.errors import BadRequest
from gateway.key_guard import KeyGuard, client_address
from gateway.redaction import Redactor
from gateway.trace import Trace

KEY = "inner-key-for-tests"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_console_is_off_by_default_and_switched_by_the_environment() -> None:
    assert parse_config({}, "<t>", env={}).console.enabled is False
    on = parse_config({}, "<t>", env={"DIFY_GATEWAY_CONSOLE": "1", "DIFY_GATEWAY_ADMIN_KEY": "admin-from-env"})
    assert on.console.enabled is True and on.console.admin_key is not None
    assert on.console.admin_key.get_secret_value() == "admin-from-env"
    assert "admin-from-env" in on.secrets()  # so it is redacted from messages
    off = parse_config({"console": {"enabled": True}}, "<t>", env={"DIFY_GATEWAY_CONSOLE": "false"})
    assert off.console.enabled is False
    with pytest.raises(ConfigError, match="DIFY_GATEWAY_CONSOLE must be 1 or 0"):
        parse_config({}, "<t>", env={"DIFY_GATEWAY_CONSOLE": "maybe"})


def test_console_admin_key_from_the_file_wins_and_may_not_be_blank() -> None:
    config = parse_config(
        {"console": {"enabled": True, "admin_key": "os.environ/ADMIN"}},
        "<t>",
        env={"ADMIN": "from-file-ref", "DIFY_GATEWAY_ADMIN_KEY": "ignored"},
    )
    assert config.console.admin_key is not None and config.console.admin_key.get_secret_value() == "from-file-ref"
    with pytest.raises(ConfigError, match="console.admin_key: Value error, the key is empty"):
        parse_config({"console": {"admin_key": " "}}, "<t>", env={})
    with pytest.raises(ConfigError, match="console.enable: Extra inputs are not permitted"):
        parse_config({"console": {"enable": True}}, "<t>", env={})


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


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pass@api.example.com:8443/v1?key=abc", "https://api.example.com:8443"),
        ("http://vllm:8000/v1", "http://vllm:8000"),
        ("http://[::1]:9000/x", "http://[::1]:9000"),
        ("https://api.example.com", "https://api.example.com"),
        (None, None),
    ],
)
def test_public_address_drops_credentials_path_and_query(url: str | None, expected: str | None) -> None:
    assert public_address(url) == expected


def test_backend_keys_keep_the_model_and_only_the_host_of_the_address() -> None:
    assert (
        _public_key("openai/gpt-4o@https://proxy.example.com/v1/acct-123") == "openai/gpt-4o@https://proxy.example.com"
    )
    assert _public_key("vertex_ai/claude-3@20240620") == "vertex_ai/claude-3@20240620"
    assert (
        _public_key("vertex_ai/claude-3@20240620@http://10.0.0.1:8000/v1")
        == "vertex_ai/claude-3@20240620@http://10.0.0.1:8000"
    )


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o*", "gpt-4o"),
        ("*", "any"),
        ("claude-?-haiku", "claude-x-haiku"),
        ("model-[abc]", "model-a"),
        ("acme/*/chat", "acme/any/chat"),
    ],
)
def test_an_example_name_for_a_glob(pattern: str, expected: str) -> None:
    assert _example(pattern, "any") == expected


def gateway_with_routes() -> Any:
    routes = [
        {
            "name": "chat",
            "match": {"type": "llm", "provider": "openai", "model": "gpt-4o*"},
            "targets": [{"model": "xai/y"}],
        },
        {
            "name": "tenant-emb",
            "match": {"type": "text-embedding", "tenant": ["t-9"]},
            "targets": [{"model": "openai/text-embedding-3-small"}],
        },
    ]
    return create_app(parse_config({"dify": {"inner_api_key": KEY}, "routes": routes}, "<t>", env={}))


def test_try_form_becomes_the_daemons_request() -> None:
    gateway = gateway_with_routes()
    plan = plan_try(gateway.services, {"type": "llm", "route": "chat", "text": " Hi ", "stream": False})
    assert plan.path == "/inner/api/invoke/llm" and plan.route == "chat"
    assert plan.body == {
        "tenant_id": "console",
        "user_id": "console",
        "type": "llm",
        "provider": "langgenius/openai/openai",
        "model": "gpt-4o",
        "mode": "chat",
        "completion_params": {},
        "prompt_messages": [{"role": "user", "content": "Hi"}],
        "tools": [],
        "stop": [],
        "stream": False,
    }
    emb = plan_try(
        gateway.services, {"type": "text-embedding", "route": "tenant-emb", "text": "a\nb", "input_type": "document"}
    )
    assert emb.route == "tenant-emb" and emb.body["tenant_id"] == "t-9"  # the route's own tenant
    assert emb.body["texts"] == ["a", "b"] and emb.body["input_type"] == "document"
    unrouted = plan_try(
        gateway.services, {"type": "moderation", "text": "hello there", "provider": "acme", "model": "m"}
    )
    assert unrouted.route is None and unrouted.body["provider"] == "langgenius/acme/acme"
    stt = plan_try(gateway.services, {"type": "speech2text", "audio_base64": "AAEC"})
    assert stt.body["file"] == "000102"
    mm = plan_try(gateway.services, {"type": "multimodal-rerank", "text": "q", "docs": ["d1", " ", "d2"]})
    assert mm.body["query"] == {"content": "q", "content_type": "text"} and len(mm.body["docs"]) == 2


def test_try_form_problems_are_bad_requests() -> None:
    gateway = gateway_with_routes()
    with pytest.raises(BadRequest, match="route 'chat' does not serve tts"):
        plan_try(gateway.services, {"type": "tts", "route": "chat", "text": "x"})
    with pytest.raises(BadRequest, match="too many docs"):
        plan_try(gateway.services, {"type": "rerank", "text": "q", "docs": ["d"] * 300})
    with pytest.raises(BadRequest, match="stream: Input should be a valid boolean"):
        plan_try(gateway.services, {"type": "llm", "text": "q", "stream": "perhaps"})


# --- wrong keys per client address (gateway.key_guard) ---------------------------------


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
