"""The spill file: rows the database could not take yet, one JSON line each, replayed later.

One append-only file per process, ``usage-spill-<pid>.jsonl`` (beside ``ledger.spill_path``,
else in the data directory), held under an exclusive ``flock`` while the process lives. A
process replays every spill file of the directory it can lock: its own, and those of
processes that died (the kernel released their locks). Containers sharing a volume can
have the same pid; a name already locked by a live process gets a random suffix instead.

A line cut short (the process was killed mid-write) is skipped and counted, never fatal;
the insert is idempotent, so a file replayed twice (two processes racing for a dead one's
file) counts its rows once in the database.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

from gateway.usage.row import UsageRow

log = logging.getLogger("dify_gateway")

DEFAULT_NAME = "usage-spill.jsonl"


@dataclass(slots=True)
class Claim:
    """A spill file this process holds the lock of, and how far it has been replayed."""

    path: Path
    file: BinaryIO
    own: bool
    offset: int = 0
    torn: int = 0
    done: bool = field(default=False)


def _try_lock(file: BinaryIO) -> bool:
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class SpillFile:
    """This process's spill file (created on the first spill) and the replay of the directory's."""

    def __init__(self, hint: Path, max_bytes: int) -> None:
        name = hint.name or DEFAULT_NAME
        self.directory = hint.parent
        self._stem, self._suffix = (name[: -len(".jsonl")], ".jsonl") if name.endswith(".jsonl") else (name, "")
        self.max_bytes = max_bytes
        self._own: BinaryIO | None = None
        self.path: Path | None = None
        self.bytes = 0  # this process's spill file's size

    def candidates(self) -> list[Path]:
        """Non-empty spill files in the directory (this process's own included)."""
        try:
            found = sorted(self.directory.glob(f"{self._stem}-*{self._suffix}"))
        except OSError:
            return []
        legacy = self.directory / f"{self._stem}{self._suffix}"
        if legacy.is_file():
            found.append(legacy)
        return [path for path in found if _size(path) > 0]

    def append(self, rows: Sequence[UsageRow]) -> int:
        """Append as many rows as fit under max_bytes, in order; how many were written.
        Raises OSError when the file cannot be written at all."""
        if not rows:
            return 0
        own = self._open()
        lines: list[bytes] = []
        room = self.max_bytes - self.bytes
        for row in rows:
            line = orjson.dumps(row.to_json()) + b"\n"
            if len(line) > room:
                break
            room -= len(line)
            lines.append(line)
        if lines:
            data = b"".join(lines)
            os.write(own.fileno(), data)  # O_APPEND: one write, never interleaved with a replay's truncate
            os.fsync(own.fileno())
            self.bytes += len(data)
        return len(lines)

    def claim(self, path: Path) -> Claim | None:
        """The file's lock (non-blocking), or None: its process is alive, or it is gone."""
        if self.path is not None and path == self.path and self._own is not None:
            return Claim(path=path, file=self._own, own=True)
        try:
            file = open(path, "r+b")  # held until finish or release
        except OSError:
            return None
        if not _try_lock(file):
            file.close()
            return None
        return Claim(path=path, file=file, own=False)

    def read(self, claim: Claim, max_rows: int) -> tuple[list[UsageRow], int]:
        """Up to max_rows rows from the claim's offset, and the offset after them (apply it
        with ``advance`` once they are in the database). Unreadable lines are skipped and counted."""
        rows: list[UsageRow] = []
        claim.file.seek(claim.offset)
        offset = claim.offset
        while len(rows) < max_rows:
            line = claim.file.readline()
            if not line:
                break
            offset += len(line)
            try:
                rows.append(UsageRow.from_json(orjson.loads(line)))
            except (orjson.JSONDecodeError, TypeError, ValueError, KeyError, AttributeError, ArithmeticError):
                claim.torn += 1
        if len(rows) < max_rows:
            claim.done = True
        return rows, offset

    def advance(self, claim: Claim, offset: int) -> None:
        claim.offset = offset

    def finish(self, claim: Claim) -> None:
        """The claim's file is replayed: empty this process's own, delete another's."""
        if claim.own:
            claim.file.truncate(0)
            self.bytes = 0
            return
        try:
            claim.path.unlink()
        except FileNotFoundError:
            pass
        claim.file.close()

    def release(self, claim: Claim) -> None:
        """Give a claim up unfinished (another attempt later, or another process)."""
        if not claim.own:
            claim.file.close()

    def close(self) -> None:
        """Release this process's file: removed when empty, else left for the next process."""
        if self._own is None:
            return
        if self.bytes == 0 and self.path is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
        self._own.close()
        self._own = None

    def _open(self) -> BinaryIO:
        if self._own is not None:
            return self._own
        self.directory.mkdir(parents=True, exist_ok=True)
        names = [f"{self._stem}-{os.getpid()}{self._suffix}"]
        names += [f"{self._stem}-{os.getpid()}-{os.urandom(4).hex()}{self._suffix}" for _ in range(3)]
        for name in names:
            path = self.directory / name
            file = open(path, "a+b")  # held (and locked) for the process's lifetime
            if _try_lock(file):
                self._own, self.path = file, path
                self.bytes = file.seek(0, os.SEEK_END)
                if self.bytes:  # a file left by a dead process with this pid: end its torn line
                    file.seek(-1, os.SEEK_END)
                    if file.read(1) != b"\n":
                        os.write(file.fileno(), b"\n")
                        self.bytes += 1
                return file
            file.close()  # the same pid in another container, alive: take another name
        raise OSError(f"no spill file could be locked in {self.directory}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
