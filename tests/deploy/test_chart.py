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


def notes(helm: str, tmp_path: Path, values: str, *sets: str) -> str:
    """NOTES.txt as `helm install` would print it (helm template leaves it out, since install needs a
    cluster): rendered through tpl inside a copy of the chart."""
    chart = tmp_path / "chart"
    if not chart.exists():
        shutil.copytree(CHART, chart)
        (chart / "templates" / "NOTES.txt").rename(chart / "notes.txt")
        (chart / "templates" / "zz-notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
            'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
        )
    args = [helm, "template", "ci", str(chart), "--namespace", "dify", "--kube-version", KUBE_VERSION]
    args += ["-f", str(CHART / "ci" / f"{values}-values.yaml"), "--show-only", "templates/zz-notes.yaml"]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    text: str = yaml.safe_load(result.stdout)["data"]["notes"]
    return text


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
    if "DATABASE_URL" in env:  # the gateway checks the scheme of the resolved URL
        env["DATABASE_URL"] = "postgresql://placeholder@ledger-db:5432/usage"
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
        "ledger.databaseUrl": "postgresql://gw:ledger-s3cr3t-0005@pg.example:5432/usage",
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
    assert config["ledger"]["database_url"] == "os.environ/DATABASE_URL"


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
        (("ledger.enabled=maybe",), "ledger.enabled"),
        (("ledger.databaseUrl=mysql://u:p@db/usage",), "ledger.databaseUrl"),
        (("ledger.databaseUrlSecret.name=Not_A_Name",), "ledger.databaseUrlSecret.name"),
        (("ledger.persistence.enabled=yes",), "ledger.persistence.enabled"),
        (("ledger.persistence.size=lots",), "ledger.persistence.size"),
        (("ledger.persistence.accessModes={ReadOnlyMany}",), "accessModes"),
        (("ledger.dataSizeLimit=big",), "ledger.dataSizeLimit"),
        (("ledger.path=/data",), "path"),
        # the URL and the switch have one place: ledger.*, not config.ledger
        (("config.ledger.database_url=sqlite:////tmp/usage.db",), "use ledger.databaseUrl or ledger.databaseUrlSecret"),
        (("config.ledger.enabled=false",), "use ledger.enabled"),
        (("config.ledger.retention_days=-1",), "retention_days"),
        (("config.budgets.on_redis_error=sometimes",), "on_redis_error"),
        (("config.budgets.default[0].period=week", "config.budgets.default[0].usd=5"), "period"),
        (("config.rate_limits.default.rpm=0",), "rpm"),
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
    text = notes(helm, tmp_path, values)
    assert "DIFY_INNER_API_URL=http://ci-dify-gateway.dify.svc:8080" in text
    assert secret_line in text


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


# --- the usage ledger ------------------------------------------------------------------------

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def pod_volumes(manifests: Manifests) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The gateway container's mount path -> volume name, and volume name -> volume."""
    pod = gateway_deployment(manifests)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in gateway_container(manifests)["volumeMounts"]}
    return mounts, {v["name"]: v for v in pod["volumes"]}


def data_volume(manifests: Manifests) -> dict[str, Any]:
    """The volume mounted at the data directory the container is told about."""
    data_dir = container_env(gateway_container(manifests))["DIFY_GATEWAY_DATA_DIR"]
    mounts, volumes = pod_volumes(manifests)
    assert data_dir in mounts, f"nothing is mounted at the data directory {data_dir}"
    return volumes[mounts[data_dir]]


def strategy(manifests: Manifests) -> str:
    kind: str = gateway_deployment(manifests)["spec"]["strategy"]["type"]
    return kind


