"""Streaming calls to a model process (the embedded LLM's way of working): values as they are
yielded, errors and crashes mid-stream, and an early close that stops the work at its next
value while the process lives on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.adapters.local.slot import ModelSlot
from gateway.errors import BadRequest, ModelCrashed
from tests.support import model_work

LOADER = "tests.support.model_work:load_nothing"


pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def slot() -> AsyncIterator[ModelSlot[None]]:
    slot = ModelSlot[None]("test/stream", LOADER)
    yield slot
    slot.close()


async def collect(slot: ModelSlot[None], work: object, *args: object) -> list[object]:
    return [value async for value in slot.stream(work, *args, timeout_s=30, where="test")]  # type: ignore[arg-type]


async def test_values_arrive_in_order_as_they_are_yielded(slot: ModelSlot[None]) -> None:
    started = time.monotonic()
    arrivals = []
    values = []
    async for value in slot.stream(model_work.count, 5, 0.1, timeout_s=30, where="test"):
        arrivals.append(time.monotonic() - started)
        values.append(value)
    assert values[:5] == [0, 1, 2, 3, 4] and values[5] == slot.pid
    # Each value as it was yielded, not all at the end: the first long before the last.
    assert arrivals[4] - arrivals[0] >= 0.3


async def test_an_error_mid_stream_follows_the_values_before_it(slot: ModelSlot[None]) -> None:
    seen = []
    with pytest.raises(BadRequest, match="failed after 3 values"):
        async for value in slot.stream(model_work.count_then_fail, 3, timeout_s=30, where="test"):
            seen.append(value)
    assert seen == [0, 1, 2]
    assert await collect(slot, model_work.count, 2, 0.0) == [0, 1, slot.pid]  # the process lives on


async def test_a_crash_mid_stream_fails_the_call_and_a_new_process_serves_the_next(slot: ModelSlot[None]) -> None:
    first = (await collect(slot, model_work.count, 1, 0.0))[-1]
    seen = []
    with pytest.raises(ModelCrashed):
        async for value in slot.stream(model_work.count_then_abort, 2, timeout_s=30, where="test"):
            seen.append(value)
    assert seen == [0, 1]
    second = None
    deadline = time.monotonic() + 30
    while second is None:
        try:
            second = (await collect(slot, model_work.count, 1, 0.0))[-1]
        except Exception:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert second != first and slot.restarts == 1


async def test_closing_early_stops_the_work_at_its_next_value(slot: ModelSlot[None], tmp_path: Path) -> None:
    flag = tmp_path / "stopped"
    stream = slot.stream(model_work.stop_flag, str(flag), timeout_s=60, where="test")
    assert await anext(stream) == 50  # None heartbeats are not passed on
    pid = slot.pid
    await stream.aclose()
    # The next call is served by the same process once the stopped one has ended: it does
    # not wait out the first (which never ends by itself).
    started = time.monotonic()
    assert await collect(slot, model_work.count, 1, 0.0) == [0, pid]
    assert time.monotonic() - started < 10
    beats = int(flag.read_text())
    assert 50 <= beats < 50 + 100  # stopped within a few heartbeats of the close


async def test_a_cancel_that_arrives_after_the_call_ended_is_ignored(slot: ModelSlot[None]) -> None:
    stream = slot.stream(model_work.count, 2, 0.0, timeout_s=30, where="test")
    assert await anext(stream) == 0
    await asyncio.sleep(0.3)  # the work has finished in the child by now
    await stream.aclose()  # its cancel reaches the child between calls
    for _ in range(3):
        assert (await collect(slot, model_work.count, 1, 0.0))[:1] == [0]
