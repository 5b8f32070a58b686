"""A target that crashes on purpose (for tests/fuzz/test_fuzz.py): integers of 7 and more abort
the worker, 3 hangs it. The harness must report both, and shrink the crash to exactly 7."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import harness


def load() -> Any:
    return None


def payloads() -> st.SearchStrategy[int]:
    return st.integers(0, 1000)


def check(_engine: Any, payload: int) -> None:
    if payload == 3 and os.environ.get("SELFTEST_HANG"):
        time.sleep(60)
    if payload >= 7:
        os.abort()


if __name__ == "__main__":
    hang = [3] if os.environ.get("SELFTEST_HANG") else []
    sys.exit(harness.main("selftest_crash", payloads, 50, call_timeout_s=2.0, explicit=hang))
