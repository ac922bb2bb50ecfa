"""The test API server itself: ready, validating SparkApplications against the project's CRD,
serving the status subresource, enforcing RBAC, and watch semantics the launcher relies on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from dagster_repo.defs.launcher import KubernetesSparkLauncher, SparkJobConfig
from dagster_repo.defs.resources import LakeResource, SparkApplicationsClient
from dagster_repo.kube import spark_application as sa

pytestmark = pytest.mark.k8s

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def body(namespace: str, name: str = "probe") -> dict:
    launcher = KubernetesSparkLauncher(
        lake=LakeResource(home="/nonexistent"),
        applications=SparkApplicationsClient(namespace=namespace),
        image="registry.local/spark:1",
    )
    return launcher.application_spec("maintenance", [], SparkJobConfig(), name, {}).body()


def create(kube_api, namespace, obj):
    return client.CustomObjectsApi(kube_api.api_client()).create_namespaced_custom_object(
        sa.GROUP, sa.VERSION, namespace, sa.PLURAL, obj
    )


def test_server_is_ready_and_serves_the_crds(kube_api):
    version = client.VersionApi(kube_api.api_client()).get_code()
    pinned = re.search(r"require k8s.io/kubernetes (v\S+)", (TOOLS / "kube-apiserver" / "go.mod").read_text()).group(1)
    assert version.git_version == pinned  # the stamp in tests/tools/kube-apiserver/ldflags matches the pin
    assert sa.CRD_NAME in kube_api.crds
    assert kube_api.started_in_seconds > 0


def test_a_launcher_body_is_accepted_and_its_status_is_a_subresource(kube_api, namespace):
    created = create(kube_api, namespace, body(namespace))
    assert created["spec"]["driver"]["memory"] == "1g"
    custom = client.CustomObjectsApi(kube_api.api_client())
    # status written through the main resource is ignored; through /status it sticks (the CRD
    # requires status.driverInfo, which the operator always writes)
    status = {"status": {"applicationState": {"state": "RUNNING"}, "driverInfo": {}}}
    custom.patch_namespaced_custom_object(sa.GROUP, sa.VERSION, namespace, sa.PLURAL, "probe", status)
    assert sa.state_of(custom.get_namespaced_custom_object(sa.GROUP, sa.VERSION, namespace, sa.PLURAL, "probe")) is None
    custom.patch_namespaced_custom_object_status(sa.GROUP, sa.VERSION, namespace, sa.PLURAL, "probe", status)
    assert (
        sa.state_of(custom.get_namespaced_custom_object(sa.GROUP, sa.VERSION, namespace, sa.PLURAL, "probe"))
        == "RUNNING"
    )


@pytest.mark.parametrize(
    "damage, field",
    [
        (lambda s: s.pop("sparkVersion"), "spec.sparkVersion"),
        (lambda s: s.update(type="Golang"), "spec.type"),
        (lambda s: s["driver"].update(cores=0), "spec.driver.cores"),
        (lambda s: s["executor"].update(cores="two"), "spec.executor.cores"),
    ],
)
def test_the_crd_rejects_bad_specs_naming_the_field(kube_api, namespace, damage, field):
    obj = body(namespace, "bad")
    damage(obj["spec"])
    with pytest.raises(ApiException) as caught:
        create(kube_api, namespace, obj)
    assert caught.value.status == 422 and field in caught.value.body


def test_unknown_fields_are_refused_with_strict_field_validation(kube_api, namespace):
    obj = body(namespace, "unknown")
    obj["spec"]["executors"] = 3
    with pytest.raises(ApiException) as caught:
        client.CustomObjectsApi(kube_api.api_client()).create_namespaced_custom_object(
            sa.GROUP, sa.VERSION, namespace, sa.PLURAL, obj, field_validation="Strict"
        )
    assert caught.value.status == 400 and "executors" in caught.value.body


def test_rbac_refuses_a_service_account_without_a_role(kube_api, namespace):
    config = kube_api.service_account_kubeconfig(namespace, "shopstream-spark")
    as_account = client.CustomObjectsApi(kube_api.api_client(config))
    with pytest.raises(ApiException) as caught:
        as_account.create_namespaced_custom_object(
            sa.GROUP, sa.VERSION, namespace, sa.PLURAL, body(namespace, "denied")
        )
    assert caught.value.status == 403
    assert f"system:serviceaccount:{namespace}:shopstream-spark" in caught.value.body
