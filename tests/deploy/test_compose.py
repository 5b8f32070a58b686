"""The compose override for Dify's docker-compose.yaml and its sample gateway config.

No Docker here: the files are checked as YAML against what Dify's compose file and the
gateway expect.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import ROOT

COMPOSE = ROOT / "deploy" / "docker-compose.gateway.yaml"
SAMPLE_CONFIG = ROOT / "deploy" / "gateway.yaml"


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def test_compose_adds_the_gateway_beside_dify() -> None:
    services = compose()["services"]
    # Only the gateway and the one service of Dify's it changes.
    assert set(services) == {"dify-gateway", "plugin_daemon"}
    gateway = services["dify-gateway"]
    assert gateway["image"].startswith("${DIFY_GATEWAY_IMAGE:-")
    assert gateway["build"]["context"].startswith("${DIFY_GATEWAY_DIR:-")
    env = gateway["environment"]
    # The same variable Dify's compose gives the plugin daemon as DIFY_INNER_API_KEY.
    assert env["DIFY_INNER_API_KEY"].startswith("${PLUGIN_DIFY_INNER_API_KEY:")
    # Dify's Redis service and its default password.
    assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:-difyai123456\}@redis:6379/\d+", env["REDIS_URL"])
    assert set(gateway["depends_on"]) == {"api", "redis"}
    assert gateway["read_only"] is True and gateway["tmpfs"] == ["/tmp"]


def test_plugin_daemon_points_at_the_gateway_port() -> None:
    services = compose()["services"]
    port = services["dify-gateway"]["environment"]["DIFY_GATEWAY_PORT"]
    assert services["plugin_daemon"]["environment"] == {"DIFY_INNER_API_URL": f"http://dify-gateway:{port}"}


def test_compose_mounts_the_config_it_names() -> None:
    gateway = compose()["services"]["dify-gateway"]
    mounts = {}
    for volume in gateway["volumes"]:
        source, target, mode = volume.rsplit(":", 2)
        mounts[target] = (source, mode)
    source, mode = mounts[gateway["environment"]["DIFY_GATEWAY_CONFIG"]]
    assert mode == "ro"
    assert source.endswith("/deploy/gateway.yaml}")


def test_sample_config_passes_check_config() -> None:
    config = yaml.safe_load(SAMPLE_CONFIG.read_text())
    assert config["dify"]["api_url"] == "http://api:5001"
    assert config["cache"]["redis_url"] == "os.environ/REDIS_URL"
    # The variables the compose file sets: the config's os.environ/NAME references must be among them.
    env = dict.fromkeys(compose()["services"]["dify-gateway"]["environment"], "placeholder")
    env["PATH"] = os.environ["PATH"]
    cli = Path(sys.executable).with_name("dify-gateway")
    result = subprocess.run(
        [str(cli), "check-config", "--config", str(SAMPLE_CONFIG)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
