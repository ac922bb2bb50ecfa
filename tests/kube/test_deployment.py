"""The deployment against the real API server: every object the chart renders and every manifest
passes a strict server-side dry-run (custom resources against the project's CRDs), helm installs
the chart with a server-side dry-run and prints its notes, and Dagster's service account can do
exactly what the launcher needs — checked by the server's own authorizer, then by a real launch."""

import subprocess
import uuid

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from tests.deploy.chart import CHART, manifest_objects, render
from tests.kube.test_launcher import failure_of, launcher, metadata_of, run_probe

pytestmark = pytest.mark.k8s


def create_namespace(kube_api, name: str) -> None:
    try:
        client.CoreV1Api(kube_api.api_client()).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )
    except ApiException as exc:
        if exc.status != 409:
            raise


# Values that change the network policies' shape: given API addresses and ports, an ingress
# controller's namespace for the webserver, the Strimzi operator in the release namespace.
POLICY_VARIANTS = [
    "--set",
    "networkPolicy.apiServer.cidrs={10.96.0.1/32,fd00::1/128}",
    "--set",
    "networkPolicy.apiServer.ports={6443}",
    "--set",
    "kafka.operatorNamespace=shopstream",
    "--set-json",
    'networkPolicy.webserverIngressFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"ingress"}},'
    '"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["nginx"]}]}},{"ipBlock":{"cidr":"192.0.2.0/24","except":["192.0.2.8/29"]}}]',
]


def test_chart_and_manifests_pass_a_strict_server_side_dry_run(kube_api, helm):
    create_namespace(kube_api, "shopstream")
    dynamic = DynamicClient(kube_api.api_client())
    variants = [o for o in render(helm, None, *POLICY_VARIANTS) if o["kind"] == "NetworkPolicy"]
    objects = render(helm) + manifest_objects() + variants
    kinds = set()
    for obj in objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        created = resource.create(body=obj, namespace="shopstream", dry_run="All", field_validation="Strict")
        assert created.metadata.name == obj["metadata"]["name"]
        kinds.add(obj["kind"])
    assert {
        "SparkApplication",
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "StatefulSet",
        "Job",
        "Role",
        "NetworkPolicy",
    } <= kinds
    assert "shopstream-strimzi-operator" in {o["metadata"]["name"] for o in variants}


def test_a_manifest_the_crds_refuse_is_refused(kube_api):
    create_namespace(kube_api, "shopstream")
    [topic] = [o for o in manifest_objects() if o["kind"] == "KafkaTopic"][:1]
    topic = {**topic, "spec": {**topic["spec"], "partitions": 0}}
    resource = DynamicClient(kube_api.api_client()).resources.get(api_version=topic["apiVersion"], kind="KafkaTopic")
    with pytest.raises(ApiException) as caught:
        resource.create(body=topic, namespace="shopstream", dry_run="All")
    assert caught.value.status == 422 and "spec.partitions" in caught.value.body


def test_helm_installs_against_the_server_and_prints_the_next_commands(kube_api, helm):
    create_namespace(kube_api, "shopstream")
    done = subprocess.run(
        [
            str(helm),
            "install",
            "shopstream",
            str(CHART),
            "--namespace",
            "shopstream",
            "--kubeconfig",
            str(kube_api.kubeconfig),
            "--dry-run=server",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "kubectl -n shopstream get sparkapplications" in done.stdout
    assert "port-forward svc/dagster-dagster-webserver 3000:8080" in done.stdout  # charts/values/dagster.yaml's port
    assert "shopstream-admin-credentials" in done.stdout and "NetworkPolicies deny every flow" in done.stdout
    assert "kept across upgrades; rotation 0)" in done.stdout  # a fresh install's credentials


# (verb, group, resource, subresource, name) -> allowed for Dagster's service account
EXPECTED = {
    ("create", "sparkoperator.k8s.io", "sparkapplications", "", ""): True,
    ("get", "sparkoperator.k8s.io", "sparkapplications", "", ""): True,
    ("list", "sparkoperator.k8s.io", "sparkapplications", "", ""): True,
    ("watch", "sparkoperator.k8s.io", "sparkapplications", "", ""): True,
    ("delete", "sparkoperator.k8s.io", "sparkapplications", "", ""): True,
    ("get", "", "pods", "", ""): True,
    ("get", "", "pods", "log", ""): True,
    ("get", "", "serviceaccounts", "", "shopstream-spark"): True,
    ("update", "sparkoperator.k8s.io", "sparkapplications", "", ""): False,
    ("patch", "sparkoperator.k8s.io", "sparkapplications", "status", ""): False,
    ("list", "", "pods", "", ""): False,
    ("create", "", "pods", "", ""): False,
    ("delete", "", "pods", "", ""): False,
    ("get", "", "secrets", "", ""): False,
    ("get", "", "configmaps", "", ""): False,
    ("get", "", "serviceaccounts", "", "default"): False,
    ("create", "", "serviceaccounts", "token", "shopstream-spark"): False,
    ("create", "batch", "jobs", "", ""): False,
}


def test_dagsters_account_can_do_exactly_what_the_launcher_needs(kube_api, helm, namespace, operator):
    api = kube_api.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="dagster"))
    )
    for obj in render(helm, namespace=namespace):
        if obj["kind"] == "Role":
            rbac.create_namespaced_role(namespace, obj)
        elif obj["kind"] == "RoleBinding":
            rbac.create_namespaced_role_binding(namespace, obj)
    as_dagster = kube_api.service_account_kubeconfig(namespace, "dagster")
    authorization = client.AuthorizationV1Api(kube_api.api_client(as_dagster))
    answers = {}
    for (verb, group, resource, subresource, name), _ in EXPECTED.items():
        review = authorization.create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        namespace=namespace,
                        verb=verb,
                        group=group,
                        resource=resource,
                        subresource=subresource or None,
                        name=name or None,
                    )
                )
            )
        )
        answers[(verb, group, resource, subresource, name)] = review.status.allowed
    assert answers == EXPECTED
    # nothing outside its namespace
    other = f"other-{uuid.uuid4().hex[:6]}"
    review = authorization.create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=other, verb="create", group="sparkoperator.k8s.io", resource="sparkapplications"
                )
            )
        )
    )
    assert review.status.allowed is False

    # and with only those rights, a whole launch works: checks, create, watch, driver log, result
    result = run_probe(launcher(kube_api, namespace, kubeconfig_file=str(as_dagster)))
    assert result.success, failure_of(result)
    assert metadata_of(result)["state_history"][-1]["state"] == "COMPLETED"
