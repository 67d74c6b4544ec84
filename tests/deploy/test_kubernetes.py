"""deploy/kubernetes: every resource of the kustomization validates with kubernetes-validate
against a current Kubernetes, strictly (no unknown fields), and the things that decide whether
greenlight runs well in it hold: probes on /readyz and /healthz, a grace period longer than the
preStop sleep plus `shutdown_timeout`, an unprivileged read-only container, the database URL
from a Secret, 2 replicas within Slack's Socket Mode limit, a PDB, and the migrate Job."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO, default_shutdown_timeout_seconds, duration_seconds

KUBERNETES = "1.37.0"  # the newest kubernetes-validate knows (tests/e2e/requirements.txt)
DIR = REPO / "deploy" / "kubernetes"
SECRET = "greenlight"


def kustomization() -> dict:
    return yaml.safe_load((DIR / "kustomization.yaml").read_text())


def resources() -> dict[str, dict]:
    """The kustomization's resources by kind."""
    out = {}
    for name in kustomization()["resources"]:
        doc = yaml.safe_load((DIR / name).read_text())
        out[doc["kind"]] = doc
    return out


def greenlight_toml() -> dict:
    return tomllib.loads(resources()["ConfigMap"]["data"]["greenlight.toml"])


def container(kind: str) -> dict:
    spec = resources()[kind]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    return c


def test_every_resource_validates_against_a_current_kubernetes():
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "the kustomization and the directory disagree"
    validate = Path(sys.executable).with_name("kubernetes-validate")
    done = subprocess.run(
        [str(validate), "--strict", "--kubernetes-version", KUBERNETES, *sorted(str(DIR / n) for n in listed)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(listed), done.stdout


def test_the_validator_refuses_a_misspelt_field(tmp_path):
    # The check above is only worth something if strict validation catches a typo.
    doc = yaml.safe_load((DIR / "deployment.yaml").read_text())
    c = doc["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    bad = tmp_path / "deployment.yaml"
    bad.write_text(yaml.safe_dump(doc))
    validate = Path(sys.executable).with_name("kubernetes-validate")
    done = subprocess.run(
        [str(validate), "--strict", "-k", KUBERNETES, str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "readinesProbe" in done.stdout + done.stderr


def test_two_replicas_probe_readyz_and_healthz_and_drain_within_the_grace_period():
    deployment = resources()["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    c = container("Deployment")
    assert c["image"] == kustomization()["images"][0]["name"] == "greenlight"
    assert c.get("args") == ["serve"]
    (port,) = c["ports"]
    assert port["containerPort"] == 8080  # the image's EXPOSE and GREENLIGHT_LISTEN
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"]["path"] == path
        assert c[probe]["httpGet"]["port"] in (port["name"], 8080)
    # Readiness turns red within 2 s of the database going away; the probe must wait longer.
    assert c["readinessProbe"]["timeoutSeconds"] >= 3

    toml = greenlight_toml()
    if "shutdown_timeout" in toml:
        shutdown = duration_seconds(toml["shutdown_timeout"])
    else:
        shutdown = default_shutdown_timeout_seconds()
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop >= 1, "no time for load balancers to drop the pod before SIGTERM"
    assert grace > pre_stop + shutdown, (grace, pre_stop, shutdown)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_containers_run_unprivileged_on_a_read_only_root():
    for kind in ("Deployment", "Job"):
        pod = resources()[kind]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, kind
        assert pod["securityContext"]["runAsUser"] == 65532, kind  # the image's user
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", kind
        assert pod["automountServiceAccountToken"] is False, kind
        sc = container(kind)["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, kind
        assert sc["readOnlyRootFilesystem"] is True, kind
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], kind
        assert container(kind)["resources"]["limits"]["memory"], kind


def env_of(kind: str) -> dict[str, dict]:
    return {e["name"]: e for e in container(kind)["env"]}


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_the_database_url_comes_from_the_secret_and_the_config_from_the_configmap(kind):
    env = env_of(kind)
    ref = env["GREENLIGHT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == SECRET and ref["key"] == "database-url" and not ref.get("optional")
    assert "value" not in env["GREENLIGHT_DATABASE_URL"]
    config = Path(env["GREENLIGHT_CONFIG"]["value"])
    pod = resources()[kind]["spec"]["template"]["spec"]
    mount = next(m for m in container(kind)["volumeMounts"] if m["mountPath"] == str(config.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == resources()["ConfigMap"]["metadata"]["name"]
    assert config.name in resources()["ConfigMap"]["data"]
    if kind == "Deployment":
        ref = env["SLACK_BOT_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == SECRET and not ref.get("optional")
        # One of the two is needed: the signing secret (HTTP) or the app token (Socket Mode).
        for name in ("SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == SECRET


def test_the_configmap_is_a_valid_config_and_fits_slacks_socket_mode_limit(tmp_path):
    toml = greenlight_toml()
    replicas = resources()["Deployment"]["spec"]["replicas"]
    assert replicas * toml["slack"]["socket_connections"] <= 10, "Slack allows 10 Socket Mode connections per app"
    text = (DIR / "kustomization.yaml").read_text() + (DIR / "deployment.yaml").read_text()
    assert "replicas x socket_connections <= 10" in text.replace("[slack] ", "")
    for route in ("/slack/interactions", "/slack/events", "/slack/commands"):
        assert route in (DIR / "kustomization.yaml").read_text(), f"Slack's request URL {route} is not named"

    binary = os.environ.get("GREENLIGHT_BIN", str(REPO / "target" / "debug" / "greenlight"))
    path = tmp_path / "greenlight.toml"
    path.write_text(resources()["ConfigMap"]["data"]["greenlight.toml"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENLIGHT_", "SLACK_"))}
    check = subprocess.run(
        [binary, "check", "--config", str(path)], capture_output=True, text=True, env=env, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_disruption_budget_keeps_one_replica_and_the_service_reaches_the_pods():
    pods = resources()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert resources()["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pods.items()
    pdb = resources()["PodDisruptionBudget"]["spec"]
    assert pdb["minAvailable"] == 1 and pdb["selector"]["matchLabels"].items() <= pods.items()
    service = resources()["Service"]["spec"]
    assert service["selector"].items() <= pods.items()
    assert service["ports"][0]["targetPort"] in ("http", 8080)


def test_a_job_runs_migrate_once():
    job = resources()["Job"]
    assert container("Job")["args"] == ["migrate"]
    assert container("Job")["image"] == "greenlight"
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"]["backoffLimit"] >= 1
