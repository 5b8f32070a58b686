"""Invariants of the Helm chart that neither `helm lint` nor the Kubernetes schemas check."""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ServerConfig
from tests.deploy.conftest import (
    CHART,
    KUBE_VERSION,
    ROOT,
    Manifests,
    Render,
    container_env,
    find,
    gateway_container,
    gateway_deployment,
    one,
    run_helm_template,
)

VALUE_SETS = ["default", "all-options"]
PROBES_SOURCE = (ROOT / "gateway" / "probes.py").read_text()


def served_paths() -> set[str]:
    """The plain (non-inner-API) paths the gateway serves: the keys of gateway/probes.py's path table."""
    return set(re.findall(r'"(/[a-z]+)": self\.', PROBES_SOURCE))


def gateway_config(manifests: Manifests) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(one(manifests, "ConfigMap")["data"]["gateway.yaml"])
    return config


def test_the_gateway_serves_the_probe_routes() -> None:
    # Guards the regex above: if probes.py changes shape, the probe tests must not pass vacuously.
    assert {"/healthz", "/readyz", "/metrics"} <= served_paths()


@pytest.mark.parametrize("values", VALUE_SETS)
def test_probes_point_at_routes_that_exist(render: Render, values: str) -> None:
    container = gateway_container(render(values))
    port_names = {p["name"] for p in container["ports"]}
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
    for kind, probe in probes.items():
        assert probe["path"] in served_paths(), f"{kind} probe path {probe['path']} is not served by the gateway"
        assert probe["port"] in port_names, f"{kind} probe port {probe['port']} is not a container port"
    # Readiness must be the route that turns 503 while the models load and while draining.
    assert probes["readiness"]["path"] == "/readyz"
    assert probes["liveness"]["path"] == "/healthz"


@pytest.mark.parametrize(
    ("values", "sets"),
    [
        ("default", ()),
        ("all-options", ()),
        ("default", ("config.server.drain_timeout_s=600", "config.server.drain_grace_s=30")),
        ("default", ("config.server.drain_timeout_s=0", "lifecycle.preStopSleepSeconds=10")),
    ],
)
def test_grace_period_outlasts_the_drain(render: Render, values: str, sets: tuple[str, ...]) -> None:
    manifests = render(values, *sets)
    server = {**ServerConfig().model_dump(), **(gateway_config(manifests).get("server") or {})}
    container = gateway_container(manifests)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])
    drain = int(pre_stop[1]) + math.ceil(server["drain_grace_s"]) + math.ceil(server["drain_timeout_s"])
    grace = gateway_deployment(manifests)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain, f"terminationGracePeriodSeconds {grace} does not exceed preStop + drain ({drain})"


@pytest.mark.parametrize("values", VALUE_SETS)
def test_service_targets_the_container_port(render: Render, values: str) -> None:
    manifests = render(values)
    container = gateway_container(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = one(manifests, "Service", "ci-dify-gateway")
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert ports.get(target, target) in ports.values(), f"Service targets {target}, not a container port"
    # The port the container declares is the one the gateway listens on.
    assert str(ports["http"]) == container_env(container)["DIFY_GATEWAY_PORT"]
    assert (
        service["spec"]["selector"].items()
        <= gateway_deployment(manifests)["spec"]["template"]["metadata"]["labels"].items()
    )


def test_service_monitor_scrapes_the_metrics_port(render: Render) -> None:
    manifests = render("all-options")
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service", "ci-dify-gateway")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics" and "/metrics" in served_paths()
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert endpoint["port"] in by_name, f"ServiceMonitor port {endpoint['port']} is not a Service port"
    container_ports = {p["name"]: p["containerPort"] for p in gateway_container(manifests)["ports"]}
    assert by_name[endpoint["port"]]["targetPort"] in container_ports
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert find(render("default"), "ServiceMonitor") == []


@pytest.mark.parametrize("values", VALUE_SETS)
def test_rendered_config_passes_check_config(render: Render, values: str, tmp_path: Path) -> None:
    manifests = render(values)
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(one(manifests, "ConfigMap")["data"]["gateway.yaml"])
    # Only the variables the Deployment sets: every os.environ/NAME in the config must be one.
    env = {name: f"placeholder-{name}" for name in container_env(gateway_container(manifests))}
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
    assert result.returncode == 0, f"check-config rejected the rendered config:\n{result.stderr}"
    assert '"routes"' in result.stdout


@pytest.mark.parametrize("values", VALUE_SETS)
def test_pods_run_as_non_root_on_a_read_only_root(render: Render, values: str) -> None:
    for deployment in find(render(values), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert security["capabilities"]["drop"] == ["ALL"], container["name"]
    pod = gateway_deployment(render("default"))["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "/tmp must be writable: an emptyDir"


def test_secret_values_never_reach_the_config_map(render: Render) -> None:
    secrets = {
        "innerApiKey.value": "inner-key-s3cr3t-0001",
        "secretEnv.OPENAI_API_KEY": "sk-s3cr3t-0002",
        "redisUrl": "redis://:redis-s3cr3t-0003@redis.example:6379/0",
    }
    manifests = render("default", *(f"{k}={v}" for k, v in secrets.items()))
    bundled = render("default", "redis.enabled=true", "redis.password=bundled-s3cr3t-0004")
    secret_values = [*secrets.values(), "bundled-s3cr3t-0004"]
    for manifest in [*manifests, *bundled]:
        if manifest["kind"] == "Secret":
            continue
        text = yaml.safe_dump(manifest)
        for value in secret_values:
            assert value not in text, (
                f"a secret value is rendered into {manifest['kind']}/{manifest['metadata']['name']}"
            )
    # ... and they are in the Secret, as the Deployment's references expect.
    data = one(manifests, "Secret")["data"]
    stored = {base64.b64decode(v).decode() for v in data.values()}
    assert set(secrets.values()) <= stored
    config = gateway_config(manifests)
    assert config["cache"]["redis_url"] == "os.environ/REDIS_URL"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("replicaCount=two",), "replicaCount"),
        (("image.pullPolicy=Sometimes",), "pullPolicy"),
        (("config.server.port=9000",), "config.server.port"),
        (("config.server.drain_timeout_s=-1",), "drain_timeout_s"),
        (("podAntiAffinity=maybe",), "podAntiAffinity"),
        (("configReload=sometimes",), "configReload"),
        (("containerPort=80",), "containerPort"),
        (("serviceMonitor.interval=often",), "interval"),
        (("unknownTopLevelKey=1",), "unknownTopLevelKey"),
        (("innerApiKey.value=",), "innerApiKey"),
    ],
)
def test_bad_values_fail_at_install(helm: str, sets: tuple[str, ...], message: str) -> None:
    result = run_helm_template(helm, "default", *sets)
    assert result.returncode != 0, f"helm template accepted {sets}"
    assert message in result.stderr, result.stderr


