"""A sliding sum over the last N seconds, in one-second buckets: O(1) to add, O(N) to read."""

from __future__ import annotations

import math


class SlidingSum:
    def __init__(self, seconds: float) -> None:
        self._size = max(1, math.ceil(seconds))
        self._second = [-1] * self._size
        self._value = [0] * self._size

    def add(self, now: float, amount: int = 1) -> None:
        second = int(now)
        slot = second % self._size
        if self._second[slot] != second:
            self._second[slot], self._value[slot] = second, 0
        self._value[slot] += amount

    def total(self, now: float) -> int:
        oldest = int(now) - self._size + 1
        return sum(v for s, v in zip(self._second, self._value, strict=True) if s >= oldest)

    def clear(self) -> None:
        self._second = [-1] * self._size
