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


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of a service's short-syntax volumes (mode "rw" when not given)."""
    found = {}
    for volume in service["volumes"]:
        parts = volume.rsplit(":", 2)
        if len(parts) == 2 or parts[2] not in ("ro", "rw"):
            parts = [*volume.rsplit(":", 1), "rw"]
        found[parts[1]] = (parts[0], parts[2])
    return found


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
    source, mode = mounts(gateway)[gateway["environment"]["DIFY_GATEWAY_CONFIG"]]
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


def image_data_dir() -> str:
    found = re.search(r"DIFY_GATEWAY_DATA_DIR=(\S+)", (ROOT / "Dockerfile").read_text())
    assert found, "the Dockerfile sets no DIFY_GATEWAY_DATA_DIR"
    return found[1]


def test_the_ledger_survives_restarts_on_a_named_volume() -> None:
    document = compose()
    gateway = document["services"]["dify-gateway"]
    source, mode = mounts(gateway)[image_data_dir()]
    # A named volume (declared at the top level), not a path: Docker fills it from the image's
    # directory, owned by the gateway's user, so it is writable on the read-only root.
    assert mode == "rw" and "/" not in source
    assert source in document["volumes"]
    assert gateway["read_only"] is True


def uncommented_examples(text: str, first: str) -> str:
    """The commented YAML from the line ``# <first>`` on, uncommented (prose comments dropped)."""
    lines = text[text.index(f"# {first}") :].splitlines()
    return "\n".join(line[2:] for line in lines if re.match(r"# ([a-z_]+:|  )", line)) + "\n"


def commented_database_url() -> str:
    found = re.search(r"^ *# DATABASE_URL: (\S+)$", COMPOSE.read_text(), re.M)
    assert found, "no commented DATABASE_URL in the compose override"
    return found[1]


def test_the_postgresql_alternative_points_at_difys_database() -> None:
    url = commented_database_url()
    assert url.startswith("postgresql://${DB_USERNAME:-postgres}:${DB_PASSWORD:-difyai123456}@${DB_HOST:-")
    assert url.endswith("/dify_gateway")  # its own database beside Dify's, created as the comment says
    assert "CREATE DATABASE dify_gateway" in COMPOSE.read_text()


def test_commented_examples_pass_check_config(tmp_path: Path) -> None:
    text = SAMPLE_CONFIG.read_text()
    examples = uncommented_examples(text, "ledger:")
    blocks = yaml.safe_load(examples)
    assert set(blocks) == {"ledger", "budgets", "rate_limits"}
    assert blocks["ledger"]["database_url"] == "os.environ/DATABASE_URL"
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(text + examples)
    env = dict.fromkeys(compose()["services"]["dify-gateway"]["environment"], "placeholder")
    env["DATABASE_URL"] = "postgresql://postgres:difyai123456@db_postgres:5432/dify_gateway"
    env["PATH"] = os.environ["PATH"]
    cli = Path(sys.executable).with_name("dify-gateway")
    result = subprocess.run(
        [str(cli), "check-config", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
