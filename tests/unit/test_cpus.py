"""Worker count from the CPUs really available: affinity and cgroup quotas (v1 and v2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cpus import AUTO_WORKERS_CAP, auto_workers, available_cpus, cgroup_cpu_quota


def _v2(root: Path, text: str) -> Path:
    (root / "cpu.max").write_text(text)
    return root


def _v1(root: Path, quota: str, period: str) -> Path:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(quota)
    (root / "cpu" / "cpu.cfs_period_us").write_text(period)
    return root


@pytest.mark.parametrize(
    ("text", "quota"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("50000 100000", 0.5), ("400000 100000", 4.0), ("junk", None)],
)
def test_cgroup_v2_quota(tmp_path: Path, text: str, quota: float | None) -> None:
    assert cgroup_cpu_quota(_v2(tmp_path, text)) == quota


@pytest.mark.parametrize(
    ("quota_us", "period_us", "quota"), [("-1", "100000", None), ("200000", "100000", 2.0), ("25000", "50000", 0.5)]
)
def test_cgroup_v1_quota(tmp_path: Path, quota_us: str, period_us: str, quota: float | None) -> None:
    assert cgroup_cpu_quota(_v1(tmp_path, quota_us, period_us)) == quota


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None


def test_available_cpus_is_affinity_capped_by_the_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == affinity
    assert available_cpus(_v2(tmp_path, "150000 100000")) == min(affinity, 2)  # a part-CPU rounds up
    assert available_cpus(_v2(tmp_path, "10000 100000")) == 1  # never below one
    assert auto_workers(_v2(tmp_path, "6400000 100000")) == min(affinity, AUTO_WORKERS_CAP)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_worker_counts_are_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--workers", value])
    assert exit_.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_bad_worker_count_in_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DIFY_GATEWAY_WORKERS", "lots")
    monkeypatch.setenv("DIFY_INNER_API_KEY", "k")
    with pytest.raises(SystemExit) as exit_:
        main(["serve"])
    assert exit_.value.code == 2
    assert "DIFY_GATEWAY_WORKERS must be a whole number" in capsys.readouterr().err
