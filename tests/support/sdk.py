"""The real dify-plugin SDK, in a Python 3.12 virtualenv of its own, for contract tests.

The SDK (0.10.2) needs Python >= 3.12 and monkey-patches the whole process with gevent on
import, so it never runs inside the test process: the tests run ``tests/sdk/driver.py``
with the SDK's interpreter and read the JSON it prints.

The interpreter is the first of: ``$DIFY_SDK_PYTHON``; ``python3.12``/``python3.13`` on PATH;
pyenv's installed 3.12/3.13 versions; ``uv python find 3.12``. The virtualenv lives in
``.venv-sdk`` at the repository root (or ``$DIFY_SDK_VENV``) and is created once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SDK_REQUIREMENT = "dify-plugin==0.10.2"
# The environment pip runs in (conftest stores the one from before it blocks proxies).
INSTALL_ENV: dict[str, str] | None = None
ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "sdk" / "driver.py"
MISSING = (
    "The contract tests with the real dify-plugin SDK need Python 3.12 or newer, and none was found. "
    "Install one (for example `pyenv install 3.12`, `uv python install 3.12` or your system's python3.12 "
    "package) or point DIFY_SDK_PYTHON at its interpreter."
)


def _version_ok(python: str) -> bool:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "True"


def _candidates() -> list[str]:
    found: list[str] = []
    if os.environ.get("DIFY_SDK_PYTHON"):
        found.append(os.environ["DIFY_SDK_PYTHON"])
    for name in ("python3.12", "python3.13"):
        path = shutil.which(name)
        if path:
            found.append(path)
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        versions = sorted(Path(root, "versions").glob("3.1[23]*")) if root else []
        found += [str(v / "bin" / "python3") for v in versions]
    uv = shutil.which("uv")
    if uv:
        out = subprocess.run([uv, "python", "find", "3.12"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            found.append(out.stdout.strip())
    return found


def find_python312() -> str:
    for candidate in _candidates():
        if _version_ok(candidate):
            return candidate
    raise RuntimeError(MISSING)


def sdk_python() -> str:
    """The interpreter of a virtualenv with the SDK installed (created on first use)."""
    venv = Path(os.environ.get("DIFY_SDK_VENV", ROOT / ".venv-sdk"))
    python = venv / "bin" / "python"
    stamp = venv / f".installed-{SDK_REQUIREMENT}"
    if stamp.exists() and python.exists():
        return str(python)
    if not python.exists():
        subprocess.run([find_python312(), "-m", "venv", str(venv)], check=True)
    print(f"installing {SDK_REQUIREMENT} into {venv} ...", file=sys.stderr)
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", SDK_REQUIREMENT],
        capture_output=True,
        text=True,
        env=INSTALL_ENV,
    )
    if pip.returncode != 0:
        raise RuntimeError(f"installing {SDK_REQUIREMENT} failed:\n{pip.stderr[-3000:]}")
    stamp.touch()
    return str(python)


def run_scenarios(python: str, url: str, session_id: str, names: list[str], timeout_s: float = 240) -> dict[str, Any]:
    """What the SDK returned (or raised) for each scenario of tests/sdk/driver.py."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    out = subprocess.run(
        [python, str(DRIVER), url, session_id, *names], capture_output=True, text=True, timeout=timeout_s, env=env
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"the SDK driver failed ({out.returncode}):\n{out.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


if __name__ == "__main__":
    print(f"==> dify-plugin SDK for the contract tests: {sdk_python()}")
