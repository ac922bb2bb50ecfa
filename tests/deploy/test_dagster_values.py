"""charts/values/dagster.yaml against the platform chart. The Dagster release is rendered from that
file by the cluster stage's stand-in of the official chart (the one the cluster stage runs), and
must use the platform's database, role and Secrets, its ConfigMaps, the service account its
launcher Role is bound to, and the ports its NetworkPolicies and skaffold's port-forward name."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.deploy.chart import CHART, DAGSTER_VALUES, render, render_dagster, skaffold_configs

PLATFORM_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.fixture(scope="module")
def platform(helm) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in render(helm)}


@pytest.fixture(scope="module")
def dagster(helm) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in render_dagster(helm)}


@pytest.fixture(scope="module")
def instance(dagster) -> dict:
    return yaml.safe_load(dagster[("ConfigMap", "dagster-instance")]["data"]["dagster.yaml"])


def deployments(dagster) -> dict[str, dict]:
    return {
        o["spec"]["template"]["metadata"]["labels"]["component"]: o
        for (kind, _), o in dagster.items()
        if kind == "Deployment"
    }


def test_dagster_storage_is_the_platforms_database_with_its_own_role(platform, instance):
    [postgres] = [
        o
        for (kind, _), o in platform.items()
        if kind == "Service" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "postgres"
    ]
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        db = instance[storage]["config"]["postgres_db"]
        assert instance[storage]["module"].startswith("dagster_postgres")
        assert (db["hostname"], db["port"]) == (postgres["metadata"]["name"], postgres["spec"]["ports"][0]["port"])
        assert (db["db_name"], db["username"]) == (
            PLATFORM_VALUES["lake"]["dagsterDatabase"],
            PLATFORM_VALUES["lake"]["dagsterUser"],
        )
        assert db["username"] != PLATFORM_VALUES["postgres"]["superuser"]
        assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
        assert db["scheme"] == "postgresql+psycopg2"  # the driver dagster-postgres installs
    secret = instance["run_launcher"]["config"]["postgres_password_secret"]
    assert "postgresql-password" in platform[("Secret", secret)]["data"]


def test_runs_are_k8s_jobs_with_the_launcher_account_and_the_platform_settings(platform, dagster, instance):
    launcher = instance["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    account = PLATFORM_VALUES["dagster"]["serviceAccountName"]
    assert launcher["config"]["service_account_name"] == account
    [binding] = [o for (kind, name), o in platform.items() if kind == "RoleBinding" and name.endswith("spark-launcher")]
    assert {"kind": "ServiceAccount", "name": account, "namespace": "shopstream"} in binding["subjects"]
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["scheduler"]["class"] == "DagsterDaemonScheduler"

    code = deployments(dagster)["user-deployments"]["spec"]["template"]["spec"]
    env_from = code["containers"][0]["envFrom"]
    config_maps = {r["configMapRef"]["name"] for r in env_from if "configMapRef" in r}
    secrets = {r["secretRef"]["name"] for r in env_from if "secretRef" in r}
    assert {"shopstream-lake", "shopstream-launcher"} <= config_maps
    assert all(("ConfigMap", name) in platform or ("ConfigMap", name) in dagster for name in config_maps)
    assert secrets == {"shopstream-credentials"} and ("Secret", "shopstream-credentials") in platform
    # what run pods inherit from the code server (includeConfigInLaunchedRuns)
    env = {e["name"]: e.get("value") for e in code["containers"][0]["env"]}
    context = json.loads(env["DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT"])["k8s"]
    assert set(context["env_config_maps"]) == config_maps and set(context["env_secrets"]) == secrets
    assert context["service_account_name"] == account and context["namespace"] == "shopstream"
    assert env["DAGSTER_CURRENT_IMAGE"] == code["containers"][0]["image"]


def test_every_dagster_pod_and_run_pod_runs_as_the_app_images_user(dagster, instance):
    for component, deployment in deployments(dagster).items():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == PLATFORM_VALUES["dagster"]["serviceAccountName"], component
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 10001, component
        assert spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False, component
    run = instance["run_launcher"]["config"]["run_k8s_config"]
    assert run["pod_spec_config"]["securityContext"]["runAsUser"] == 10001
    assert run["container_config"]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_ports_agree_with_the_platforms_policies_and_skaffolds_port_forward(dagster):
    webserver = dagster[("Service", "dagster-dagster-webserver")]["spec"]["ports"][0]["port"]
    code = dagster[("Service", "shopstream")]["spec"]["ports"][0]["port"]
    assert (webserver, code) == (
        PLATFORM_VALUES["dagster"]["webserverPort"],
        PLATFORM_VALUES["dagster"]["codeServerPort"],
    )
    [platform_config] = [c for c in skaffold_configs() if c["metadata"]["name"] == "platform"]
    [forward] = [f for f in platform_config["portForward"] if f["resourceName"] == "dagster-dagster-webserver"]
    assert forward["port"] == webserver
    workspace = yaml.safe_load(dagster[("ConfigMap", "dagster-workspace-yaml")]["data"]["workspace.yaml"])
    assert workspace["load_from"] == [
        {"grpc_server": {"host": "shopstream", "port": code, "location_name": "shopstream"}}
    ]


def test_the_values_file_sets_only_keys_the_stand_in_implements():
    """A key the stand-in ignores would be tested by nobody: every leaf of the values file must
    appear in the stand-in's own defaults (which list exactly what it renders)."""
    from tests.deploy.chart import DAGSTER_CHART

    def leaves(tree, prefix=()):
        if isinstance(tree, dict) and tree:
            for key, value in tree.items():
                yield from leaves(value, (*prefix, key))
        elif not (isinstance(tree, list) and prefix[-1] == "deployments"):  # entries: checked by rendering
            yield prefix

    known = set(leaves(yaml.safe_load((DAGSTER_CHART / "values.yaml").read_text())))
    # a default of {} stands for a block the stand-in passes through whole (resources, security contexts)
    missing = [
        ".".join(path)
        for path in leaves(yaml.safe_load(DAGSTER_VALUES.read_text()))
        if not any(path[: len(k)] == k for k in known)
    ]
    assert not missing, f"keys of charts/values/dagster.yaml the stand-in does not implement: {missing}"
