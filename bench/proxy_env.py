"""The LiteLLM proxy's own virtualenv: created and filled on first use.

The proxy pins dependencies that differ from the gateway's (FastAPI, its own uvicorn, ...),
so it never shares `.venv`. The venv lives under `.artifacts/` (git-ignored) unless
`DIFY_GATEWAY_BENCH_PROXY_VENV` names another directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PROXY_SPEC = "litellm[proxy]==1.106.2"
ROOT = Path(__file__).resolve().parents[1]
VENV_ENV = "DIFY_GATEWAY_BENCH_PROXY_VENV"


class ProxyEnvError(RuntimeError):
    """The proxy's venv could not be made; the message says how to fix it."""


def venv_dir() -> Path:
    return Path(os.environ.get(VENV_ENV) or ROOT / ".artifacts" / "bench" / "venv-litellm-proxy")


def proxy_command() -> Path:
    return venv_dir() / "bin" / "litellm"


def ensure_proxy_env(log: Callable[[str], None]) -> Path:
    """The `litellm` executable of the proxy venv, installing it first when needed."""
    venv = venv_dir()
    stamp = venv / f".installed-{PROXY_SPEC.replace('[', '-').replace(']', '').replace('==', '-')}"
    if stamp.exists() and proxy_command().exists():
        return proxy_command()
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating the LiteLLM proxy's virtualenv in {venv} ...")
        _run([sys.executable, "-m", "venv", str(venv)], venv)
    log(f"installing {PROXY_SPEC} into {venv} (first run only; a few minutes) ...")
    _run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", PROXY_SPEC], venv
    )
    stamp.touch()
    return proxy_command()


def _run(command: list[str], venv: Path) -> None:
    try:
        subprocess.run(command, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ProxyEnvError(
            f"could not prepare the LiteLLM proxy's virtualenv ({exc}).\n"
            f"  Fix: check that PyPI is reachable (pip config, HTTPS_PROXY), then run\n"
            f"    rm -rf {venv} && {sys.executable} -m venv {venv} && {venv}/bin/pip install '{PROXY_SPEC}'\n"
            f"  or point {VENV_ENV} at a virtualenv that has it, or run with --skip-proxy."
        ) from exc
