"""The ``limits`` block: parsing, defaults, per-route overrides and the messages of the checks."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from gateway.cli import main
from gateway.config import ConfigError, RequestLimits, default_routes, parse_config
from gateway.errors import PayloadTooLarge
from gateway.invoke.limits import Limits
from gateway.routing import RouteTable

CONFIGURATION_DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_defaults_are_the_documented_ones() -> None:
    assert RequestLimits().model_dump() == {
        "embedding_inputs": 2048,
        "embedding_input_chars": 200_000,
        "rerank_docs": 1000,
        "rerank_doc_chars": 200_000,
        "tts_chars": 100_000,
        "moderation_chars": 1_000_000,
        "speech2text_bytes": 31_457_280,
    }
    config = parse_config({}, "<test>", env={})
    assert config.limits == RequestLimits()
    assert all(route.limits is None for route in config.routes)


def test_the_configuration_reference_lists_every_limit_with_its_default() -> None:
    block = CONFIGURATION_DOC.read_text().split("\nlimits:", 1)[1].split("\n", 8)[:8]
    documented = dict(re.findall(r"^  (\w+): (\d+)", "\n".join(block), re.MULTILINE))
    assert {k: int(v) for k, v in documented.items()} == RequestLimits().model_dump()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"limits": {"tts_chars": 0}}, "limits.tts_chars: Input should be greater than or equal to 1"),
        ({"limits": {"tts_characters": 10}}, "limits.tts_characters: Extra inputs are not permitted"),
        ({"limits": {"rerank_docs": "many"}}, "limits.rerank_docs: Input should be a valid integer"),
        (
            {"routes": [{"match": {"type": "tts"}, "targets": [{"model": "local/espeak-ng"}], "limits": {"x": 1}}]},
            "routes[0].limits.x: Extra inputs are not permitted",
        ),
    ],
)
def test_invalid_limits_name_the_key(raw: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, "gateway.yaml", env={})
    assert expected in str(caught.value)


def test_a_route_overrides_only_the_keys_it_sets() -> None:
    routes = default_routes()
    for route in routes:
        if route["match"]["type"] == "rerank":
            route["name"] = "big-rerank"
            route["limits"] = {"rerank_docs": 5000}
    config = parse_config({"routes": routes, "limits": {"rerank_docs": 10, "rerank_doc_chars": 50}}, "<t>", env={})
    table, limits = RouteTable(config.routes), Limits(config.limits)
    rerank = table.resolve("rerank", "langgenius/cohere/cohere", "rerank-v3")
    multimodal = table.resolve("multimodal-rerank", "langgenius/cohere/cohere", "rerank-v3")
    assert rerank is not None and multimodal is not None
    assert limits.cap(rerank, "rerank_docs") == (5000, "route 'big-rerank' limits.rerank_docs")
    assert limits.cap(rerank, "rerank_doc_chars") == (50, "limits.rerank_doc_chars")
    assert limits.cap(multimodal, "rerank_docs") == (10, "limits.rerank_docs")
    limits.check(rerank, "rerank_docs", 5000, "docs")  # at the cap: allowed
    with pytest.raises(PayloadTooLarge) as caught:
        limits.check(rerank, "rerank_docs", 5001, "docs")
    assert caught.value.status == 413
    assert caught.value.message == (
        "route 'big-rerank' limits.rerank_docs: docs has 5,001 documents, over the limit of 5,000 "
        "(set in the gateway configuration)"
    )


def test_check_each_names_the_first_item_over_the_cap() -> None:
    config = parse_config({"limits": {"embedding_input_chars": 10}}, "<t>", env={})
    resolution = RouteTable(config.routes).resolve("text-embedding", "p", "m")
    assert resolution is not None
    limits = Limits(config.limits)
    limits.check_each(resolution, "embedding_input_chars", [10, 0, 3], "texts")
    with pytest.raises(PayloadTooLarge) as caught:
        limits.check_each(resolution, "embedding_input_chars", [3, 11, 12_345], "texts")
    assert caught.value.message.startswith(
        "limits.embedding_input_chars: texts[1] has 11 characters, over the limit of 10 "
    )


def test_check_config_shows_the_limits_and_the_route_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = [{"name": "tts", "match": {"type": "tts"}, "targets": [{"model": "local/espeak-ng"}]}]
    routes.append({"match": {"type": "moderation"}, "targets": [{"model": "local/moderation-rules"}]})
    routes[1]["limits"] = {"moderation_chars": 77}
    path = tmp_path / "gateway.yaml"
    path.write_text(
        orjson.dumps({"dify": {"inner_api_key": "abcd1234"}, "limits": {"tts_chars": 9}, "routes": routes}).decode()
    )
    assert main(["check-config", "--config", str(path)]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["limits"] == {**RequestLimits().model_dump(), "tts_chars": 9}
    assert report["route_limits"] == {"1:moderation:*/*": {"moderation_chars": 77}}
