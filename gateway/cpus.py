"""How many CPUs this process may really use: its affinity, capped by a cgroup CPU quota.

``os.cpu_count()`` reports the host's cores, also inside a container limited to one of
them; a worker per host core there would only contend for the quota.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# More workers than this only multiply the memory (each loads the embedded models and
# keeps its own cache) on big hosts; ask for more explicitly.
AUTO_WORKERS_CAP = 8


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def auto_workers(cgroup_root: Path = CGROUP_ROOT) -> int:
    return min(available_cpus(cgroup_root), AUTO_WORKERS_CAP)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time the cgroup allows (``cpu.max`` in v2, CFS quota in v1); None: no limit."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or "100000")
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us
