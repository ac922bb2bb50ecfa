"""Credentials and network policies against the real API server, where helm's `lookup` sees what is
there: client Secrets kept while credentials.rotation stays or is left out, regenerated when it rises
or when they carry no record of one (an older chart's, holding the root keys); the admin Secret always
kept; a real `helm install` and `helm upgrade` (hooks off: nothing runs Jobs here) doing the same
and leaving MinIO and PostgreSQL untouched while the streaming application changes; and the API
server's own addresses in the policies' API rules."""

from __future__ import annotations

import base64
import subprocess

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from tests.deploy.chart import CHART

pytestmark = pytest.mark.k8s

ANNOTATION = "shopstream.io/credentials-rotation"
ADMIN, CLIENT, DAGSTER = "shopstream-admin-credentials", "shopstream-credentials", "shopstream-dagster-postgresql"


def helm_run(helm, kube_api, *args: str) -> str:
    done = subprocess.run([str(helm), *args, "--kubeconfig", str(kube_api.kubeconfig)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def render_against_server(helm, kube_api, namespace: str, *sets: str) -> dict[tuple[str, str], dict]:
    """`helm template --dry-run=server`: rendered with lookup answering from the cluster."""
    command = ["template", "shopstream", str(CHART), "--namespace", namespace, "--dry-run=server"]
    for value in sets:
        command += ["--set", value]
    objects = [d for d in yaml.safe_load_all(helm_run(helm, kube_api, *command)) if d]
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def data(secret) -> dict[str, str]:
    raw = secret["data"] if isinstance(secret, dict) else secret.data
    return {key: base64.b64decode(value).decode() for key, value in raw.items()}


def create_secret(kube_api, namespace: str, name: str, values: dict[str, str], rotation: str | None) -> None:
    annotations = {ANNOTATION: rotation} if rotation is not None else {}
    client.CoreV1Api(kube_api.api_client()).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name, annotations=annotations), string_data=values)
    )


def read_secrets(kube_api, namespace: str) -> dict[str, dict[str, str]]:
    core = client.CoreV1Api(kube_api.api_client())
    return {name: data(core.read_namespaced_secret(name, namespace)) for name in (ADMIN, CLIENT, DAGSTER)}


def test_client_secrets_are_kept_for_their_rotation_and_regenerated_for_a_higher_one(kube_api, helm, empty_namespace):
    admin = {"MINIO_ROOT_USER": "rootAAAAAAAAAAAAAAAA", "MINIO_ROOT_PASSWORD": "r" * 40, "POSTGRES_PASSWORD": "p" * 32}
    catalog = {
        "AWS_ACCESS_KEY_ID": "shopstream-lake",
        "AWS_SECRET_ACCESS_KEY": "s" * 40,
        "SHOPSTREAM_CATALOG_PASSWORD": "c" * 32,
    }
    create_secret(kube_api, empty_namespace, ADMIN, admin, None)
    create_secret(kube_api, empty_namespace, CLIENT, catalog, "0")
    create_secret(kube_api, empty_namespace, DAGSTER, {"postgresql-password": "d" * 32}, "0")

    same = render_against_server(helm, kube_api, empty_namespace)
    assert data(same[("Secret", ADMIN)]) == admin
    assert data(same[("Secret", CLIENT)]) == catalog
    assert data(same[("Secret", DAGSTER)]) == {"postgresql-password": "d" * 32}

    rotated = render_against_server(helm, kube_api, empty_namespace, "credentials.rotation=1")
    assert data(rotated[("Secret", ADMIN)]) == admin  # never rotated by the chart
    new = data(rotated[("Secret", CLIENT)])
    assert new["AWS_ACCESS_KEY_ID"] == "shopstream-lake"  # the same MinIO user, with a new key
    assert new["AWS_SECRET_ACCESS_KEY"] != "s" * 40 and len(new["AWS_SECRET_ACCESS_KEY"]) == 40
    assert new["SHOPSTREAM_CATALOG_PASSWORD"] != "c" * 32 and len(new["SHOPSTREAM_CATALOG_PASSWORD"]) == 32
    assert data(rotated[("Secret", DAGSTER)])["postgresql-password"] != "d" * 32
    for name in (CLIENT, DAGSTER):
        assert rotated[("Secret", name)]["metadata"]["annotations"][ANNOTATION] == "1"
    app = rotated[("SparkApplication", "shopstream-streaming")]["spec"]
    assert app["driver"]["annotations"][ANNOTATION] == app["executor"]["annotations"][ANNOTATION] == "1"


def test_client_secrets_without_a_recorded_rotation_are_regenerated(kube_api, helm, empty_namespace):
    """An older chart's client Secret held MinIO's root keys and the superuser's password."""
    old = {
        "AWS_ACCESS_KEY_ID": "rootAAAAAAAAAAAAAAAA",
        "AWS_SECRET_ACCESS_KEY": "r" * 40,
        "SHOPSTREAM_CATALOG_PASSWORD": "p" * 32,
    }
    create_secret(kube_api, empty_namespace, CLIENT, old, None)
    create_secret(kube_api, empty_namespace, DAGSTER, {"postgresql-password": "p" * 32}, None)
    rendered = render_against_server(helm, kube_api, empty_namespace)
    new = data(rendered[("Secret", CLIENT)])
    assert new["AWS_ACCESS_KEY_ID"] == "shopstream-lake"
    assert not set(new.values()) & set(old.values())
    assert data(rendered[("Secret", DAGSTER)])["postgresql-password"] != "p" * 32


