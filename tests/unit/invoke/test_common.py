"""gateway.invoke.common: gathering pieces, cancelling the rest after a failure."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import UpstreamUnavailable
from gateway.invoke.common import gather_all


@pytest.mark.asyncio
async def test_gather_all_cancels_the_rest_after_a_failure() -> None:
    started: list[int] = []
    gate = asyncio.Semaphore(2)

    async def piece(n: int) -> int:
        async with gate:
            started.append(n)
            await asyncio.sleep(0.01)
            if n == 0:
                raise UpstreamUnavailable("piece 0 failed")
            return n

    with pytest.raises(UpstreamUnavailable):
        await gather_all(piece(n) for n in range(40))
    await asyncio.sleep(0.1)
    assert len(started) <= 4  # not all 40 went on to call the upstream
    assert await gather_all(piece(n) for n in range(1, 5)) == [1, 2, 3, 4]
