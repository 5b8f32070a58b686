"""What the litellm adapters share: connection kwargs, one-time library set-up, the call boundary."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

from gateway.adapters.litellm_errors import map_litellm_error
from gateway.adapters.litellm_loader import load_litellm
from gateway.errors import GatewayError, UpstreamError
from gateway.routing import Target
from gateway.trace import current_trace

T = TypeVar("T")


def target_kwargs(call_target: Target, timeout_s: float, connect_s: float | None = None) -> dict[str, Any]:
    """litellm connection kwargs for a target (keys, base URL, timeouts, passthrough)."""
    cfg = call_target.config
    kwargs: dict[str, Any] = dict(cfg.litellm_params)
    kwargs["model"] = call_target.model
    if cfg.api_key is not None:
        kwargs["api_key"] = cfg.api_key.get_secret_value()
    if cfg.api_base:
        kwargs["api_base"] = cfg.api_base
    if cfg.api_version:
        kwargs["api_version"] = cfg.api_version
    if cfg.organization:
        kwargs["organization"] = cfg.organization
    headers = dict(cfg.headers)
    trace = current_trace.get()
    if trace is not None and trace.traceparent:
        headers["traceparent"] = trace.traceparent  # the caller's trace continues upstream
    if headers:
        kwargs["extra_headers"] = headers
    total = deadline_s(call_target, timeout_s)
    if connect_s is not None and connect_s < total:
        import httpx  # litellm's own HTTP client: passes a split timeout on to the providers' clients

        kwargs["timeout"] = httpx.Timeout(total, connect=connect_s)
    else:
        kwargs["timeout"] = total
    # Retries belong to the gateway: neither litellm nor the provider SDK may retry.
    kwargs["num_retries"] = 0
    kwargs["max_retries"] = 0
    return kwargs


def call_params(target: Target, allowed: frozenset[str]) -> dict[str, Any]:
    """The target's ``params`` that this kind of call takes.

    ``params`` are meant for completions; a route serving several model types must not
    send ``temperature`` to an embedding endpoint. Other keys belong in ``litellm_params``.
    """
    return {k: v for k, v in target.config.params.items() if k in allowed}


def deadline_s(target: Target, timeout_s: float) -> float:
    """Seconds one call may take: the caller's budget, capped by the target's own timeout."""
    own = target.config.timeout_s
    return min(timeout_s, own) if own else timeout_s


def provider_prefix(model: str) -> str:
    """litellm's provider prefix of a model string ("cohere" for "cohere/rerank-v3.5")."""
    return model.split("/", 1)[0].lower() if "/" in model else ""


def bare_model(model: str) -> str:
    """The model string without its provider prefix."""
    return model.split("/", 1)[1] if "/" in model else model


async def litellm_module() -> ModuleType:
    """The configured litellm module (imported off the event loop on first use)."""
    return await load_litellm()


async def call_litellm(fn: Callable[[], Awaitable[T]], timeout_s: float, where: str, secret: str | None) -> T:
    """Await one litellm call under a hard deadline; every failure becomes a ``GatewayError``.

    ``secret`` (the target's API key) is scrubbed from error messages, whatever echoed it.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await fn()
    except GatewayError:
        raise
    except Exception as exc:  # the adapter boundary: every failure becomes an UpstreamError
        raise scrub(map_litellm_error(exc, where), secret) from exc


def scrub(err: UpstreamError, secret: str | None) -> UpstreamError:
    """``err`` with ``secret`` removed from its message (a new error of the same class)."""
    if not secret or secret not in err.message:
        return err
    return type(err)(err.message.replace(secret, "***"), err.upstream_status, err.retry_after_s)
