"""Fixtures for the deployment tests: the Helm chart rendered by a real helm binary.

These tests need helm, which scripts/verify-deploy installs into .ci-tools/ and passes in
HELM_BIN; the default pytest run leaves this folder out. Run them with:

    scripts/verify-deploy --no-image
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "dify-gateway"
KUBE_VERSION = "1.30.0"
RELEASE = "ci"
NAMESPACE = "dify"

Manifests = list[dict[str, Any]]
Render = Callable[..., Manifests]


@pytest.fixture(scope="session")
def helm() -> str:
    path = os.environ.get("HELM_BIN", "")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            "HELM_BIN is not set to an executable helm: run these tests with scripts/verify-deploy "
            "(it installs helm into .ci-tools/ and sets HELM_BIN)",
            pytrace=False,
        )
    return path


def run_helm_template(helm: str, values: str, *sets: str) -> subprocess.CompletedProcess[str]:
    """``helm template`` with ci/<values>-values.yaml and ``--set`` overrides; the result unchecked."""
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    args += ["-f", str(CHART / "ci" / f"{values}-values.yaml")]
    for item in sets:
        args += ["--set", item]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """render("default" | "all-options", "key=value", ...) -> the manifests, parsed."""

    def _render(values: str, *sets: str) -> Manifests:
        result = run_helm_template(helm, values, *sets)
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return _render


def find(manifests: Manifests, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


def one(manifests: Manifests, kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def gateway_deployment(manifests: Manifests) -> dict[str, Any]:
    """The gateway's Deployment (not the bundled Redis')."""
    return one(manifests, "Deployment", f"{RELEASE}-dify-gateway")


def gateway_container(manifests: Manifests) -> dict[str, Any]:
    containers = gateway_deployment(manifests)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "gateway")


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    """name -> the plain value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
