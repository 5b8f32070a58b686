"""Which adapter serves a target: an explicit table by model prefix, never a silent default.

local/...   the embedded models (``pip install 'dify-gateway[local]'``)
tei/...     Hugging Face text-embeddings-inference over HTTP (embeddings, rerank)
openai/..., hosted_vllm/...   the native OpenAI-compatible client (chat, embeddings; see openai_compat)
cohere/, hosted_vllm/, xinference/ rerank   the native rerank client (see native_rerank)
anything else: litellm, whose provider prefix picks the backend
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gateway.adapters.base import (
    ChatAdapter,
    EmbeddingAdapter,
    ModerationAdapter,
    RerankAdapter,
    SpeechAdapter,
    TranscriptionAdapter,
)
from gateway.adapters.http_client import HttpClient
from gateway.adapters.http_tei import TeiAdapter
from gateway.adapters.litellm_chat import LiteLLMChatAdapter
from gateway.adapters.litellm_embedding import LiteLLMEmbeddingAdapter
from gateway.adapters.litellm_loader import load_litellm
from gateway.adapters.litellm_moderation import LiteLLMModerationAdapter
from gateway.adapters.litellm_rerank import LiteLLMRerankAdapter
from gateway.adapters.litellm_speech import LiteLLMSpeechAdapter
from gateway.adapters.litellm_transcription import LiteLLMTranscriptionAdapter
from gateway.adapters.native_rerank import NativeRerank, native_rerank
from gateway.adapters.openai_compat import OpenAICompatChat, OpenAICompatEmbedding, native_openai
from gateway.catalog import is_local
from gateway.errors import NoRoute
from gateway.routing import Target

if TYPE_CHECKING:
    from gateway.adapters.local.runtime import LocalModels

TEI_PREFIX = "tei/"


_NATIVE_OPENAI_TYPES = frozenset({"llm", "text-embedding", "multimodal-embedding"})


def uses_litellm(target: Target, model_types: Iterable[str] = ("llm",)) -> bool:
    """Whether serving ``target`` for these model types may need litellm (a chat in
    completion mode still goes through it; so do image documents in multimodal rerank)."""
    if is_local(target.model) or target.model.startswith(TEI_PREFIX):
        return False
    openai = native_openai(target) and target.config.mode != "completion"
    rerank = native_rerank(target)
    for model_type in model_types:
        if model_type in _NATIVE_OPENAI_TYPES and openai:
            continue
        if model_type == "rerank" and rerank:
            continue
        return True
    return False


class Backends:
    """The live adapters of one app instance (one per kind, shared by all requests)."""

    def __init__(self, chat: ChatAdapter | None = None) -> None:
        self.http = HttpClient()
        self._litellm_chat: ChatAdapter = chat or LiteLLMChatAdapter()
        self._native_chat = OpenAICompatChat(self.http, self._litellm_chat)
        self._native_embedding = OpenAICompatEmbedding(self.http)
        self._litellm_embedding = LiteLLMEmbeddingAdapter()
        self._litellm_rerank = LiteLLMRerankAdapter()
        self._native_rerank = NativeRerank(self.http, self._litellm_rerank)
        self._litellm_speech = LiteLLMSpeechAdapter()
        self._litellm_transcription = LiteLLMTranscriptionAdapter()
        self._litellm_moderation = LiteLLMModerationAdapter()
        self._tei = TeiAdapter(self.http)
        self._local: LocalModels | None = None
        # Told of every embedded model process that is replaced: (model, "crash" | "timeout").
        self.on_local_restart: Callable[[str, str], None] | None = None

    @property
    def local(self) -> LocalModels:
        """The embedded models, set up on first need (their packages are an optional extra)."""
        if self._local is None:
            from gateway.adapters.local.runtime import LocalModels

            self._local = LocalModels(on_restart=self._local_restarted)
        return self._local

    def _local_restarted(self, model: str, reason: str) -> None:
        if self.on_local_restart is not None:
            self.on_local_restart(model, reason)

    async def preload_local(self, names: Iterable[str]) -> None:
        await self.local.preload(names)

    def check_local(self, names: Iterable[str]) -> None:
        self.local.check_installed(names)

    def local_status(self) -> dict[str, str]:
        return self._local.status() if self._local is not None else {}

    async def aclose(self) -> None:
        """Release pooled connections and worker threads (at shutdown)."""
        for adapter in (
            self._litellm_chat,
            self._litellm_embedding,
            self._litellm_rerank,
            self._litellm_speech,
            self._litellm_transcription,
            self._litellm_moderation,
        ):
            close = getattr(adapter, "aclose", None)
            if close is not None:
                await close()
        await self.http.aclose()
        if self._local is not None:
            self._local.close()

    async def ready(self, target: Target) -> None:
        """Wait until what serves ``target`` is loaded (litellm is imported in the background
        at start-up, which takes seconds): callers start their upstream clocks after this."""
        if uses_litellm(target):
            await load_litellm()

    def chat(self, target: Target) -> ChatAdapter:
        if is_local(target.model):
            raise NoRoute(f"target {target.model!r}: the gateway has no embedded LLM; route llm calls to a backend")
        return self._native_chat if native_openai(target) else self._litellm_chat

    def embedding(self, target: Target) -> EmbeddingAdapter:
        if is_local(target.model):
            return self.local.embedding()
        if target.model.startswith(TEI_PREFIX):
            return self._tei
        return self._native_embedding if native_openai(target) else self._litellm_embedding

    def rerank(self, target: Target) -> RerankAdapter:
        if is_local(target.model):
            return self.local.embedding()
        if target.model.startswith(TEI_PREFIX):
            return self._tei
        return self._native_rerank if native_rerank(target) else self._litellm_rerank

    def speech(self, target: Target) -> SpeechAdapter:
        return self.local.speech() if is_local(target.model) else self._litellm_speech

    def transcription(self, target: Target) -> TranscriptionAdapter:
        return self.local.transcription() if is_local(target.model) else self._litellm_transcription

    def moderation(self, target: Target) -> ModerationAdapter:
        return self.local.moderation() if is_local(target.model) else self._litellm_moderation
