"""Configuration reload in one process: what a reload applies, keeps, refuses and reports."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.app import Gateway, create_app
from gateway.config import load_config, parse_config
from gateway.metrics import render
from gateway.reload import (
    ConfigWatcher,
    file_signature,
    keep_restart_settings,
    remember_early_sighup,
    same_effect,
    take_early_sighup,
)

KEY = "reload-key"


def _route(model: str) -> dict[str, Any]:
    return {"name": "chat", "match": {"type": "llm"}, "targets": [{"model": model, "api_key": "sk-secret-value"}]}


def _document(model: str = "openai/alpha", **extra: Any) -> dict[str, Any]:
    return {"dify": {"inner_api_key": KEY}, "routes": [_route(model)], **extra}


def _write(path: Path, document: dict[str, Any] | str) -> None:
    path.write_text(document if isinstance(document, str) else orjson.dumps(document).decode())


def _gateway(path: Path, document: dict[str, Any]) -> Gateway:
    _write(path, document)
    return create_app(load_config(str(path), env={}))


def _reloads(gateway: Gateway) -> dict[str, float]:
    page = render(gateway.services.metrics).decode()
    counts = {}
    for line in page.splitlines():
        if line.startswith("dify_gateway_config_reloads_total{"):
            result = line.split('result="')[1].split('"')[0]
            counts[result] = float(line.rsplit(" ", 1)[1])
    return counts


def _target_models(gateway: Gateway) -> list[str]:
    return [t.model for r in gateway.services.config.routes for t in r.targets]


def test_settings_that_need_a_restart_keep_their_running_values_and_are_named() -> None:
    running = parse_config(_document(), "<a>", env={})
    loaded = parse_config(
        _document(
            "openai/beta",
            server={"port": 9999, "request_log": False, "max_body_bytes": 4096},
            cache={"embeddings": {"ttl_s": 60}},
            resilience={"retry": {"backoff_max_s": 1.0}, "breaker": {"failures": 9}},
            serverless={"enabled": True, "default_tenant": "t"},
        ),
        "<b>",
        env={},
    )
    config, needs_restart = keep_restart_settings(running, loaded)
    assert sorted(needs_restart) == [
        "cache.embeddings",
        "resilience.breaker",
        "server.port",
        "serverless.enabled",
    ]
    assert config.server.port == running.server.port
    assert config.cache == running.cache
    assert config.resilience.breaker == running.resilience.breaker
    assert config.serverless.enabled is False and config.serverless.default_tenant == "t"
    # What a reload does apply:
    assert config.server.request_log is False and config.server.max_body_bytes == 4096
    assert config.resilience.retry.backoff_max_s == 1.0
    assert [t.model for t in config.routes[0].targets] == ["openai/beta"]


def test_the_inner_api_key_needs_a_restart() -> None:
    running = parse_config(_document(), "<a>", env={})
    loaded = parse_config({**_document(), "dify": {"inner_api_key": "another-key"}}, "<b>", env={})
    config, needs_restart = keep_restart_settings(running, loaded)
    assert needs_restart == ["dify.inner_api_key"]
    assert config.dify.inner_api_key == running.dify.inner_api_key


def test_same_effect_ignores_only_the_file_name() -> None:
    a = parse_config(_document(), "<a>", env={})
    assert same_effect(a, parse_config(_document(), "<b>", env={}))
    assert not same_effect(a, parse_config(_document("openai/beta"), "<a>", env={}))


@pytest.mark.asyncio
async def test_a_valid_file_is_swapped_in_and_the_long_lived_objects_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    before = gateway.services
    _write(path, _document("openai/beta"))

    status = await gateway.reloader.reload("SIGHUP")

    assert status.result == "applied", status
    after = gateway.services
    assert after is not before
    assert _target_models(gateway) == ["openai/beta"]
    for shared in ("backends", "health", "embedding_cache", "metrics", "request_metrics", "drain", "model_map"):
        assert getattr(after, shared) is getattr(before, shared), shared
    assert gateway.last_reload is not None and gateway.last_reload["result"] == "applied"
    assert _reloads(gateway)["applied"] == 1.0


@pytest.mark.asyncio
async def test_an_invalid_file_changes_nothing_and_says_where(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    before = gateway.services
    bad = _document()
    bad["routes"][0]["targets"][0]["timeout_typo"] = 3
    _write(path, bad)

    status = await gateway.reloader.reload("SIGHUP")

    assert status.result == "invalid"
    assert gateway.services is before
    assert str(path) in status.message and "timeout_typo" in status.message
    assert "sk-secret-value" not in status.message
    assert any("reload (SIGHUP) failed" in r.getMessage() for r in caplog.records)
    _write(path, "routes: [unclosed")
    status = await gateway.reloader.reload("SIGHUP")
    assert status.result == "invalid" and "not valid YAML" in status.message
    assert gateway.services is before
    assert _reloads(gateway) == {"applied": 0.0, "unchanged": 0.0, "invalid": 2.0}


@pytest.mark.asyncio
async def test_the_same_file_again_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    before = gateway.services
    status = await gateway.reloader.reload("SIGHUP")
    assert status.result == "unchanged"
    assert gateway.services is before


@pytest.mark.asyncio
async def test_a_change_that_needs_a_restart_is_reported_with_the_rest_applied(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    _write(path, _document("openai/beta", server={"port": 9090}))
    status = await gateway.reloader.reload("SIGHUP")
    assert status.result == "applied"
    assert status.needs_restart == ["server.port"]
    assert gateway.services.config.server.port == 8080
    assert _target_models(gateway) == ["openai/beta"]


@pytest.mark.asyncio
async def test_only_a_change_that_needs_a_restart_leaves_the_services_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    before = gateway.services
    _write(path, _document(server={"port": 9090}))
    status = await gateway.reloader.reload("SIGHUP")
    assert (status.result, status.needs_restart) == ("unchanged", ["server.port"])
    assert gateway.services is before


@pytest.mark.asyncio
async def test_breaker_state_of_an_unchanged_backend_survives_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    resolution = gateway.services.routes.resolve("llm", "openai", "gpt", "t")
    assert resolution is not None
    target = resolution.targets[0]
    health = gateway.services.health
    for _ in range(10):
        health.begin(target)
        health.failed(target, "boom", counts=True)
    assert health.of(target).state == "open"
    _write(path, {**_document(), "routes": [_route("openai/alpha"), {**_route("openai/other"), "name": "more"}]})

    assert (await gateway.reloader.reload("SIGHUP")).result == "applied"

    resolution = gateway.services.routes.resolve("llm", "openai", "gpt", "t")
    assert resolution is not None
    again = resolution.targets[0]
    assert again.key == target.key
    assert gateway.services.health.of(again).state == "open"


@pytest.mark.asyncio
async def test_a_secret_removed_by_a_reload_is_still_redacted(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    other = _document()
    other["routes"][0]["targets"][0]["api_key"] = "sk-the-new-one"
    _write(path, other)
    assert (await gateway.reloader.reload("SIGHUP")).result == "applied"
    redact = gateway.services.redactor
    assert "sk-secret-value" not in redact("old sk-secret-value")
    assert "sk-the-new-one" not in redact("new sk-the-new-one")


@pytest.mark.asyncio
async def test_a_request_keeps_the_generation_it_began_with_until_it_ends(tmp_path: Path) -> None:
    """The generation bookkeeping the ASGI entry does: the old one is released after its last request."""
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    old = gateway._generation
    old.in_flight += 1  # a request running on it
    _write(path, _document("openai/beta"))
    assert (await gateway.reloader.reload("SIGHUP")).result == "applied"
    assert gateway._generation is not old
    assert old.retired_at is not None and old.services.config.routes[0].targets[0].model == "openai/alpha"


def _configmap(directory: Path, version: str, document: dict[str, Any]) -> None:
    """A Kubernetes ConfigMap volume: ``..<version>/`` holds the files, ``..data`` points at
    it, and the file the gateway reads is a symlink through ``..data``; an update writes a
    new version directory and swaps ``..data`` atomically (a rename over it)."""
    version_dir = directory / f"..{version}"
    version_dir.mkdir()
    _write(version_dir / "gateway.yaml", document)
    link = directory / "..data_tmp"
    link.symlink_to(version_dir.name)
    os.replace(link, directory / "..data")
    file = directory / "gateway.yaml"
    if not file.is_symlink():
        file.symlink_to("..data/gateway.yaml")


@pytest.mark.asyncio
async def test_the_watcher_sees_a_configmap_symlink_swap_and_ignores_a_touch(tmp_path: Path) -> None:
    _configmap(tmp_path, "v1", _document())
    path = str(tmp_path / "gateway.yaml")
    seen: list[str] = []
    watcher = ConfigWatcher(path, 0.05, seen.append)
    watcher.start()
    try:
        await asyncio.sleep(0.2)
        before = file_signature(path)
        os.utime(tmp_path / "..v1" / "gateway.yaml")  # the same content, a new mtime
        await asyncio.sleep(0.4)
        assert seen == []
        _configmap(tmp_path, "v2", _document("openai/beta"))
        assert file_signature(path) != before
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen == ["file changed"]
    finally:
        await watcher.aclose()


@pytest.mark.asyncio
async def test_with_watch_config_a_changed_file_is_applied_without_a_signal(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document(server={"watch_config": True, "watch_interval_s": 0.1}))
    assert gateway._watcher is not None
    gateway._watcher.start()
    try:
        _write(path, _document("openai/beta", server={"watch_config": True, "watch_interval_s": 0.1}))
        for _ in range(100):
            if _target_models(gateway) == ["openai/beta"]:
                break
            await asyncio.sleep(0.05)
        assert _target_models(gateway) == ["openai/beta"]
        assert gateway.last_reload is not None and gateway.last_reload["trigger"] == "file changed"
    finally:
        await gateway._watcher.aclose()


@pytest.mark.asyncio
async def test_a_file_that_cannot_be_read_keeps_the_running_configuration(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    before = gateway.services
    path.unlink()
    (tmp_path / "gateway.yaml").mkdir()  # a directory where the file was: read fails
    status = await gateway.reloader.reload("SIGHUP")
    assert status.result == "invalid" and "cannot read" in status.message
    assert gateway.services is before


_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
_level_one = _scalar | st.lists(_scalar, max_size=4) | st.dictionaries(st.text(max_size=12), _scalar, max_size=4)
_nested = _level_one | st.lists(_level_one, max_size=4) | st.dictionaries(st.text(max_size=12), _level_one, max_size=4)
_yaml_text = st.one_of(
    st.text(max_size=300),
    # Documents nested two levels deep (built by hand: st.recursive's argument check misfires
    # when its strategies were cached by earlier tests).
    _nested.map(lambda doc: yaml.safe_dump(doc)),
    # Near-valid files: the real document with one key's value replaced by something random.
    st.tuples(
        st.sampled_from(["server", "routes", "cache", "resilience", "limits", "dify", "summary_model"]),
        st.none() | st.integers() | st.text(max_size=20) | st.lists(st.integers(), max_size=3),
    ).map(lambda kv: yaml.safe_dump({**_document(), kv[0]: kv[1]})),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_yaml_text)
def test_any_file_content_is_applied_or_refused_never_raised(tmp_path: Path, text: str) -> None:
    """The file is input from outside once the process runs: whatever it holds, a reload ends
    in a status, and a refused file leaves the running services as they were."""
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    before = gateway.services
    path.write_text(text)
    status = asyncio.run(gateway.reloader.reload("SIGHUP"))
    assert status.result in ("applied", "unchanged", "invalid")
    if status.result == "invalid":
        assert gateway.services is before
        assert status.message and not status.message.startswith("unexpected error"), status.message


@pytest.mark.asyncio
async def test_a_sighup_before_the_app_serves_is_applied_once_it_does(tmp_path: Path) -> None:
    """A worker told to reload while it is still starting (its file read, its models loading)
    reloads once it serves, with the file as it is then."""
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _document())
    previous = (signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM))
    signal.signal(signal.SIGHUP, remember_early_sighup)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    try:
        os.kill(os.getpid(), signal.SIGHUP)
        _write(path, _document("openai/beta"))
        await inbox.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(gateway({"type": "lifespan"}, inbox.get, send))
        for _ in range(500):
            if _target_models(gateway) == ["openai/beta"]:
                break
            await asyncio.sleep(0.01)
        assert _target_models(gateway) == ["openai/beta"]
        assert not take_early_sighup()  # applied once, then forgotten
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(lifespan, 30)
    finally:
        signal.signal(signal.SIGHUP, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_an_early_sighup_is_remembered_once() -> None:
    previous = signal.signal(signal.SIGHUP, remember_early_sighup)
    try:
        assert not take_early_sighup()
        os.kill(os.getpid(), signal.SIGHUP)
        assert take_early_sighup()
        assert not take_early_sighup()
    finally:
        signal.signal(signal.SIGHUP, previous)


def _governed(rpm: int | None = None, usd: str | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {"ledger": {"enabled": False}}
    if rpm is not None:
        extra["rate_limits"] = {"default": {"rpm": rpm}}
    if usd is not None:
        extra["budgets"] = {"default": [{"period": "day", "usd": usd}]}
    return _document(**extra)


async def _admitted(gateway: Gateway, tenant: str, times: int) -> int:
    from gateway.errors import BudgetExceeded, RateLimited
    from gateway.limits import Caller

    assert gateway.services.governor is not None
    caller = Caller(tenant_id=tenant, user_id="u", model_type="llm", provider="openai", model="gpt", route="chat")
    admitted = 0
    for _ in range(times):
        try:
            await gateway.services.governor.admit(caller)
        except (BudgetExceeded, RateLimited):
            continue
        admitted += 1
    return admitted


@pytest.mark.asyncio
async def test_budgets_and_rate_limits_change_live_and_keep_what_was_counted(tmp_path: Path) -> None:
    from decimal import Decimal

    from gateway.limits import Caller

    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _governed(rpm=2, usd="1"))
    governor = gateway.services.governor
    assert governor is not None
    assert await _admitted(gateway, "busy", 4) == 2
    spender = Caller(tenant_id="spender", user_id="u", model_type="llm", provider="openai", model="gpt", route="chat")
    governor.settle(spender, Decimal("0.80"), 0)
    await governor.flush()
    assert await _admitted(gateway, "spender", 1) == 1  # $0.80 of $1
    _write(path, _governed(rpm=5, usd="0.5"))

    status = await gateway.reloader.reload("SIGHUP")

    assert (status.result, status.needs_restart) == ("applied", [])
    assert gateway.services.governor is governor  # the same counters
    assert await _admitted(gateway, "fresh", 8) == 5  # the new rate, at once
    assert await _admitted(gateway, "spender", 1) == 0  # what was spent still counts: $0.80 of $0.50
    _write(path, _governed())  # neither: everything admitted
    assert (await gateway.reloader.reload("SIGHUP")).result == "applied"
    assert await _admitted(gateway, "busy", 20) == 20
    assert await _admitted(gateway, "spender", 3) == 3


@pytest.mark.asyncio
async def test_budgets_switched_on_where_none_were_need_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    gateway = _gateway(path, _governed())
    assert gateway.services.governor is None
    _write(path, _governed(rpm=5, usd="1"))

    status = await gateway.reloader.reload("SIGHUP")

    assert status.result == "unchanged"
    assert "rate_limits.default" in status.needs_restart and "budgets.default" in status.needs_restart
    assert gateway.services.governor is None
    assert not gateway.services.config.rate_limits.enabled