def test_the_chart_uses_the_image_data_directory(render: Render) -> None:
    # The image declares the directory as a VOLUME and owns it; the chart mounts the same path.
    image_dir = re.search(r"DIFY_GATEWAY_DATA_DIR=(\S+)", DOCKERFILE)
    assert image_dir is not None, "the Dockerfile sets no DIFY_GATEWAY_DATA_DIR"
    assert f'VOLUME ["{image_dir[1]}"]' in DOCKERFILE
    assert re.search(rf"install -d -o 10001 -g 10001 .*{re.escape(image_dir[1])}", DOCKERFILE)
    env = container_env(gateway_container(render("default")))
    assert env["DIFY_GATEWAY_DATA_DIR"] == image_dir[1]


def test_ledger_defaults_to_sqlite_in_an_emptydir(render: Render) -> None:
    manifests = render("default")
    container = gateway_container(manifests)
    env = container_env(container)
    assert "DATABASE_URL" not in env
    volume = data_volume(manifests)
    assert volume["emptyDir"]["sizeLimit"] == "2Gi"
    # The root filesystem stays read-only: the data directory is writable because it is a volume.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert env["DIFY_GATEWAY_DATA_DIR"] not in ("/", "/tmp")
    # No URL: the gateway's own default (SQLite at $DIFY_GATEWAY_DATA_DIR/usage.db) applies.
    assert "ledger" not in gateway_config(manifests)
    assert find(manifests, "PersistentVolumeClaim") == []
    assert strategy(manifests) == "RollingUpdate"
    assert "database-url" not in one(manifests, "Secret")["data"]


def test_ledger_database_url_goes_through_the_chart_secret(render: Render) -> None:
    url = "postgresql://gateway:pa%24%24-0006@pg.example:5432/usage"
    manifests = render("default", f"ledger.databaseUrl={url}", "config.ledger.retention_days=30")
    assert base64.b64decode(one(manifests, "Secret")["data"]["database-url"]).decode() == url
    env = container_env(gateway_container(manifests))
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "ci-dify-gateway", "key": "database-url"}}
    config_text = one(manifests, "ConfigMap")["data"]["gateway.yaml"]
    assert "pg.example" not in config_text and "pa%24%24-0006" not in config_text
    # The chart's reference is merged with the ledger settings given under config.
    assert gateway_config(manifests)["ledger"] == {"database_url": "os.environ/DATABASE_URL", "retention_days": 30}
    # Spill files still need a writable data directory while PostgreSQL is away.
    assert "emptyDir" in data_volume(manifests)


def test_ledger_database_url_from_a_secret_you_manage(render: Render) -> None:
    manifests = render(
        "default",
        "ledger.databaseUrlSecret.name=usage-db",
        "ledger.databaseUrlSecret.key=uri",
        # the Secret you name wins: the URL given as a value is not stored
        "ledger.databaseUrl=postgresql://gateway:unused-0007@pg.example/usage",
    )
    env = container_env(gateway_container(manifests))
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "usage-db", "key": "uri"}}
    assert "database-url" not in one(manifests, "Secret")["data"]
    assert all("unused-0007" not in yaml.safe_dump(m) for m in manifests)
    assert gateway_config(manifests)["ledger"]["database_url"] == "os.environ/DATABASE_URL"


def test_ledger_on_a_persistent_volume(render: Render) -> None:
    manifests = render(
        "default",
        "replicaCount=1",
        "ledger.persistence.enabled=true",
        "ledger.persistence.size=20Gi",
        "ledger.persistence.storageClass=fast-ssd",
    )
    claim = one(manifests, "PersistentVolumeClaim", "ci-dify-gateway-data")
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast-ssd",
        "resources": {"requests": {"storage": "20Gi"}},
    }
    assert data_volume(manifests) == {"name": "data", "persistentVolumeClaim": {"claimName": "ci-dify-gateway-data"}}
    # A ReadWriteOnce volume: a rolling update would wait forever for the old pod's volume.
    assert strategy(manifests) == "Recreate"
    assert "rollingUpdate" not in gateway_deployment(manifests)["spec"]["strategy"]


