"""Process-wide, lazy litellm set-up.

Importing litellm takes seconds and ~160 MB, so the gateway becomes ready without it and
imports it in a worker thread (at start-up when a route needs it, else on first use).
Globals are set once here: no bundled-cost-map download, no debug output, no library
retries (the gateway owns retries) and no callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import warnings
from types import ModuleType
from typing import NoReturn

_lock = threading.Lock()
_module: ModuleType | None = None


def _configure_environment() -> None:
    # Before the first import: otherwise litellm fetches its cost map over the network.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_LOG", "ERROR")


def load_litellm_sync() -> ModuleType:
    """Import and configure litellm once (blocking)."""
    global _module
    with _lock:
        if _module is None:
            _configure_environment()
            try:
                module = _import_and_configure()
            except BaseException:
                # A half-imported litellm left in sys.modules would be handed out, missing
                # attributes, by every later import: drop it so the next call starts afresh.
                for name in [n for n in sys.modules if n == "litellm" or n.startswith("litellm.")]:
                    del sys.modules[name]
                raise
            _module = module
        return _module


def _import_and_configure() -> ModuleType:
    import litellm

    # litellm logs every call at INFO ("LiteLLM completion() model=..."): noise at the
    # gateway's rate, and the gateway logs what matters itself.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    litellm.suppress_debug_info = True
    litellm.drop_params = True  # unknown params for a provider are dropped, not fatal
    litellm.num_retries = 0
    litellm.telemetry = False
    litellm.turn_off_message_logging = True
    _prepare(litellm)
    return litellm


def _prepare(module: ModuleType) -> None:
    """Fixes every adapter relies on."""
    # litellm 1.106.2 sends OpenAI-SDK embeddings with `max_retries or DEFAULT_MAX_RETRIES`,
    # so an explicit 0 becomes 2 hidden retries; this global is read only there.
    setattr(module, "DEFAULT_MAX_RETRIES", 0)  # noqa: B010 (a module attribute mypy cannot see)
    _no_hidden_resends()
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


def _no_hidden_resends() -> None:
    """Turn off the places where litellm 1.106.2 sends a request again on its own.

    Each would make one gateway attempt two upstream calls, past the route's budget:
    - its HTTP client (every provider not served through the OpenAI SDK) re-sends once on a
      fresh connection after a connection error or a reset;
    - with ``drop_params``, the OpenAI path re-sends a 422 without the parameters the error
      names, and Azure AI does the same through its provider config.
    The gateway's own retries cover the first; a 422 is the request's fault and final.
    """
    import httpx
    from litellm.llms.azure_ai.chat.transformation import AzureAIStudioConfig
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler
    from litellm.llms.openai import openai as openai_chat

    async def no_resend(self: object, *args: object, **kwargs: object) -> NoReturn:
        raise httpx.ConnectError("connection failed or reset before the response (the gateway retries, not litellm)")

    def reraise(e: BaseException, data: object) -> NoReturn:
        raise e

    def never(self: object, e: object, litellm_params: object) -> bool:
        return False

    setattr(AsyncHTTPHandler, "single_connection_post_request", no_resend)  # noqa: B010
    setattr(openai_chat, "drop_params_from_unprocessable_entity_error", reraise)  # noqa: B010
    setattr(AzureAIStudioConfig, "should_retry_llm_api_inside_llm_translation_on_http_error", never)  # noqa: B010


async def load_litellm() -> ModuleType:
    """The configured litellm module, imported off the event loop on first use."""
    if _module is not None:
        return _module
    return await asyncio.to_thread(load_litellm_sync)
