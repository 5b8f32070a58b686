from __future__ import annotations

from typing import Any

import pytest

from gateway.config import TargetConfig, parse_config
from gateway.routing import RouteTable, Target, normalize_provider


def table(routes: list[dict[str, Any]]) -> RouteTable:
    return RouteTable(parse_config({"routes": routes}, "<test>", env={}).routes)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("openai", "langgenius/openai/openai"),
        ("google", "langgenius/gemini/google"),
        ("langgenius/openai/openai", "langgenius/openai/openai"),
        ("acme/plug/prov", "acme/plug/prov"),
    ],
)
def test_provider_normalisation(given: str, expected: str) -> None:
    assert normalize_provider(given) == expected


ROUTES = [
    {
        "name": "tenant-a",
        "match": {"type": "llm", "provider": "openai", "tenant": ["ta"]},
        "targets": [{"model": "anthropic/x"}],
    },
    {
        "name": "gpt4o",
        "match": {"type": "llm", "provider": "openai", "model": "gpt-4o*"},
        "targets": [{"model": "openai/{model}"}],
    },
    {
        "name": "any-open",
        "match": {"type": ["llm", "rerank"], "provider": "open*"},
        "targets": [{"model": "{provider}/{model}"}],
    },
    {"name": "acme", "match": {"type": "llm", "provider": "acme/p/q"}, "targets": [{"model": "hosted_vllm/{model}"}]},
    {"name": "embed", "match": {"type": "text-embedding"}, "targets": [{"model": "local/multilingual-e5-small"}]},
]


@pytest.mark.parametrize(
    ("model_type", "provider", "model", "tenant", "route", "target"),
    [
        ("llm", "openai", "gpt-4o-mini", "tb", "gpt4o", "openai/gpt-4o-mini"),
        ("llm", "langgenius/openai/openai", "gpt-4o", "tb", "gpt4o", "openai/gpt-4o"),
        ("llm", "openai", "gpt-4o-mini", "ta", "tenant-a", "anthropic/x"),
        ("llm", "openai", "o3", "tb", "any-open", "openai/o3"),
        ("rerank", "openrouter", "r1", "tb", "any-open", "openrouter/r1"),
        ("llm", "acme/p/q", "m", "tb", "acme", "hosted_vllm/m"),
        ("text-embedding", "anything", "e", "tb", "embed", "local/multilingual-e5-small"),
        ("llm", "anthropic", "claude", "tb", None, None),
        ("tts", "openai", "tts-1", "tb", None, None),
    ],
)
def test_first_matching_route_wins(
    model_type: str, provider: str, model: str, tenant: str, route: str | None, target: str | None
) -> None:
    resolution = table(ROUTES).resolve(model_type, provider, model, tenant)
    if route is None:
        assert resolution is None
        return
    assert resolution is not None
    assert resolution.route_label == route
    assert resolution.targets[0].model == target


def test_resolution_is_cached_and_bounded() -> None:
    routes = table([{"match": {"type": "llm"}, "targets": [{"model": "openai/{model}"}]}])
    first = routes.resolve("llm", "openai", "m1")
    assert routes.resolve("llm", "openai", "m1") is first
    for i in range(5000):
        routes.resolve("llm", "openai", f"m{i}")
    assert len(routes._cache) <= 4096


def test_describe_hides_secrets() -> None:
    routes = table([{"match": {"type": "llm"}, "targets": [{"model": "openai/x", "api_key": "sk-secret-value"}]}])
    text = repr(routes.describe())
    assert "sk-secret-value" not in text
    assert "<set>" in text


def test_target_local_flag_is_resolved_from_the_rendered_model() -> None:
    assert Target(config=TargetConfig(model="local/multilingual-e5-small"), model="local/multilingual-e5-small").local
    templated = TargetConfig(model="{provider}/{model}")
    assert Target(config=templated, model="local/espeak-ng").local
    assert not Target(config=templated, model="openai/gpt-4o-mini").local
