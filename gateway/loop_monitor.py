"""How late the event loop runs what is due, and how many tasks it holds.

A timer asks to wake every ``interval_s``; how much later than asked it actually runs is
the loop's lag: the time a ready request also waited for its turn. A long soak or a stall
(a blocking call on the loop) shows here before it shows in latency percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque


class LoopMonitor:
    """The largest lag over the last ``window_s``, sampled every ``interval_s``."""

    def __init__(self, interval_s: float = 0.25, window_s: float = 10.0) -> None:
        self._interval_s = interval_s
        self._lags: deque[float] = deque(maxlen=max(1, round(window_s / interval_s)))
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._sample_forever())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def lag_s(self) -> float | None:
        """The worst lag of the recent window; None before the first sample."""
        return max(self._lags) if self._lags else None

    @property
    def tasks(self) -> int | None:
        """Tasks alive on the monitored loop (None before ``start``)."""
        if self._loop is None:
            return None
        return len(asyncio.all_tasks(self._loop))

    async def _sample_forever(self) -> None:
        interval = self._interval_s
        while True:
            due = time.perf_counter() + interval
            await asyncio.sleep(interval)
            self._lags.append(max(0.0, time.perf_counter() - due))
