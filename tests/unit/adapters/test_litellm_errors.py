"""gateway.adapters.litellm_errors: litellm's exceptions -> gateway errors.

The exceptions are litellm's own: most are made as a real call makes them, by litellm's
``exception_type`` mapping an OpenAI SDK error of the provider's reply.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import httpx
import openai
import pytest

from gateway.adapters.litellm_errors import map_litellm_error
from gateway.adapters.litellm_loader import load_litellm_sync
from gateway.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)

W = "route 'r', provider 'p', model 'm' -> 'openai/gpt-4o-mini'"
REQUEST = httpx.Request("POST", "https://api.example/v1/chat/completions")


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    return load_litellm_sync()


def reply(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=REQUEST)


def raised_by_litellm(litellm: ModuleType, error: Exception) -> Exception:
    """The litellm exception a call raises when the provider's client raised ``error``."""
    from litellm.litellm_core_utils.exception_mapping_utils import exception_type

    try:
        exception_type(model="gpt-4o-mini", original_exception=error, custom_llm_provider="openai")
    except Exception as exc:
        assert type(exc).__module__ == "litellm.exceptions"
        return exc
    raise AssertionError("exception_type did not raise")


SDK_ERRORS: list[tuple[Callable[[], Exception], type[UpstreamError], int | None, float | None, str]] = [
    (
        lambda: openai.RateLimitError(
            "Error code: 429 - {'error': {'message': 'Rate limit reached'}}",
            response=reply(429, **{"retry-after": "7"}),
            body=None,
        ),
        UpstreamRateLimited,
        429,
        7.0,  # from the headers litellm keeps on the exception
        f"upstream error HTTP 429 ({W}): Error code: 429 - {{'error': {{'message': 'Rate limit reached'}}}}",
    ),
    (
        lambda: openai.AuthenticationError("Error code: 401 - Incorrect API key", response=reply(401), body=None),
        UpstreamAuthError,
        401,
        None,
        f"upstream error HTTP 401 ({W}): Error code: 401 - Incorrect API key",
    ),
    (
        lambda: openai.NotFoundError("Error code: 404 - no such model", response=reply(404), body=None),
        UpstreamBadRequest,
        404,
        None,
        f"upstream error HTTP 404 ({W}): Error code: 404 - no such model",
    ),
    (
        # litellm stacks four class names on this one; none is left in the message.
        lambda: openai.BadRequestError(
            "Error code: 400 - This model's maximum context length is 8192 tokens",
            response=reply(400),
            body=None,
        ),
        UpstreamBadRequest,
        400,
        None,
        f"upstream error HTTP 400 ({W}): Error code: 400 - This model's maximum context length is 8192 tokens",
    ),
    (
        lambda: openai.InternalServerError("Error code: 500 - boom", response=reply(500), body=None),
        UpstreamUnavailable,
        500,
        None,
        f"upstream error HTTP 500 ({W}): Error code: 500 - boom",
    ),
    (
        lambda: openai.APITimeoutError(request=REQUEST),
        UpstreamTimeout,
        408,  # litellm's made-up status for its Timeout
        None,
        f"upstream timed out ({W}): Request timed out. Error_str: Request timed out.",
    ),
    (
        # No HTTP answer at all: litellm's status 500 is not passed on.
        lambda: openai.APIConnectionError(request=REQUEST),
        UpstreamUnavailable,
        None,
        None,
        f"upstream unreachable or failed ({W}): Connection error.",
    ),
]


@pytest.mark.parametrize(("make", "cls", "status", "retry_after", "message"), SDK_ERRORS)
def test_provider_errors_as_litellm_raises_them(
    litellm: ModuleType,
    make: Callable[[], Exception],
    cls: type[UpstreamError],
    status: int | None,
    retry_after: float | None,
    message: str,
) -> None:
    error = map_litellm_error(raised_by_litellm(litellm, make()), W)
    assert type(error) is cls
    assert (error.upstream_status, error.retry_after_s) == (status, retry_after)
    assert str(error) == message


def test_a_made_up_500_for_a_connection_failure_is_unreachable(litellm: ModuleType) -> None:
    exc = litellm.InternalServerError("Connection error.", llm_provider="openai", model="m")
    error = map_litellm_error(exc, W)
    assert type(error) is UpstreamUnavailable and error.upstream_status is None
    assert str(error) == f"upstream unreachable or failed ({W}): Connection error."


def test_retry_after_from_the_reply_litellm_keeps(litellm: ModuleType) -> None:
    exc = litellm.ServiceUnavailableError(
        "overloaded", llm_provider="openai", model="m", response=reply(503, **{"Retry-After": "2"})
    )
    error = map_litellm_error(exc, W)
    assert type(error) is UpstreamUnavailable
    assert (error.upstream_status, error.retry_after_s) == (503, 2.0)
    assert str(error) == f"upstream error HTTP 503 ({W}): overloaded"


def test_litellms_retry_and_router_notes_are_cut(litellm: ModuleType) -> None:
    exc = litellm.RateLimitError(
        "slow down\nReceived Model Group=gpt-4o-mini\nAvailable Model Group Fallbacks=None",
        llm_provider="openai",
        model="m",
        num_retries=2,
    )
    assert str(map_litellm_error(exc, W)) == f"upstream error HTTP 429 ({W}): slow down"
    timeout = litellm.Timeout("Request timed out.", model="m", llm_provider="openai", num_retries=3)
    assert str(map_litellm_error(timeout, W)) == f"upstream timed out ({W}): Request timed out."


def test_a_long_message_is_cut(litellm: ModuleType) -> None:
    exc = litellm.BadRequestError("x" * 1000, model="m", llm_provider="openai")
    assert str(map_litellm_error(exc, W)) == f"upstream error HTTP 400 ({W}): {'x' * 400}..."


def test_an_odd_status_counts_as_none(litellm: ModuleType) -> None:
    exc = litellm.APIError(status_code=0, message="weird", llm_provider="openai", model="m")
    error = map_litellm_error(exc, W)
    assert type(error) is UpstreamUnavailable and error.upstream_status is None
    assert str(error) == f"upstream error APIError ({W}): weird"


def test_the_gateways_own_deadline() -> None:
    error = map_litellm_error(TimeoutError(), W)  # asyncio.timeout's, and aiohttp's
    assert type(error) is UpstreamTimeout and error.upstream_status is None
    assert str(error) == f"upstream timed out ({W})"


def test_a_gateway_error_passes_unchanged() -> None:
    own = UpstreamBadRequest("already mapped", 400)
    assert map_litellm_error(own, W) is own


def test_anything_else_is_unavailable_and_named() -> None:
    error = map_litellm_error(KeyError("choices"), W)
    assert type(error) is UpstreamUnavailable and error.upstream_status is None
    assert str(error) == f"upstream error KeyError ({W}): 'choices'"
