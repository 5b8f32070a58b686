"""gateway.console.tryit: the try-it form turned into the daemon's request."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.app import create_app
from gateway.config import parse_config
from gateway.console.tryit import _example, plan_try
from gateway.errors import BadRequest

KEY = "inner-key-for-tests"


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
