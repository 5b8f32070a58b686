"""build_services: one factory from the configuration; what it builds and what it leaves out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.metrics import render
from gateway.services import Services, build_services, needs_litellm


class _Status:
    in_flight = 3
    ready = True
    draining = False
    started_at = 0.0


def _config(**extra: Any) -> GatewayConfig:
    return parse_config({"dify": {"inner_api_key": "k"}, "routes": [], **extra}, "<test>", env={})


def _route(model: str, model_type: str) -> dict[str, Any]:
    return {"match": {"type": model_type}, "targets": [{"model": model, "api_key": "sk-x"}]}


def test_without_summary_model_or_dify_url_those_services_are_absent() -> None:
    services = build_services(_config(), _Status())
    assert services.summary is None
    assert services.forwarder is None
    assert services.passthrough is False
    assert services.inner_api_key == b"k"
    with pytest.raises(dataclasses.FrozenInstanceError):
        services.summary = None  # type: ignore[misc]


def test_a_dify_url_makes_a_forwarder_and_passthrough_follows_the_setting() -> None:
    on = build_services(_config(dify={"inner_api_key": "k", "api_url": "http://dify:5001"}), _Status())
    assert on.forwarder is not None and on.passthrough is True
    off = build_services(
        _config(dify={"inner_api_key": "k", "api_url": "http://dify:5001", "passthrough": False}), _Status()
    )
    assert off.forwarder is not None and off.passthrough is False


def test_no_inner_api_key_is_refused() -> None:
    config = parse_config({"routes": []}, "<test>", env={})
    with pytest.raises(ValueError, match="no inner API key"):
        build_services(config, _Status())


def test_the_metrics_read_the_live_status() -> None:
    services: Services = build_services(_config(), _Status())

    page = render(services.metrics).decode()
    assert "dify_gateway_in_flight 3.0" in page
    assert "dify_gateway_draining 0.0" in page


def test_litellm_is_needed_only_by_routes_that_use_it() -> None:
    assert not needs_litellm(_config(routes=[_route("local/multilingual-e5-small", "text-embedding")]))
    assert not needs_litellm(_config(routes=[_route("openai/gpt-4o-mini", "llm")]))  # the native client
    assert needs_litellm(_config(routes=[_route("anthropic/claude-3-5-haiku-latest", "llm")]))
    assert needs_litellm(_config(summary_model={"model": "anthropic/claude-3-5-haiku-latest", "api_key": "x"}))
