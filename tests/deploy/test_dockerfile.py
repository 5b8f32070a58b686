"""The Dockerfile agrees with the chart and the gateway (hadolint checks the rest)."""

from __future__ import annotations

import re

import yaml

from tests.deploy.conftest import CHART, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def directive(name: str) -> str:
    """The last NAME instruction of the final stage, continuation lines joined."""
    found = re.findall(rf"^{name} ((?:.*\\\n)*.*)$", DOCKERFILE, re.M)
    assert found, f"no {name} in the Dockerfile"
    return str(found[-1])


def test_port_matches_the_chart() -> None:
    assert directive("EXPOSE") == str(VALUES["containerPort"])
    assert f"DIFY_GATEWAY_PORT={VALUES['containerPort']}" in directive("ENV")


def test_runs_as_the_chart_user() -> None:
    # Numeric, so Kubernetes' runAsNonRoot can verify it; equal to the chart's runAsUser.
    user, group = directive("USER").split(":")
    assert int(user) == VALUES["podSecurityContext"]["runAsUser"] != 0
    assert int(group) == VALUES["podSecurityContext"]["runAsGroup"]


def test_signals_and_health() -> None:
    assert "/readyz" in directive("HEALTHCHECK")
    assert directive("STOPSIGNAL") == "SIGTERM"
    # Exec form: no shell in between, so SIGTERM reaches the server and starts its drain.
    assert directive("ENTRYPOINT") == '["dify-gateway"]'
    assert directive("CMD") == '["serve"]'
    assert "LITELLM_LOCAL_MODEL_COST_MAP=True" in directive("ENV")


def test_data_directory_is_a_volume_the_runtime_user_owns() -> None:
    # The default SQLite ledger lives there: writable on a read-only root once a volume is mounted.
    data_dir = re.search(r"DIFY_GATEWAY_DATA_DIR=(\S+)", directive("ENV"))
    assert data_dir, "the final stage sets no DIFY_GATEWAY_DATA_DIR"
    assert directive("VOLUME") == f'["{data_dir[1]}"]'
    user = directive("USER").split(":")[0]
    assert re.search(rf"install -d -o {user} -g {user} -m 07[0-7]0 {re.escape(data_dir[1])}", directive("RUN"))
