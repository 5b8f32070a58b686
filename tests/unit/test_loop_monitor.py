"""LoopMonitor: a blocked event loop shows as lag; tasks are counted."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.loop_monitor import LoopMonitor


@pytest.mark.asyncio
async def test_a_blocked_loop_shows_as_lag_and_tasks_are_counted() -> None:
    monitor = LoopMonitor(interval_s=0.02, window_s=5)
    assert monitor.lag_s is None and monitor.tasks is None
    monitor.start()
    try:
        await asyncio.sleep(0.1)
        idle = monitor.lag_s
        assert idle is not None and idle < 0.25  # a loaded machine still wakes a timer in time
        time.sleep(0.4)  # noqa: ASYNC251 - the blocking call on the loop this test is about
        await asyncio.sleep(0.1)
        lag = monitor.lag_s
        assert lag is not None and lag >= 0.3
        sleeper = asyncio.create_task(asyncio.sleep(10))
        tasks = monitor.tasks
        assert tasks is not None and tasks >= 3  # this test, the monitor's sampler, the sleeper
        sleeper.cancel()
    finally:
        await monitor.aclose()


@pytest.mark.asyncio
async def test_old_lag_leaves_the_window() -> None:
    monitor = LoopMonitor(interval_s=0.02, window_s=0.2)
    monitor.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # noqa: ASYNC251 - a blocking call on the loop, on purpose
        await asyncio.sleep(0.05)
        assert (monitor.lag_s or 0) >= 0.2
        await asyncio.sleep(0.6)  # more than the window's samples since
        assert (monitor.lag_s or 1) < 0.2
    finally:
        await monitor.aclose()
