"""Every fuzz target, each in its own child process (``python -m tests.fuzz.<target>``).

A target fails when an input crashes or hangs its worker, or an engine answers wrongly; the
child then shrinks the input and prints it, and this test shows it. The example counts are the
targets' defaults (a few minutes in all); ``DIFY_GATEWAY_FUZZ_EXAMPLES=10000`` (or
``scripts/fuzz``) runs many more.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.fuzz.harness import EXAMPLES_ENV, ROOT

TARGETS = [
    "e5_embed",
    "e5_rerank",
    "espeak_synth",
    "miniaudio_decode",
    "av_decode",
    "whisper_transcribe",
    "audio_sniff",
    "llm_generate",
]


def _deadline_s() -> float:
    # Generous: the machine running the suite may be small and busy. Scaled for big runs.
    examples = int(os.environ.get(EXAMPLES_ENV) or 0)
    return 900.0 + examples * 2.0


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target(target: str) -> None:
    try:
        result = subprocess.run(
            [sys.executable, "-m", f"tests.fuzz.{target}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=_deadline_s(),
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"{target} hung past {_deadline_s():g} s:\n{output[-3000:]}")
    if result.returncode < 0:
        pytest.fail(f"{target} was killed by {signal.Signals(-result.returncode).name}:\n{result.stderr[-3000:]}")
    assert result.returncode == 0, f"{target} found a failing input:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert '"examples"' in result.stdout, result.stdout


def test_the_harness_shrinks_a_crash_to_the_minimal_input() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.selftest_crash"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "killed by SIGABRT" in result.stdout
    assert "selftest_crash: minimal failing input: 7\n" in result.stdout


def test_the_harness_counts_crashes_and_hangs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.selftest_crash", "--count", "--examples", "30"],
        cwd=ROOT,
        env={**os.environ, "SELFTEST_HANG": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["examples"] == 31 and summary["crashes"] > 0 and summary["hangs"] == 1  # 30 and the explicit 3
    restarts = summary["crashes"] + summary["hangs"]  # each is followed by a fresh worker, when one is needed
    assert summary["worker_starts"] in (restarts, restarts + 1)
