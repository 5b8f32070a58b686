"""Which adapter serves a target: a table by the target's backend kind, resolved when the target
was built (``Target.backend``, see ``gateway.config.backends``), never by the model string per call.

litellm   litellm, whose provider prefix picks the upstream (every type)
openai    the native OpenAI-compatible client (chat, embeddings; see openai_compat)
tei       Hugging Face text-embeddings-inference over HTTP (embeddings, rerank)
rerank    the native rerank client (cohere, hosted_vllm, xinference; see native_rerank)
local     the embedded models (``pip install 'dify-gateway[local]'``)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar

from gateway.adapters.base import (
    ChatAdapter,
    EmbeddingAdapter,
    ModerationAdapter,
    RerankAdapter,
    SpeechAdapter,
    TranscriptionAdapter,
)
from gateway.adapters.http_tei import TeiAdapter
from gateway.adapters.litellm_chat import LiteLLMChatAdapter
from gateway.adapters.litellm_clients import OpenAIClients
from gateway.adapters.litellm_embedding import LiteLLMEmbeddingAdapter
from gateway.adapters.litellm_loader import load_litellm
from gateway.adapters.litellm_moderation import LiteLLMModerationAdapter
from gateway.adapters.litellm_rerank import LiteLLMRerankAdapter
from gateway.adapters.litellm_speech import LiteLLMSpeechAdapter
from gateway.adapters.litellm_transcription import LiteLLMTranscriptionAdapter
from gateway.adapters.local.chat import LocalLLMSettings
from gateway.adapters.native_rerank import NativeRerank
from gateway.adapters.openai_compat import OpenAICompatChat, OpenAICompatEmbedding
from gateway.config.backends import BackendKind
from gateway.errors import NoRoute
from gateway.http_client import HttpClient
from gateway.routing import Target

if TYPE_CHECKING:
    from gateway.adapters.local.runtime import LocalModels


def uses_litellm(target: Target, model_types: Iterable[str] = ("llm",)) -> bool:
    """Whether serving ``target`` for these model types may need litellm (a chat in
    completion mode still goes through it; so do image documents in multimodal rerank)."""
    return target.uses_litellm(model_types)


A = TypeVar("A")


class Backends:
    """The live adapters of one app instance (one per kind, shared by all requests)."""

    def __init__(self, chat: ChatAdapter | None = None) -> None:
        self.http = HttpClient()
        # One pool of OpenAI SDK clients for the litellm calls that take one, by connection settings.
        self.openai_clients = OpenAIClients()
        self._litellm_chat: ChatAdapter = chat or LiteLLMChatAdapter(self.openai_clients)
        self._native_chat = OpenAICompatChat(self.http, self._litellm_chat)
        self._native_embedding = OpenAICompatEmbedding(self.http)
        self._litellm_embedding = LiteLLMEmbeddingAdapter()
        self._litellm_rerank = LiteLLMRerankAdapter()
        self._native_rerank = NativeRerank(self.http, self._litellm_rerank)
        self._litellm_speech = LiteLLMSpeechAdapter(self.openai_clients)
        self._litellm_transcription = LiteLLMTranscriptionAdapter(self.openai_clients)
        self._litellm_moderation = LiteLLMModerationAdapter(self.openai_clients)
        self._tei = TeiAdapter(self.http)
        self._local: LocalModels | None = None
        # The embedded LLM's pool, set from the configuration before the models are set up.
        self.local_llm = LocalLLMSettings()
        self._releases: set[asyncio.Task[int]] = set()
        # Told of every embedded model process that is replaced: (model, "crash" | "timeout").
        self.on_local_restart: Callable[[str, str], None] | None = None
        # Backend kind -> the adapter of each capability (the embedded models load on first need).
        self._chat: dict[BackendKind, Callable[[], ChatAdapter]] = {
            "litellm": lambda: self._litellm_chat,
            "openai": lambda: self._native_chat,
            "local": lambda: self.local.chat(),
        }
        self._embedding: dict[BackendKind, Callable[[], EmbeddingAdapter]] = {
            "litellm": lambda: self._litellm_embedding,
            "openai": lambda: self._native_embedding,
            "tei": lambda: self._tei,
            "local": lambda: self.local.embedding(),
        }
        self._rerank: dict[BackendKind, Callable[[], RerankAdapter]] = {
            "litellm": lambda: self._litellm_rerank,
            "rerank": lambda: self._native_rerank,
            "tei": lambda: self._tei,
            "local": lambda: self.local.embedding(),
        }
        self._speech: dict[BackendKind, Callable[[], SpeechAdapter]] = {
            "litellm": lambda: self._litellm_speech,
            "local": lambda: self.local.speech(),
        }
        self._transcription: dict[BackendKind, Callable[[], TranscriptionAdapter]] = {
            "litellm": lambda: self._litellm_transcription,
            "local": lambda: self.local.transcription(),
        }
        self._moderation: dict[BackendKind, Callable[[], ModerationAdapter]] = {
            "litellm": lambda: self._litellm_moderation,
            "local": lambda: self.local.moderation(),
        }

    @property
    def local(self) -> LocalModels:
        """The embedded models, set up on first need (their packages are an optional extra)."""
        if self._local is None:
            from gateway.adapters.local.runtime import LocalModels

            self._local = LocalModels(llm=self.local_llm, on_restart=self._local_restarted)
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

    def release_idle(self, since: float) -> None:
        """After a reload, once the replaced configuration's last request ended: close the
        OpenAI SDK clients (connection pools) no call has used since ``since``."""
        task = asyncio.get_running_loop().create_task(self.openai_clients.close_unused_since(since))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

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
        if target.uses_litellm():
            await load_litellm()

    def chat(self, target: Target) -> ChatAdapter:
        return self._pick(self._chat, target, "llm")

    def embedding(self, target: Target) -> EmbeddingAdapter:
        return self._pick(self._embedding, target, "text-embedding")

    def rerank(self, target: Target) -> RerankAdapter:
        return self._pick(self._rerank, target, "rerank")

    def speech(self, target: Target) -> SpeechAdapter:
        return self._pick(self._speech, target, "tts")

    def transcription(self, target: Target) -> TranscriptionAdapter:
        return self._pick(self._transcription, target, "speech2text")

    def moderation(self, target: Target) -> ModerationAdapter:
        return self._pick(self._moderation, target, "moderation")

    @staticmethod
    def _pick(table: Mapping[BackendKind, Callable[[], A]], target: Target, model_type: str) -> A:
        client = target.backend.client(model_type)
        make = table.get(client) if client is not None else None
        if make is None:  # configuration validation refuses these; a hand-built target may not be
            raise NoRoute(f"target {target.model!r}: backend {target.backend.kind} cannot serve {model_type}")
        return make()
