"""The soak tool (scripts/soak, bench/soak.py), run as an operator runs it, briefly: against a real
gateway process and the fake upstream with faults injected, a configuration that absorbs them
passes and writes its JSON and PNG; one that cannot absorb them (no retries, no fallback) fails.
Both runs go at once, each in its own subprocess with its own servers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _start(out: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bench.soak", "--out", str(out), "--interval", "5", "--rate", "20", *args]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"the soak did not end within 180 s:\n{output[-3000:]}") from None
    return process.returncode, output


def _result(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "soak.json").read_text())
    return data


def test_soak_passes_with_absorbed_faults_and_fails_without_retries(tmp_path: Path) -> None:
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    # A reload every 10 s: three of them, each to be counted as applied by the gateway.
    good = _start(good_dir, "--seconds", "32", "--reload-every", "10", "--fault-rate", "0.05")
    bad = _start(bad_dir, "--seconds", "15", "--no-reload", "--fault-rate", "0.2", "--retries", "0", "--no-fallback")
    good_status, good_output = _finish(good)
    bad_status, bad_output = _finish(bad)

    assert good_status == 0, good_output[-3000:]
    result = _result(good_dir)
    verdict = result["verdict"]
    assert verdict["result"] == "PASS" and verdict["requests_failed"] == 0
    assert verdict["faults_injected"] > 0, "no fault was injected: the run proves nothing about them"
    assert verdict["reloads_sent"] == 3 and verdict["reloads_counted"]["applied"] == 3
    samples = result["samples"]
    assert len(samples) >= 6
    assert all(s["rss_mb"] and s["fds_own"] and s["fds"] > s["fds_own"] for s in samples)
    assert {"llm", "llm-stream", "embed", "embed-cached", "rerank", "tts", "speech2text"} <= set(samples[-1]["types"])
    answered = {name for sample in samples for name, v in sample["types"].items() if v["ok"] > 0}
    assert answered == set(samples[-1]["types"])  # every type was answered (speech-to-text: 1 in 5 s here)
    assert (good_dir / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PASS" in good_output

    assert bad_status == 1, bad_output[-3000:]
    bad_verdict = _result(bad_dir)["verdict"]
    assert bad_verdict["result"] == "FAIL" and bad_verdict["requests_failed"] > 0
    assert any("should succeed" in reason for reason in bad_verdict["reasons"])
    assert (bad_dir / "soak.png").is_file()
    assert "FAIL:" in bad_output