def test_install_then_upgrades_keep_or_rotate_and_leave_minio_and_postgres_alone(kube_api, helm, empty_namespace):
    base = ["shopstream", str(CHART), "--namespace", empty_namespace, "--no-hooks"]
    helm_run(helm, kube_api, "install", *base)
    installed = read_secrets(kube_api, empty_namespace)
    helm_run(helm, kube_api, "upgrade", *base, "--set", "streaming.trigger=30 seconds")
    assert read_secrets(kube_api, empty_namespace) == installed

    helm_run(helm, kube_api, "upgrade", *base, "--set", "credentials.rotation=1")
    rotated = read_secrets(kube_api, empty_namespace)
    assert rotated[ADMIN] == installed[ADMIN]
    assert rotated[CLIENT]["AWS_ACCESS_KEY_ID"] == installed[CLIENT]["AWS_ACCESS_KEY_ID"] == "shopstream-lake"
    for name, key in (
        (CLIENT, "AWS_SECRET_ACCESS_KEY"),
        (CLIENT, "SHOPSTREAM_CATALOG_PASSWORD"),
        (DAGSTER, "postgresql-password"),
    ):
        assert rotated[name][key] != installed[name][key], (name, key)
    # an upgrade that keeps the rotation, or leaves it out, keeps the rotated values (only a higher one rotates)
    helm_run(helm, kube_api, "upgrade", *base, "--set", "credentials.rotation=1", "--set", "generator.rate=5")
    assert read_secrets(kube_api, empty_namespace) == rotated
    helm_run(helm, kube_api, "upgrade", *base, "--set", "generator.rate=6")
    assert read_secrets(kube_api, empty_namespace) == rotated

    api = kube_api.api_client()
    apps = client.AppsV1Api(api)
    # three upgrades later, MinIO's and PostgreSQL's specs were never changed (no restart, no lost emptyDir)
    assert apps.read_namespaced_deployment("shopstream-minio", empty_namespace).metadata.generation == 1
    assert apps.read_namespaced_stateful_set("shopstream-postgres", empty_namespace).metadata.generation == 1
    stream = (
        DynamicClient(api)
        .resources.get(api_version="sparkoperator.k8s.io/v1beta2", kind="SparkApplication")
        .get(name="shopstream-streaming", namespace=empty_namespace)
    )
    assert stream.spec.driver.annotations[ANNOTATION] == stream.spec.executor.annotations[ANNOTATION] == "1"

    # uninstalled, the Secrets stay (helm.sh/resource-policy: keep)
    helm_run(helm, kube_api, "uninstall", "shopstream", "--namespace", empty_namespace)
    assert read_secrets(kube_api, empty_namespace) == rotated


def api_rules(rendered) -> list[dict]:
    return [
        rule
        for (kind, _), o in rendered.items()
        if kind == "NetworkPolicy"
        for rule in o["spec"].get("egress", [])
        if any("ipBlock" in peer for peer in rule.get("to", []))
    ]


def test_the_api_rules_name_the_api_servers_own_addresses(kube_api, helm, empty_namespace):
    """The `kubernetes` Service's address, and its EndpointSlice's when there is one. This server
    runs no endpoint reconciler (loopback address), so the test writes the slice a cluster has."""
    api = kube_api.api_client()
    assert client.CoreV1Api(api).read_namespaced_service("kubernetes", "default").spec.cluster_ips == ["10.0.0.1"]
    rules = api_rules(render_against_server(helm, kube_api, empty_namespace))
    assert len(rules) == 6  # Spark drivers, the entity operator, Dagster's webserver, daemon, code server, runs
    for rule in rules:
        assert rule == {
            "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
            "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
        }

    discovery = client.DiscoveryV1Api(api)
    discovery.create_namespaced_endpoint_slice(
        "default",
        client.V1EndpointSlice(
            metadata=client.V1ObjectMeta(name="kubernetes", labels={"kubernetes.io/service-name": "kubernetes"}),
            address_type="IPv4",
            endpoints=[client.V1Endpoint(addresses=["192.0.2.7"])],
            ports=[client.DiscoveryV1EndpointPort(name="https", port=6443, protocol="TCP")],
        ),
    )
    try:
        rules = api_rules(render_against_server(helm, kube_api, empty_namespace))
        assert {tuple(p["ipBlock"]["cidr"] for p in rule["to"]) for rule in rules} == {("10.0.0.1/32", "192.0.2.7/32")}
    finally:
        discovery.delete_namespaced_endpoint_slice("kubernetes", "default")

    # a value replaces what the cluster says
    given = render_against_server(helm, kube_api, empty_namespace, "networkPolicy.apiServer.cidrs={198.51.100.0/28}")
    assert {tuple(p["ipBlock"]["cidr"] for p in rule["to"]) for rule in api_rules(given)} == {("198.51.100.0/28",)}
