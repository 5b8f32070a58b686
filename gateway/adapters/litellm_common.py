"""What the litellm adapters share: connection kwargs, one-time library set-up, the call boundary."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

from gateway.adapters.litellm_errors import map_litellm_error
from gateway.adapters.litellm_loader import load_litellm
from gateway.errors import GatewayError, UpstreamError
from gateway.routing import Target

T = TypeVar("T")

_prepared = False


def target_kwargs(call_target: Target, timeout_s: float) -> dict[str, Any]:
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
    if cfg.headers:
        kwargs["extra_headers"] = dict(cfg.headers)
    kwargs["timeout"] = cfg.timeout_s or timeout_s
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
    """The configured litellm module, with the fixes every non-chat adapter relies on."""
    global _prepared
    module = await load_litellm()
    if not _prepared:
        _prepare(module)
        _prepared = True
    return module


def _prepare(module: ModuleType) -> None:
    # litellm 1.106.2 sends OpenAI-SDK embeddings with `max_retries or DEFAULT_MAX_RETRIES`,
    # so an explicit 0 becomes 2 hidden retries; this global is read only there.
    setattr(module, "DEFAULT_MAX_RETRIES", 0)  # noqa: B010 (a module attribute mypy cannot see)
    # litellm's models build their pydantic schemas on first use; two of them warn about a
    # ReadOnly TypedDict item while doing so, which litellm silences with a filter it adds
    # at import. Where that filter is gone (a test framework restores the filters after
    # each test) and warnings are errors, the build fails on every call. So the models
    # these calls construct are built once here, quietly (a few ms).
    from litellm.types import utils
    from litellm.types.rerank import RerankResponse
    from litellm.types.router import GenericLiteLLMParams

    models = (
        GenericLiteLLMParams,
        utils.EmbeddingResponse,
        RerankResponse,
        utils.TranscriptionResponse,
        # The chat adapter's, so a chat call after these ones meets the same built models.
        utils.Message,
        utils.Choices,
        utils.ModelResponse,
        utils.Delta,
        utils.StreamingChoices,
        utils.ModelResponseStream,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model in models:
            model.model_rebuild()


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
    return type(err)(err.message.replace(secret, "***"), err.upstream_status)
