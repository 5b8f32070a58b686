"""Open-loop load for tests: calls started at a fixed rate, whatever the replies take."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def open_loop(rate: float, stop: asyncio.Event, one: Callable[[], Awaitable[None]]) -> None:
    """Start ``one()`` ``rate`` times a second until ``stop``; then wait for those in flight."""
    started = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()

    async def run() -> None:
        await one()

    sent = 0
    while not stop.is_set():
        delay = started + sent / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(run())
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += 1
    await asyncio.gather(*pending)
