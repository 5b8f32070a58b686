"""Server processes under test: start, wait for readiness, stop; CPU and RSS from /proc.

CPU is utime + stime of a process and all its live descendants (threads included), plus
what its reaped children used (cutime + cstime), read from ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


class StartError(RuntimeError):
    """A server did not start; the message names its log."""


class Server:
    """A child process with its output in a log file."""

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.name, self.log = name, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            list(command), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, url: str, timeout_s: float) -> float:
        """Poll ``url`` until it answers 200; returns the seconds waited."""
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise StartError(f"{self.name} exited with status {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - started > timeout_s:
                raise StartError(f"{self.name} was not ready at {url} within {timeout_s:g} s; see {self.log}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on; the name may hold spaces


def _tree(pid: int) -> list[int]:
    """pid and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in _tree(pid):
        fields = _stat(member)
        if fields is None:
            continue
        # fields[11..14] = utime, stime, cutime, cstime (stat fields 14-17)
        total += sum(int(x) for x in fields[11:15]) / TICK
    return total


def rss_mb(pid: int) -> float:
    total = 0.0
    for member in _tree(pid):
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * PAGE_MB
        except (OSError, IndexError, ValueError):
            pass
    return total


def wait_idle(pid: int, cap_s: float, cores: float = 0.05, window_s: float = 0.5) -> float:
    """Wait until the process tree uses under ``cores`` for two windows in a row (at most
    ``cap_s``); returns the seconds waited. An overloaded server may still be working on
    requests its clients gave up on: that work belongs to the step that caused it."""
    started = time.monotonic()
    quiet = 0
    previous = cpu_seconds(pid)
    while quiet < 2 and time.monotonic() - started < cap_s:
        time.sleep(window_s)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if (now - previous) / window_s < cores else 0
        previous = now
    return time.monotonic() - started


class RssSampler:
    """Highest RSS of a process tree while running (sampled every 0.2 s)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.max_mb = pid, rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.max_mb = max(self.max_mb, rss_mb(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.max_mb = max(self.max_mb, rss_mb(self.pid))
