"""Fixtures for tests against a real Kubernetes API server (etcd + kube-apiserver built from the
Go module proxy; see tests/kube/apiserver.py)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.kube.apiserver import KubeAPIServer
from tests.kube.operator import OperatorStandIn
from tests.tools import build, spark_operator_chart

CRDS = Path(__file__).with_name("crds")  # Strimzi's


def crd_files() -> list[Path]:
    """The CRDs the tests install: the Spark operator's own SparkApplication CRD, read from its
    module at the version tests/tools/spark-operator/go.mod pins (its Helm chart's crds/), and
    Strimzi's in tests/kube/crds/."""
    return [
        spark_operator_chart() / "crds" / "sparkoperator.k8s.io_sparkapplications.yaml",
        *sorted(CRDS.glob("*.yaml")),
    ]


def install_crds(api: client.ApiClient, only: str | None = None) -> list[str]:
    """Create the project's CRDs (or just the one named `only`) and wait until they are served."""
    extensions = client.ApiextensionsV1Api(api)
    names = []
    for path in crd_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or (only and doc["metadata"]["name"] != only):
                continue
            extensions.create_custom_resource_definition(doc)
            names.append(doc["metadata"]["name"])
    deadline = time.monotonic() + 60
    for name in names:
        while True:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRD {name} not established")
            time.sleep(0.2)
    return names


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory):
    """A real API server with the project's CRDs installed."""
    binaries = {"etcd": build("etcd") / "etcd", "kube-apiserver": build("kube-apiserver") / "kube-apiserver"}
    server = KubeAPIServer(tmp_path_factory.mktemp("kube"), binaries).start()
    try:
        server.crds = install_crds(server.api_client())
        yield server
    finally:
        server.stop()


@pytest.fixture
def empty_namespace(kube_api):
    """A fresh, empty namespace, deleted afterwards (where a chart creates its own service accounts)."""
    api = client.CoreV1Api(kube_api.api_client())
    name = f"t-{uuid.uuid4().hex[:8]}"
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    api.delete_namespace(name)


@pytest.fixture
def namespace(kube_api, empty_namespace):
    """A fresh namespace with the Spark driver's service account in it."""
    client.CoreV1Api(kube_api.api_client()).create_namespaced_service_account(
        empty_namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="shopstream-spark"))
    )
    return empty_namespace


@pytest.fixture
def operator(kube_api, namespace):
    stand_in = OperatorStandIn(kube_api.api_client(), namespace).start()
    yield stand_in
    stand_in.stop()
