"""The endpoint table: one row per invocation, consistent with the request models, the
SDK's invoke types and the daemon's paths; every way in reads the same row."""

from __future__ import annotations

import typing

import pytest

from gateway.console.tryit import TryType
from gateway.endpoints import BY_INVOKE_TYPE, BY_MODEL_TYPE, BY_PATH, ENDPOINTS, Endpoint
from gateway.protocol.requests import LLMInvokeRequest, StructuredOutputInvokeRequest, TTSInvokeRequest

# The daemon's reverse-invocation paths that are model calls (spec section 3).
DAEMON_INVOKE_PATHS = {
    "invoke/llm",
    "invoke/llm/structured-output",
    "invoke/text-embedding",
    "invoke/multimodal-embedding",
    "invoke/rerank",
    "invoke/multimodal-rerank",
    "invoke/tts",
    "invoke/speech2text",
    "invoke/moderation",
    "invoke/summary",
}


def test_every_daemon_model_path_has_exactly_one_row() -> None:
    assert set(BY_PATH) == DAEMON_INVOKE_PATHS
    assert len(ENDPOINTS) == len(BY_PATH) == len(BY_INVOKE_TYPE) == len(BY_MODEL_TYPE)


def test_streamed_rows_are_the_daemons_streams() -> None:
    streamed = {e.path for e in ENDPOINTS if e.reply == "stream"}
    assert streamed == {"invoke/llm", "invoke/llm/structured-output", "invoke/tts"}
    assert all(e.unary is None for e in ENDPOINTS if e.reply == "stream")
    assert all(e.stream is None and e.whole is None for e in ENDPOINTS if e.reply == "unary")


def test_only_tts_reports_backend_failures_inside_its_stream() -> None:
    assert [e.path for e in ENDPOINTS if e.errors_in_stream] == ["invoke/tts"]


def test_a_non_streamed_llm_reply_is_gathered_into_one_write() -> None:
    llm = BY_PATH["invoke/llm"]
    assert llm.whole is not None
    base = {"tenant_id": "t", "user_id": "u", "provider": "openai", "model": "m", "mode": "chat"}
    assert llm.whole(LLMInvokeRequest.model_validate({**base, "stream": False})) is True
    assert llm.whole(LLMInvokeRequest.model_validate({**base, "stream": True})) is False
    assert BY_PATH["invoke/llm/structured-output"].request_model is StructuredOutputInvokeRequest
    assert BY_PATH["invoke/tts"].request_model is TTSInvokeRequest


def test_model_type_labels_follow_the_paths() -> None:
    for endpoint in ENDPOINTS:
        expected = endpoint.path.removeprefix("invoke/").replace("/", "-")
        assert endpoint.model_type == expected


def test_every_console_try_type_is_a_row() -> None:
    assert set(typing.get_args(TryType)) <= set(BY_MODEL_TYPE)


def test_a_row_must_say_how_it_is_answered() -> None:
    with pytest.raises(ValueError, match="exactly one of stream and unary"):
        Endpoint(
            path="invoke/x",
            invoke_type="x",
            model_type="x",
            label="x",
            request_model=LLMInvokeRequest,
            plugin_view=dict,
        )