def test_network_policy_only_when_enabled(render: Render) -> None:
    assert find(render("default"), "NetworkPolicy") == []
    manifests = render("all-options")
    policy = one(manifests, "NetworkPolicy", "ci-dify-gateway")
    pod_labels = gateway_deployment(manifests)["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    daemon, prometheus = policy["spec"]["ingress"]
    assert daemon["from"] == [
        {
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "plugin-daemon"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dify"}},
        }
    ]
    assert daemon["ports"] == prometheus["ports"] == [{"port": "http", "protocol": "TCP"}]
    # The bundled Redis takes connections from the gateway's pods only.
    redis_policy = one(manifests, "NetworkPolicy", "ci-dify-gateway-redis")
    assert redis_policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": policy["spec"]["podSelector"]["matchLabels"]}}
    ]


def test_autoscaler_owns_the_replica_count(render: Render) -> None:
    manifests = render("all-options")
    assert "replicas" not in gateway_deployment(manifests)["spec"]
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == gateway_deployment(manifests)["metadata"]["name"]
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource", "Pods"}
    assert gateway_deployment(render("default"))["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("values", "secret_line"),
    [("default", "Secret ci-dify-gateway, key inner-api-key"), ("all-options", "Secret dify-inner-api-key, key key")],
)
def test_install_notes_tell_what_to_set_in_dify(helm: str, tmp_path: Path, values: str, secret_line: str) -> None:
    # helm template leaves NOTES.txt out (helm install needs a cluster), so render it through
    # tpl inside a copy of the chart.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    args = [helm, "template", "ci", str(chart), "--namespace", "dify", "--kube-version", KUBE_VERSION]
    args += ["-f", str(CHART / "ci" / f"{values}-values.yaml"), "--show-only", "templates/zz-notes.yaml"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    notes = yaml.safe_load(result.stdout)["data"]["notes"]
    assert "DIFY_INNER_API_URL=http://ci-dify-gateway.dify.svc:8080" in notes
    assert secret_line in notes


def test_config_changes_reload_live_by_default_and_roll_the_pods_when_asked(render: Render) -> None:
    live = render("default")
    annotations = gateway_deployment(live)["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" not in annotations  # a ConfigMap change must not restart the pods ...
    assert "checksum/secret" in annotations  # ... but the secrets come in as environment variables
    assert gateway_config(live)["server"]["watch_config"] is True  # ... each pod applies it itself
    rollout = render("default", "configReload=rollout")
    annotations = gateway_deployment(rollout)["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" in annotations
    assert "watch_config" not in gateway_config(rollout).get("server", {})
    # An explicit setting wins over the chart's.
    assert gateway_config(render("default", "config.server.watch_config=false"))["server"]["watch_config"] is False
