"""The operator console's HTTP side: the admin key, the page's headers, the status and errors
documents (no secrets, no prompt text), and the try-it endpoint against the embedded models
and a scripted upstream."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.config import default_routes
from tests.fakes.upstream import Chat, FakeUpstream, HttpError
from tests.support.client import invoke_body, llm_request, post_stream, post_unary
from tests.support.server import TEST_KEY, GatewayProcess, GatewayServer, gateway_config

ADMIN = "console-admin-key-0123"
SECRET = "sk-console-upstream-secret"
UNUSED_KEY = "sk-never-sent-anywhere"
BASE_PASSWORD = "hunter2base"
BASE_QUERY = "sig=querysecret42"
PROMPT = "Summarise my confidential quarterly numbers for the board"


def llm_route(upstream: FakeUpstream) -> dict[str, Any]:
    target = {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": SECRET, "native": True}
    return {"name": "fake-llm", "match": {"type": "llm", "provider": "openai"}, "targets": [target]}


def unused_route() -> dict[str, Any]:
    """A route nobody calls, with credentials in every place an address can carry them."""
    target = {
        "model": "openai/{model}",
        "api_base": f"https://admin:{BASE_PASSWORD}@llm.example.com:8443/v1?{BASE_QUERY}",
        "api_key": UNUSED_KEY,
        "weight": 2,
    }
    fallback = {"model": "anthropic/claude-3-5-haiku-latest", "api_key": UNUSED_KEY}
    return {
        "name": "never-called",
        "match": {"type": "llm", "provider": "acme"},
        "targets": [target],
        "fallbacks": [fallback],
    }


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayServer]:
    routes = [llm_route(upstream), unused_route(), *default_routes()]
    config = gateway_config(routes, console={"enabled": True, "admin_key": ADMIN})
    with GatewayServer(config) as server:
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "embedded models did not load"
            time.sleep(0.05)
        yield server


def get(gateway: GatewayServer, path: str, key: str | None = ADMIN, **headers: str) -> httpx.Response:
    if key is not None:
        headers["X-Admin-Key"] = key
    return httpx.get(f"{gateway.url}{path}", headers=headers, timeout=10)


def try_it(gateway: GatewayServer, **form: Any) -> list[dict[str, Any]]:
    """The try endpoint's NDJSON events."""
    reply = httpx.post(f"{gateway.url}/console/api/try", json=form, headers={"X-Admin-Key": ADMIN}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/x-ndjson")
    assert reply.headers["cache-control"] == "no-store"
    events = [orjson.loads(line) for line in reply.content.splitlines() if line.strip()]
    assert [e["event"] for e in events][:2] == ["request", "response"] and events[-1]["event"] == "end"
    times = [e["t_ms"] for e in events]
    assert times == sorted(times)
    return events


def envelope(events: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [e["envelope"] for e in events if e["event"] == "envelope"]
    assert found["error"] == "", found["error"]
    data: dict[str, Any] = found["data"]
    return data


# --- access -----------------------------------------------------------------------------


def test_disabled_console_has_no_paths() -> None:
    with GatewayServer(gateway_config([])) as server:
        for path in ("/console", "/console/", "/console/static/console.js", "/console/api/status"):
            reply = httpx.get(f"{server.url}{path}", headers={"X-Admin-Key": TEST_KEY}, timeout=5)
            assert reply.status_code == 404, path
        assert httpx.post(f"{server.url}/console/api/try", json={}, timeout=5).status_code == 404


@pytest.mark.parametrize("path", ["/console/api/status", "/console/api/errors"])
def test_the_data_needs_the_admin_key(gateway: GatewayServer, path: str) -> None:
    for key in (None, "wrong-key", TEST_KEY, ADMIN + "x", ""):
        reply = get(gateway, path, key=key)
        assert reply.status_code == 401, key
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.json() == {
            "data": None,
            "error": "unauthorized: missing or wrong admin key (send X-Admin-Key or Authorization: Bearer)",
        }
    assert get(gateway, path, key=None, authorization="Bearer wrong").status_code == 401
    assert get(gateway, path, key=None, authorization=f"Basic {ADMIN}").status_code == 401
    assert get(gateway, path).status_code == 200
    assert get(gateway, path, key=None, authorization=f"Bearer {ADMIN}").status_code == 200
    reply = httpx.post(f"{gateway.url}/console/api/try", json={"type": "moderation", "text": "hello there"}, timeout=5)
    assert reply.status_code == 401


def test_without_an_admin_key_the_inner_key_opens_it() -> None:
    with GatewayServer(gateway_config([], console={"enabled": True})) as server:
        assert httpx.get(f"{server.url}/console/api/status", timeout=5).status_code == 401
        headers = {"Authorization": f"Bearer {TEST_KEY}"}
        assert httpx.get(f"{server.url}/console/api/status", headers=headers, timeout=5).status_code == 200


def test_serve_console_flag_turns_it_on_and_logs_where(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("server: {drain_grace_s: 0}\nroutes: []\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if (not k.startswith("DIFY_") or k == "DIFY_GATEWAY_DATA_DIR")}
    env.update({"DIFY_INNER_API_KEY": TEST_KEY, "NO_PROXY": "127.0.0.1,localhost"})
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--console"]
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline and process.poll() is None, "the gateway did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        status = httpx.get(f"http://127.0.0.1:{port}/console/api/status", headers={"X-Admin-Key": TEST_KEY})
        assert status.status_code == 200 and status.json()["routes"] == []
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    expected = f"operator console at http://127.0.0.1:{port}/console/ (sign in with the inner API key)"
    assert expected.encode() in output, output.decode()


def test_the_page_is_static_and_locked_down(gateway: GatewayServer) -> None:
    moved = httpx.get(f"{gateway.url}/console", timeout=5)
    assert moved.status_code == 308 and moved.headers["location"] == "/console/"
    page = get(gateway, "/console/", key=None)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-cache" and page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text and " style=" not in page.text  # no inline code or styles
    assert "fake-llm" not in page.text and "local/" not in page.text  # no data in the page itself
    for name, media_type in [("console.js", "text/javascript"), ("console.css", "text/css"), ("favicon.svg", "image")]:
        asset = get(gateway, f"/console/static/{name}", key=None)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type)
        again = get(gateway, f"/console/static/{name}", key=None, **{"if-none-match": asset.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    for missing in ("/console/static/nope.js", "/console/static/../handler.py", "/console/api/nope"):
        assert get(gateway, missing).status_code == 404
    assert httpx.post(f"{gateway.url}/console/api/status", headers={"X-Admin-Key": ADMIN}).status_code == 405


# --- status and errors ------------------------------------------------------------------


def test_status_shows_routes_and_state_but_no_secrets(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("status-model", Chat(deltas=["ok"]))
    assert post_stream(gateway.url, "/inner/api/invoke/llm", llm_request("status-model")).outcome.error is None
    reply = get(gateway, "/console/api/status")
    assert reply.status_code == 200 and reply.headers["cache-control"] == "no-store"
    for secret in (SECRET, UNUSED_KEY, BASE_PASSWORD, "querysecret42", TEST_KEY, ADMIN):
        assert secret.encode() not in reply.content, secret
    status = reply.json()
    assert status["version"] and status["uptime_s"] >= 0 and status["ready"] is True
    assert status["draining"] is False and status["in_flight"] == 0
    routes = {r["route"]: r for r in status["routes"]}
    assert list(routes)[:3] == ["fake-llm", "never-called", "local-llm"]
    (unused,) = routes["never-called"]["targets"]
    assert unused == {
        "model": "openai/{model}",
        "weight": 2.0,
        "api_base": "https://llm.example.com:8443",
        "api_key": "<set>",
        "fallback": False,
        "state": "idle",
        "backends": 0,
        "in_flight": 0,
        "calls": 0,
        "failures": 0,
        "requests_last_minute": 0,
        "errors_last_minute": 0,
        "error_rate": None,
        "latency_ms": None,
        "last_error": None,
        "last_error_at": None,
    }
    assert routes["never-called"]["fallbacks"][0]["fallback"] is True
    (used,) = routes["fake-llm"]["targets"]
    assert used["state"] == "closed" and used["calls"] >= 1 and used["latency_ms"] is not None
    assert used["api_base"] == fake.root_url
    assert status["traffic"]["llm"]["requests_last_minute"] >= 1
    assert status["cache"]["enabled"] is True and status["cache"]["redis"] is None
    assert status["embedded_models"]["local/multilingual-e5-small"] == "ready"


def test_failures_are_listed_without_prompt_text(gateway: GatewayServer, fake: FakeUpstream) -> None:
    # An upstream that echoes the prompt back in its error message, as some servers do.
    fake.script("echo-model", HttpError(400, body={"error": {"message": f"cannot process input: {PROMPT}"}}))
    body = llm_request("echo-model")
    body["prompt_messages"][1]["content"] = PROMPT
    reply = post_stream(gateway.url, "/inner/api/invoke/llm", body)
    assert reply.outcome.error is not None and "cannot process input" in reply.outcome.error
    refused = httpx.post(
        f"{gateway.url}/inner/api/invoke/moderation",
        json=invoke_body("moderation", text=PROMPT),
        headers={"X-Inner-Api-Key": "not-the-key"},
    )
    assert refused.status_code == 401
    errors = get(gateway, "/console/api/errors")
    assert errors.status_code == 200 and PROMPT.encode() not in errors.content
    assert PROMPT[:32].encode() not in errors.content
    latest, upstream = errors.json()["errors"][:2]
    assert latest["type"] == "moderation" and latest["outcome"] == "client_error" and latest["status"] == 401
    assert "X-Inner-Api-Key" in latest["message"]
    assert upstream["type"] == "llm" and upstream["route"] == "fake-llm" and upstream["status"] == 400
    assert upstream["target"] == "openai/echo-model" and upstream["outcome"] == "client_error"
    assert "cannot process input: [request text removed]" in upstream["message"], upstream["message"]
    assert set(upstream) == {
        "at",
        "request_id",
        "type",
        "route",
        "target",
        "outcome",
        "status",
        "attempts",
        "duration_ms",
        "message",
    }
    status = get(gateway, "/console/api/status").json()
    assert status["errors_total"] >= 2 and status["traffic"]["moderation"]["errors_last_minute"] >= 1


def test_unary_upstream_errors_keep_their_message(gateway: GatewayServer, fake: FakeUpstream) -> None:
    fake.script("down-model", HttpError(401, body={"error": {"message": f"bad key {SECRET}"}}))
    body = llm_request("down-model", stream=False)
    reply = post_stream(gateway.url, "/inner/api/invoke/llm", body)
    assert reply.outcome.error is not None
    latest = get(gateway, "/console/api/errors").json()["errors"][0]
    assert latest["route"] == "fake-llm" and latest["attempts"] >= 1
    assert SECRET not in latest["message"] and "bad key" in latest["message"]


# --- try it -----------------------------------------------------------------------------


def test_try_embedding_returns_a_vector_per_line(gateway: GatewayServer) -> None:
    events = try_it(gateway, type="text-embedding", route="local-text-embedding", text="hello\n\nworld")
    request = events[0]
    assert request["path"] == "/inner/api/invoke/text-embedding" and request["route"] == "local-text-embedding"
    assert request["body"]["texts"] == ["hello", "world"] and request["body"]["tenant_id"] == "console"
    assert request["request_id"].startswith("console-")
    response = events[1]
    assert response["status"] == 200 and response["stream"] is False
    assert response["target"] == "local/multilingual-e5-small" and response["attempts"] == 1
    data = envelope(events)
    assert [len(v) for v in data["embeddings"]] == [384, 384]
    end = events[-1]
    assert end["status"] == 200 and end["total_ms"] >= end["first_byte_ms"] > 0 and end["bytes"] > 1000


def test_try_rerank_tts_speech_to_text_and_moderation(gateway: GatewayServer) -> None:
    docs = "The stock market fell today\nInstructions for baking a loaf at home"
    ranked = envelope(try_it(gateway, type="rerank", text="how do I bake bread", docs=docs))["docs"]
    assert [d["index"] for d in ranked] == [1, 0]
    multi = envelope(try_it(gateway, type="multimodal-rerank", text="bread", docs=["bread", "stocks"]))
    assert multi["docs"][0]["index"] == 0
    assert envelope(try_it(gateway, type="moderation", text="I am going to kill you")) == {"result": True}

    spoken = try_it(gateway, type="tts", text="The weather today is sunny and warm.", voice="")
    assert spoken[1]["stream"] is True and spoken[1]["content_type"].startswith("text/event-stream")
    frames = [e["frame"] for e in spoken if e["event"] == "frame"]
    assert frames and all(f["error"] == "" and f["data"]["mime_type"] == "audio/mpeg" for f in frames)
    assert spoken[-1]["frames"] == len(frames)
    audio = b"".join(bytes.fromhex(f["data"]["result"]) for f in frames)

    heard = try_it(
        gateway, type="speech2text", audio_base64="data:audio/mpeg;base64," + base64.b64encode(audio).decode()
    )
    assert heard[0]["body"]["file"] == f"<{len(audio)} bytes of audio as hex>"
    transcript = envelope(heard)["result"].lower()
    assert "weather" in transcript or "sunny" in transcript, transcript


def test_try_llm_streams_frames_as_they_arrive(gateway: GatewayServer, fake: FakeUpstream) -> None:
    words = [f"word{i} " for i in range(6)]
    fake.script("gpt-console", Chat(deltas=words, gap_s=0.1))
    arrivals: list[tuple[float, dict[str, Any]]] = []
    form = {"type": "llm", "route": "fake-llm", "model": "gpt-console", "text": "Say six words", "system": "Be brief"}
    with httpx.stream(
        "POST", f"{gateway.url}/console/api/try", json=form, headers={"X-Admin-Key": ADMIN}, timeout=30
    ) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.strip():
                arrivals.append((time.monotonic(), orjson.loads(line)))
    events = [e for _, e in arrivals]
    assert events[0]["body"]["prompt_messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say six words"},
    ]
    assert events[0]["body"]["provider"] == "langgenius/openai/openai" and events[0]["body"]["stream"] is True
    frames = [(at, e) for at, e in arrivals if e["event"] == "frame"]
    text = "".join(e["frame"]["data"]["delta"]["message"]["content"] for _, e in frames)
    assert text == "".join(words)
    # Each frame reached the client when the upstream sent its chunk, not all at the end.
    assert frames[-1][0] - frames[0][0] >= 0.4
    assert frames[-1][1]["t_ms"] - frames[0][1]["t_ms"] >= 400
    sent = fake.requests[-1].json
    assert sent["model"] == "gpt-console" and sent["messages"][-1] == {"role": "user", "content": "Say six words"}


def test_try_a_route_with_a_glob_gets_a_matching_model(gateway: GatewayServer, fake: FakeUpstream) -> None:
    events = try_it(gateway, type="llm", route="fake-llm", text="hi", stream=False, temperature=0.5)
    assert events[0]["body"]["model"] == "any" and events[0]["route"] == "fake-llm"
    assert events[0]["body"]["completion_params"] == {"temperature": 0.5}
    assert fake.requests[-1].json["temperature"] == 0.5
    assert events[1]["status"] == 200 and [e["event"] for e in events].count("frame") == 1


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"type": "image"}, "invalid payload: type: Input should be 'llm'"),
        ({"type": "llm", "text": "  "}, "text is empty"),
        ({"type": "llm", "text": "hi", "top_k": 1}, "top_k: Extra inputs are not permitted"),
        ({"type": "llm", "text": "hi", "temperature": 3}, "temperature: Input should be less than or equal to 2"),
        ({"type": "rerank", "text": "q"}, "docs is empty"),
        ({"type": "speech2text"}, "audio_base64 is empty"),
        ({"type": "speech2text", "audio_base64": "not base64!"}, "audio_base64 is not valid base64"),
        ({"type": "llm", "text": "hi", "route": "nope"}, "no route named 'nope'"),
        ({"type": "tts", "text": "hi", "route": "local-rerank"}, "route 'local-rerank' does not serve tts"),
        ({"type": "text-embedding", "text": "x\n" * 300}, "too many lines in text: 300, at most 256"),
    ],
)
def test_bad_try_input_is_a_clear_400(gateway: GatewayServer, form: dict[str, Any], expected: str) -> None:
    reply = httpx.post(f"{gateway.url}/console/api/try", json=form, headers={"X-Admin-Key": ADMIN}, timeout=10)
    assert reply.status_code == 400, reply.text
    assert reply.json()["data"] is None and expected in reply.json()["error"]


def test_try_body_must_be_a_json_object(gateway: GatewayServer) -> None:
    headers = {"X-Admin-Key": ADMIN, "content-type": "application/json"}
    for body, expected in [(b"", "empty"), (b"{nope", "invalid JSON"), (b"[1]", "expected a JSON object")]:
        reply = httpx.post(f"{gateway.url}/console/api/try", content=body, headers=headers, timeout=10)
        assert reply.status_code == 400 and expected in reply.json()["error"]
    assert httpx.get(f"{gateway.url}/console/api/try", headers=headers, timeout=10).status_code == 405


def test_try_requests_are_counted_like_any_other(gateway: GatewayServer) -> None:
    before = get(gateway, "/console/api/status").json()["traffic"].get("moderation", {}).get("requests_total", 0)
    try_it(gateway, type="moderation", text="a friendly sentence")
    post_unary(gateway.url, "moderation", invoke_body("moderation", text="another friendly sentence"))
    after = get(gateway, "/console/api/status").json()["traffic"]["moderation"]["requests_total"]
    assert after == before + 2
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    assert 'dify_gateway_requests_total{outcome="ok",route="local-moderation",type="moderation"}' in metrics


# --- several worker processes -------------------------------------------------------------


def test_several_workers_show_as_one_instance(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    config = gateway_config([], console={"enabled": True}, server={"drain_grace_s": 0})
    sent = 20
    with GatewayProcess(config, tmp_path, workers=2, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)) as server:

        def fail(i: int) -> int:
            # A new connection per request, so the kernel spreads them over the workers.
            headers = {"X-Inner-Api-Key": TEST_KEY, "X-Request-Id": f"spread-{i}", "Connection": "close"}
            return httpx.post(f"{server.url}/inner/api/invoke/llm", json=llm_request(), headers=headers).status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(fail, range(sent))) == [404] * sent  # no route, no Dify to forward to

        def read(path: str) -> dict[str, Any]:
            headers = {"X-Admin-Key": TEST_KEY, "Connection": "close"}
            reply = httpx.get(f"{server.url}/console/api/{path}", headers=headers, timeout=5)
            assert reply.status_code == 200, reply.text
            body: dict[str, Any] = reply.json()
            return body

        deadline = time.monotonic() + 5
        while True:  # each worker publishes its numbers about once a second
            status = read("status")
            llm = status["traffic"].get("llm", {})
            if len(status["workers"]) == 2 and llm.get("requests_total") == sent:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["aggregated"] is True and status["multiprocess"] is True
        pids = {w["pid"] for w in status["workers"]}
        assert len(pids) == 2 and status["pid"] in pids
        assert llm["errors_total"] == sent and status["errors_total"] == sent and llm["error_rate"] == 1.0
        assert status["ready"] is True and status["draining"] is False and status["in_flight"] == 0
        errors = read("errors")
        assert errors["aggregated"] is True and len(errors["workers"]) == 2
        assert sorted(e["request_id"] for e in errors["errors"]) == sorted(f"spread-{i}" for i in range(sent))
        assert {e["pid"] for e in errors["errors"]} <= pids
        assert all("no route" in e["message"] for e in errors["errors"])
        # ?worker=self: only the worker that answered, as with one worker.
        own: dict[int, int] = {}
        for _ in range(8):
            mine = read("status?worker=self")
            assert "aggregated" not in mine and "workers" not in mine and mine["pid"] in pids
            own[mine["pid"]] = mine["traffic"].get("llm", {}).get("requests_total", 0)
            assert "aggregated" not in read("errors?worker=self")
        assert all(count <= sent for count in own.values())
        if len(own) == 2:
            assert sum(own.values()) == sent
        assert sorted(p.name for p in metrics_dir.glob("console-*.json")) == sorted(f"console-{p}.json" for p in pids)
    assert not list(metrics_dir.glob("console-*.json"))  # each worker removed its own at shutdown