def test_ledger_on_an_existing_claim_or_a_shared_volume(render: Render) -> None:
    existing = render("default", "ledger.persistence.enabled=true", "ledger.persistence.existingClaim=my-usage")
    assert find(existing, "PersistentVolumeClaim") == []
    assert data_volume(existing)["persistentVolumeClaim"] == {"claimName": "my-usage"}
    assert strategy(existing) == "Recreate"
    no_class = render("default", "ledger.persistence.enabled=true", "ledger.persistence.storageClass=-")
    assert one(no_class, "PersistentVolumeClaim")["spec"]["storageClassName"] == ""
    default_class = render("default", "ledger.persistence.enabled=true")
    assert "storageClassName" not in one(default_class, "PersistentVolumeClaim")["spec"]
    # all-options: PostgreSQL, and the spill files on a ReadWriteMany volume every replica mounts.
    shared = render("all-options")
    assert one(shared, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert strategy(shared) == "RollingUpdate"
    assert container_env(gateway_container(shared))["DATABASE_URL"] == {
        "secretKeyRef": {"name": "ledger-database", "key": "url"}
    }


def test_ledger_off(render: Render) -> None:
    manifests = render(
        "default",
        "ledger.enabled=false",
        "ledger.persistence.enabled=true",
        "ledger.databaseUrl=postgresql://gateway:off-0008@pg.example/usage",
    )
    env = container_env(gateway_container(manifests))
    assert "DATABASE_URL" not in env and "DIFY_GATEWAY_DATA_DIR" not in env
    mounts, _ = pod_volumes(manifests)
    assert set(mounts) == {"/etc/dify-gateway", "/tmp"}
    assert find(manifests, "PersistentVolumeClaim") == []
    assert all("off-0008" not in yaml.safe_dump(m) for m in manifests)
    assert gateway_config(manifests)["ledger"] == {"enabled": False}
    assert strategy(manifests) == "RollingUpdate"


def test_budgets_and_rate_limits_pass_through_to_the_config(render: Render) -> None:
    config = gateway_config(render("all-options"))
    assert config["budgets"]["on_redis_error"] == "closed"
    assert config["budgets"]["overrides"][0]["limits"][1] == {
        "period": "day",
        "tokens": 1000000,
        "route": "openai-chat",
        "model": "gpt-4o*",
    }
    assert config["rate_limits"]["default"]["user_rpm"] == 60
    # ... with Redis, so the replicas share the counters.
    assert config["cache"]["redis_url"] == "os.environ/REDIS_URL"


def test_install_notes_say_where_the_usage_goes(helm: str, tmp_path: Path) -> None:
    default = notes(helm, tmp_path, "default")
    assert "SQLite in an emptyDir" in default and "lost with the pod" in default
    assert "Use PostgreSQL in production" in default
    assert "WARNING: with 2 replicas each pod keeps its own SQLite file" in default
    single = notes(helm, tmp_path, "default", "replicaCount=1")
    assert "SQLite in an emptyDir" in single and "WARNING" not in single
    postgres = notes(helm, tmp_path, "all-options")
    assert "PostgreSQL from DATABASE_URL (Secret ledger-database, key url)" in postgres
    assert "SQLite" not in postgres
    chart_secret = notes(helm, tmp_path, "default", "ledger.databaseUrl=postgresql://u:p@db/usage")
    assert "(Secret ci-dify-gateway, key database-url)" in chart_secret
    shared = notes(helm, tmp_path, "default", "ledger.persistence.enabled=true")
    assert "on PersistentVolumeClaim ci-dify-gateway-data" in shared
    assert "2 replicas share one SQLite volume" in shared
    assert "usage ledger: off" in notes(helm, tmp_path, "default", "ledger.enabled=false").lower()
    unshared = notes(helm, tmp_path, "default", "config.rate_limits.default.rpm=60")
    assert "no Redis is configured" in unshared
    assert "no Redis" not in notes(helm, tmp_path, "default", "config.rate_limits.default.rpm=60", "redis.enabled=true")
