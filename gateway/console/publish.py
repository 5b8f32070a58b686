"""Worker processes share their console data as files: each writes a snapshot of its own
to ``console-<pid>.json`` in the metrics directory (``$PROMETHEUS_MULTIPROC_DIR``) about
once a second, and whichever worker answers a console request reads them all.

A snapshot is written to a temporary file and renamed over the old one, so readers see
either the old or the new snapshot, never half of one. Files of workers that are gone are
skipped and removed when found.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from typing import Any

import orjson

from gateway.console.aggregate import FRESH_S, live_snapshots

PUBLISH_INTERVAL_S = 1.0
_SNAPSHOT_NAME = re.compile(r"^console-(\d+)\.json$")


def snapshot_path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"console-{pid}.json")


def write_snapshot(directory: str, snapshot: dict[str, Any]) -> None:
    """Replace this worker's snapshot file in one step (a temporary file, then a rename)."""
    pid = int(snapshot["pid"])
    temporary = os.path.join(directory, f".console-{pid}.json.tmp")
    with open(temporary, "wb") as file:
        file.write(orjson.dumps(snapshot))
    os.replace(temporary, snapshot_path(directory, pid))


def remove_snapshot(directory: str, pid: int) -> None:
    with contextlib.suppress(OSError):
        os.remove(snapshot_path(directory, pid))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def read_snapshots(
    directory: str, now: float, alive: Callable[[int], bool] = pid_alive, fresh_s: float = FRESH_S
) -> list[dict[str, Any]]:
    """The fresh snapshots of running workers; files of workers that are gone are removed."""
    found: list[dict[str, Any]] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        matched = _SNAPSHOT_NAME.match(name)
        if matched is None:
            continue
        path = os.path.join(directory, name)
        if not alive(int(matched.group(1))):
            with contextlib.suppress(OSError):
                os.remove(path)
            continue
        snapshot = _load(path)
        if snapshot is not None and snapshot.get("pid") == int(matched.group(1)):
            found.append(snapshot)
    return live_snapshots(found, now, alive, fresh_s)


def _load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as file:
            loaded = orjson.loads(file.read())
    except (OSError, orjson.JSONDecodeError):  # removed meanwhile by its worker
        return None
    return loaded if isinstance(loaded, dict) else None
