"""Every fuzz target, each in its own child process (``python -m tests.fuzz.<target>``).

A target fails when an input crashes or hangs its worker, or an engine answers wrongly; the
child then shrinks the input and prints it, and this test shows it. The example counts are the
targets' defaults (a few minutes in all); ``DIFY_GATEWAY_FUZZ_EXAMPLES=10000`` (or
``scripts/fuzz``) runs many more.
"""

from __future__ import annotations

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
