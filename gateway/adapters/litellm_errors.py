"""litellm exceptions -> gateway errors: the one place that knows litellm's taxonomy."""

from __future__ import annotations

import asyncio
import re

from gateway.errors import (
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    retry_after_seconds,
    upstream_error_for_status,
)

# A class-name prefix: "litellm.RateLimitError: ", "litellm.Timeout: ", "OpenAIException - ",
# "APITimeoutError - ". litellm stacks up to four ("litellm.ContextWindowExceededError:
# litellm.BadRequestError: ContextWindowExceededError: OpenAIException - Error code: 400 ...").
_NOISE = re.compile(r"^(?:litellm\.)?\w*(?:Error|Exception|Timeout)(?::\s*|\s*-\s+)")
_MAX_DETAIL = 400


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    # Keep the meat: the prefixes, one at a time (bounded, though each pass shortens the text).
    for _ in range(8):
        stripped = _NOISE.sub("", text, count=1).strip()
        if stripped == text:
            break
        text = stripped
    text = text.split("\nReceived Model Group")[0].split(" LiteLLM Retried")[0]
    return text[:_MAX_DETAIL] + ("..." if len(text) > _MAX_DETAIL else "")


def map_litellm_error(exc: BaseException, where: str) -> UpstreamError:
    """An ``UpstreamError`` describing ``exc``; ``where`` names route, provider and model."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return UpstreamTimeout(f"upstream timed out ({where})")
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or status < 100:
        status = None
    name = type(exc).__name__
    if name in ("Timeout", "APITimeoutError"):
        return UpstreamTimeout(f"upstream timed out ({where}): {_detail(exc)}", status)
    # litellm reports connection failures as APIConnectionError, or as an InternalServerError
    # with a made-up status 500 and the OpenAI SDK's "Connection error." text.
    if name == "APIConnectionError" or (name == "InternalServerError" and "Connection error" in str(exc)):
        return UpstreamUnavailable(f"upstream unreachable or failed ({where}): {_detail(exc)}", None)
    cls = upstream_error_for_status(status)
    label = f"HTTP {status}" if status else name
    return cls(f"upstream error {label} ({where}): {_detail(exc)}", status, _retry_after(exc))


def _retry_after(exc: BaseException) -> float | None:
    """The upstream's Retry-After: on the httpx response litellm keeps, or its header copy."""
    for headers in (
        getattr(getattr(exc, "response", None), "headers", None),
        getattr(exc, "litellm_response_headers", None),
    ):
        if headers is not None:
            try:
                value = headers.get("retry-after")
            except AttributeError:
                continue
            if value is not None:
                return retry_after_seconds(str(value))
    return None
