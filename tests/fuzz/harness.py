"""Fuzz native code with hypothesis, one worker process per target, so a crash is a finding.

Each target module (``tests/fuzz/<target>.py``) defines ``load()`` (its engine, built in the
worker), ``check(engine, payload)`` (one call into native code plus the assertions on what
came back), ``payloads()`` (a hypothesis strategy) and ``DEFAULT_EXAMPLES``. Run one with
``python -m tests.fuzz.<target> [--examples N] [--count]``:

- By default the first failure (an assertion, an unexpected exception, the worker killed by a
  signal or stuck past ``--call-timeout``) is shrunk by hypothesis to a minimal input, which is
  printed; the exit status is 1. A crashed worker is restarted, so shrinking works on crashes.
- ``--count`` runs every example whatever happens and reports how many crashed (a JSON line).

The worker runs under glibc's malloc checker when it is installed, so heap corruption aborts at
the call that caused it instead of some calls later. Examples are derandomised: a run is
reproducible. ``DIFY_GATEWAY_FUZZ_EXAMPLES`` overrides every target's example count.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, example, given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[2]
MALLOC_DEBUG = Path("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")
EXAMPLES_ENV = "DIFY_GATEWAY_FUZZ_EXAMPLES"


class WorkerCrashed(Exception):
    """The worker died during a call (a signal or an exit): the input crashed native code."""


class WorkerHung(Exception):
    """The worker did not answer within the per-call deadline."""


class TargetFailed(AssertionError):
    """The call returned, but wrongly (an assertion or an unexpected exception in the worker)."""


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # One thread per worker: the machine is shared, and crashes do not depend on threads.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if MALLOC_DEBUG.exists():
        env["LD_PRELOAD"] = (
            f"{MALLOC_DEBUG} {env['LD_PRELOAD']}".strip() if env.get("LD_PRELOAD") else str(MALLOC_DEBUG)
        )
        env["MALLOC_CHECK_"] = "3"
        env["GLIBC_TUNABLES"] = "glibc.malloc.check=3"
    return env


class Worker:
    """A ``tests.fuzz.worker`` process for one target, restarted after it dies."""

    def __init__(self, target: str, call_timeout_s: float, load_timeout_s: float = 120.0) -> None:
        self._target = target
        self._call_timeout_s = call_timeout_s
        self._load_timeout_s = load_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr = tempfile.TemporaryFile()
        self.starts = 0

    def call(self, payload: Any) -> None:
        process = self._ensure()
        data = pickle.dumps(payload)
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(struct.pack("<Q", len(data)) + data)
            process.stdin.flush()
            (size,) = struct.unpack("<Q", self._read(8, self._call_timeout_s))
            status, detail = pickle.loads(self._read(size, self._call_timeout_s))
        except BrokenPipeError:
            raise self._died() from None
        if status != "ok":
            raise TargetFailed(detail)

    def close(self) -> None:
        if self._process is not None:
            self._kill()
        self._stderr.close()

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            self._stderr.seek(0)
            self._stderr.truncate()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.fuzz.worker", self._target],
                cwd=ROOT,
                env=worker_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
            self.starts += 1
            if self._read(1, self._load_timeout_s) != b"R":
                raise RuntimeError(f"the {self._target} worker did not start: {self._stderr_tail()}")
        return self._process

    def _read(self, size: int, timeout_s: float) -> bytes:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        deadline = time.monotonic() + timeout_s
        chunks: list[bytes] = []
        while size:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([stdout], [], [], max(left, 0.0))
            if not ready:
                self._kill()
                raise WorkerHung(f"no answer within {timeout_s:g} s")
            chunk = os.read(stdout.fileno(), size)
            if not chunk:
                raise self._died()
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _died(self) -> WorkerCrashed:
        assert self._process is not None
        code = self._process.wait(timeout=30)
        self._process = None
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        return WorkerCrashed(f"the worker was {how}: {self._stderr_tail()}")

    def _kill(self) -> None:
        assert self._process is not None
        self._process.kill()
        self._process.wait(timeout=30)
        self._process = None

    def _stderr_tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip()
        return text[-600:] or "(nothing on stderr)"


def shown(payload: Any, limit: int = 1500) -> str:
    text = repr(payload)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters in all)"


def main(
    target: str,
    payloads: Callable[[], st.SearchStrategy[Any]],
    default_examples: int,
    call_timeout_s: float = 60.0,
    explicit: Sequence[Any] = (),
) -> int:
    """Run one target; ``explicit`` inputs (those that once crashed it) are always tried first."""
    parser = argparse.ArgumentParser(prog=f"python -m tests.fuzz.{target}")
    parser.add_argument("--examples", type=int, default=int(os.environ.get(EXAMPLES_ENV) or default_examples))
    parser.add_argument("--count", action="store_true", help="run every example and count crashes; do not stop at one")
    parser.add_argument("--call-timeout", type=float, default=call_timeout_s)
    parser.add_argument("--max-seconds", type=float, default=0.0, help="stop calling the engine after this long")
    args = parser.parse_args()

    started = time.monotonic()
    worker = Worker(target, args.call_timeout)
    tally = {"examples": 0, "crashes": 0, "hangs": 0, "failures": 0}
    first: dict[str, str] = {}
    last_failing: list[Any] = []

    @settings(
        max_examples=args.examples,
        derandomize=True,  # the same examples on every run: CI never flakes on a new one
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate] if args.count else [Phase.explicit, Phase.generate, Phase.shrink],
        print_blob=False,
    )
    @given(payloads())
    def fuzz(payload: Any) -> None:
        if args.max_seconds and time.monotonic() - started > args.max_seconds:
            return  # out of time: hypothesis still draws its examples, the engine sees no more
        tally["examples"] += 1
        if args.count and tally["examples"] % 500 == 0:
            print(json.dumps({"target": target, "progress": True, **tally}), flush=True)
        try:
            worker.call(payload)
        except (WorkerCrashed, WorkerHung, TargetFailed) as exc:
            kind = {WorkerCrashed: "crashes", WorkerHung: "hangs", TargetFailed: "failures"}[type(exc)]
            if not args.count:
                last_failing[:] = [payload]
                raise
            tally[kind] += 1
            first.setdefault(kind, f"{shown(payload, 300)} -> {str(exc)[-300:]}")

    for payload in reversed(explicit):
        fuzz = example(payload)(fuzz)
    status = 0
    try:
        fuzz()
    except (WorkerCrashed, WorkerHung, TargetFailed) as exc:
        status = 1
        print(f"{target}: FAILED ({type(exc).__name__}): {exc}", flush=True)
        if last_failing:
            print(f"{target}: minimal failing input: {shown(last_failing[0])}", flush=True)
    finally:
        worker.close()
    summary = {
        "target": target,
        **tally,
        "worker_starts": worker.starts,
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.count:
        summary["first"] = first  # type: ignore[assignment]
    print(json.dumps(summary, ensure_ascii=True), flush=True)
    return status
