"""The one table of invocations the gateway answers itself.

Each row says, once, everything the three ways in need: the inner-API path the daemon
posts to (``/inner/api/<path>``), the SDK's ``InvokeType`` of the serverless transaction,
the model-type label of metrics and logs, the daemon's words for it in error messages, the
request model, how it is answered (a stream of chunks or one result), which service call
answers it, and how the daemon re-emits its result to a plugin. The inner-API dispatcher
(``gateway.app``), the serverless endpoint and the console's try-it all read this table;
a path not in it is forwarded to Dify (or refused).

Services return result entities (dicts); only the HTTP edge turns them into frames and
envelopes, and the serverless endpoint passes them on as JSON-line events.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Literal, TypeVar

from gateway.errors import NoRoute
from gateway.protocol import plugin_view
from gateway.protocol.requests import (
    InvokeRequest,
    LLMInvokeRequest,
    ModerationInvokeRequest,
    MultimodalEmbeddingInvokeRequest,
    MultimodalRerankInvokeRequest,
    RerankInvokeRequest,
    Speech2TextInvokeRequest,
    StructuredOutputInvokeRequest,
    SummaryInvokeRequest,
    TextEmbeddingInvokeRequest,
    TTSInvokeRequest,
)
from gateway.protocol.results import SummaryResultDict
from gateway.services import Services

R = TypeVar("R", bound=InvokeRequest)
Reply = Literal["stream", "unary"]
View = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint(Generic[R]):
    """One invocation type; exactly one of ``stream`` and ``unary`` is set."""

    path: str  # after /inner/api/
    invoke_type: str  # dify_plugin.core.entities.invocation.InvokeType (SDK 0.10.2)
    model_type: str  # the label in metrics, logs and traces
    label: str  # the daemon's words for it in errors: "invoke <label> failed: ..."
    request_model: type[R]
    plugin_view: View  # a result (or each chunk) as the daemon re-emits it to a plugin
    stream: Callable[[Services, R], AsyncGenerator[Any, None]] | None = None
    unary: Callable[[Services, R], Awaitable[Any]] | None = None
    # A streamed reply known to be short (a non-streamed LLM answer): gathered into one write.
    whole: Callable[[R], bool] | None = None
    # Backend failures before the first chunk are a 200 stream of one error frame (as Dify answers TTS).
    errors_in_stream: bool = False

    def __post_init__(self) -> None:
        if (self.stream is None) == (self.unary is None):
            raise ValueError(f"endpoint {self.path}: exactly one of stream and unary")

    @property
    def reply(self) -> Reply:
        return "stream" if self.stream is not None else "unary"


def _llm(services: Services, request: LLMInvokeRequest) -> AsyncGenerator[Any, None]:
    return services.llm.chunks(request)


def _not_streamed(request: LLMInvokeRequest) -> bool:
    return not request.stream


def _tts(services: Services, request: TTSInvokeRequest) -> AsyncGenerator[Any, None]:
    return services.tts.chunks(request)


async def _text_embedding(services: Services, request: TextEmbeddingInvokeRequest) -> Any:
    return await services.embedding.embed(request)


async def _multimodal_embedding(services: Services, request: MultimodalEmbeddingInvokeRequest) -> Any:
    return await services.embedding.embed(request)


async def _rerank(services: Services, request: RerankInvokeRequest) -> Any:
    return await services.rerank.rerank(request)


async def _multimodal_rerank(services: Services, request: MultimodalRerankInvokeRequest) -> Any:
    return await services.rerank.rerank(request)


async def _speech2text(services: Services, request: Speech2TextInvokeRequest) -> Any:
    return await services.speech2text.transcribe(request)


async def _moderation(services: Services, request: ModerationInvokeRequest) -> Any:
    return await services.moderation.moderate(request)


async def _summary(services: Services, request: SummaryInvokeRequest) -> SummaryResultDict:
    """Without a ``summary_model`` this is a request no route serves, like any other: the
    inner API forwards it to Dify when ``dify.passthrough`` is on, every other way in
    reports it."""
    if services.summary is None:
        raise NoRoute(
            "no summary model configured: set summary_model to an LLM target"
            " (on the inner API, dify.api_url with dify.passthrough lets Dify summarise instead)"
        )
    return await services.summary.summarize(request)


ENDPOINTS: tuple[Endpoint[Any], ...] = (
    Endpoint(
        path="invoke/llm",
        invoke_type="llm",
        model_type="llm",
        label="llm model",
        request_model=LLMInvokeRequest,
        plugin_view=partial(plugin_view.llm_chunk, structured=False),
        stream=_llm,
        whole=_not_streamed,
    ),
    Endpoint(
        path="invoke/llm/structured-output",
        invoke_type="llm_structured_output",
        model_type="llm-structured-output",
        label="llm with structured output model",
        request_model=StructuredOutputInvokeRequest,
        plugin_view=partial(plugin_view.llm_chunk, structured=True),
        stream=_llm,
        whole=_not_streamed,
    ),
    Endpoint(
        path="invoke/text-embedding",
        invoke_type="text_embedding",
        model_type="text-embedding",
        label="text-embedding model",
        request_model=TextEmbeddingInvokeRequest,
        plugin_view=plugin_view.embedding_result,
        unary=_text_embedding,
    ),
    Endpoint(
        path="invoke/multimodal-embedding",
        invoke_type="multimodal_embedding",
        model_type="multimodal-embedding",
        label="multimodal embedding model",
        request_model=MultimodalEmbeddingInvokeRequest,
        plugin_view=plugin_view.embedding_result,
        unary=_multimodal_embedding,
    ),
    Endpoint(
        path="invoke/rerank",
        invoke_type="rerank",
        model_type="rerank",
        label="rerank model",
        request_model=RerankInvokeRequest,
        plugin_view=plugin_view.rerank_result,
        unary=_rerank,
    ),
    Endpoint(
        path="invoke/multimodal-rerank",
        invoke_type="multimodal_rerank",
        model_type="multimodal-rerank",
        label="multimodal rerank model",
        request_model=MultimodalRerankInvokeRequest,
        plugin_view=plugin_view.rerank_result,
        unary=_multimodal_rerank,
    ),
    Endpoint(
        path="invoke/tts",
        invoke_type="tts",
        model_type="tts",
        label="tts model",
        request_model=TTSInvokeRequest,
        plugin_view=plugin_view.tts_chunk,
        stream=_tts,
        errors_in_stream=True,
    ),
    Endpoint(
        path="invoke/speech2text",
        invoke_type="speech2text",
        model_type="speech2text",
        label="speech2text model",
        request_model=Speech2TextInvokeRequest,
        plugin_view=plugin_view.text_result,
        unary=_speech2text,
    ),
    Endpoint(
        path="invoke/moderation",
        invoke_type="moderation",
        model_type="moderation",
        label="moderation model",
        request_model=ModerationInvokeRequest,
        plugin_view=plugin_view.moderation_result,
        unary=_moderation,
    ),
    Endpoint(
        path="invoke/summary",
        invoke_type="system_summary",
        model_type="summary",
        label="summary",
        request_model=SummaryInvokeRequest,
        plugin_view=plugin_view.summary_result,
        unary=_summary,
    ),
)

BY_PATH: dict[str, Endpoint[Any]] = {e.path: e for e in ENDPOINTS}
BY_INVOKE_TYPE: dict[str, Endpoint[Any]] = {e.invoke_type: e for e in ENDPOINTS}
BY_MODEL_TYPE: dict[str, Endpoint[Any]] = {e.model_type: e for e in ENDPOINTS}
