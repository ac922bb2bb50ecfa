"""The chart's NetworkPolicies, evaluated (tests/deploy/netpol.py) on a model of the namespace: the
chart's own pods with the labels it renders, Spark pods as the operator labels them, Dagster's
pods as its chart and its run launcher label them, Strimzi's pods, the cluster DNS, an ingress
controller, a stranger in another namespace and the API server's addresses. Every flow the
platform needs is allowed at both ends; the flows it does not need are denied.

(The test cluster's network plugin does not enforce policies: kube-apiserver checks them by a
server-side dry-run in tests/kube, this evaluator checks what they mean.)"""

from __future__ import annotations

import itertools

import pytest

from tests.deploy.chart import CHART, render, render_dagster
from tests.deploy.netpol import Cluster, External, Pod, selects

pytestmark = pytest.mark.k8s

NS = "shopstream"
API_ENDPOINT = External("API server endpoint", "172.18.0.2")
API_SERVICE = External("kubernetes Service", "10.96.0.1")
INTERNET = External("internet", "93.184.216.34")
API_VALUES = {"networkPolicy.apiServer.cidrs": "{10.96.0.1/32,172.18.0.2/32}"}
INGRESS_FROM = [
    "--set-json",
    'networkPolicy.webserverIngressFrom=[{"namespaceSelector":{"matchLabels":'
    '{"kubernetes.io/metadata.name":"ingress-nginx"}}}]',
]


def chart_pods(objects) -> list[tuple[str, dict]]:
    """(name, pod labels) of every workload the chart renders, and of the streaming application's
    driver and executor as the Spark operator labels them."""
    found = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            found.append((obj["metadata"]["name"], obj["spec"]["template"]["metadata"]["labels"]))
        elif obj["kind"] == "SparkApplication":
            name = obj["metadata"]["name"]
            for role in ("driver", "executor"):
                found.append(
                    (
                        f"{name}-{role}",
                        {
                            **obj["spec"][role].get("labels", {}),
                            "spark-role": role,
                            "sparkoperator.k8s.io/app-name": name,
                            "sparkoperator.k8s.io/launched-by-spark-operator": "true",
                        },
                    )
                )
    return found


def dagster_pods(helm) -> list[tuple[str, dict]]:
    """Dagster's pods as the release of charts/values/dagster.yaml labels them (the stand-in of chart
    1.13.27, whose code server comes from the dagster-user-deployments subchart), and a run pod as
    dagster-k8s labels it."""
    from dagster_k8s.utils import get_common_labels

    names = {
        "dagster-webserver": "dagster-webserver",
        "dagster-daemon": "dagster-daemon",
        "user-deployments": "dagster-code-server",
    }
    pods = [
        (names[o["spec"]["template"]["metadata"]["labels"]["component"]], o["spec"]["template"]["metadata"]["labels"])
        for o in render_dagster(helm)
        if o["kind"] == "Deployment"
    ]
    run = {**get_common_labels(), "app.kubernetes.io/component": "run_worker", "dagster/run-id": "0f1e2d3c"}
    return [*pods, ("dagster-run", run)]


def launched_spark_pods() -> list[tuple[str, dict]]:
    """A SparkApplication Dagster launched (labels of dagster_repo/spark_application.py plus the operator's)."""
    app = "gold-daily-sales-summary-20261124-1a2b3c"
    common = {
        "sparkoperator.k8s.io/app-name": app,
        "sparkoperator.k8s.io/launched-by-spark-operator": "true",
        "dagster.io/partition": "2026-11-24",
        "app.kubernetes.io/managed-by": "dagster",
    }
    return [
        (f"{app}-driver", {**common, "spark-role": "driver"}),
        (f"{app}-exec-1", {**common, "spark-role": "executor"}),
        (f"{app}-exec-2", {**common, "spark-role": "executor"}),
    ]


def strimzi_pods() -> list[tuple[str, dict]]:
    kafka = {"strimzi.io/cluster": "shopstream-kafka", "strimzi.io/kind": "Kafka"}
    node = {
        **kafka,
        "strimzi.io/name": "shopstream-kafka-kafka",
        "strimzi.io/pool-name": "dual-role",
        "strimzi.io/broker-role": "true",
        "strimzi.io/controller-role": "true",
    }
    return [
        ("shopstream-kafka-dual-role-0", node),
        ("shopstream-kafka-dual-role-1", node),
        ("shopstream-kafka-entity-operator", {**kafka, "strimzi.io/name": "shopstream-kafka-entity-operator"}),
    ]


def model(objects, dagster, operator_namespace: str = "strimzi") -> Cluster:
    addresses = (f"10.244.0.{i}" for i in itertools.count(10))
    pods = [
        Pod(name, NS, labels, next(addresses))
        for name, labels in chart_pods(objects) + dagster + launched_spark_pods() + strimzi_pods()
    ]
    pods += [
        Pod(
            "strimzi-cluster-operator",
            operator_namespace,
            {"name": "strimzi-cluster-operator", "strimzi.io/kind": "cluster-operator"},
            next(addresses),
        ),
        Pod("strimzi-other", "strimzi", {"app": "something-else"}, next(addresses)),
        Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, "10.244.0.2"),
        Pod("metrics-server", "kube-system", {"k8s-app": "metrics-server"}, "10.244.0.3"),
        Pod("ingress-controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}, next(addresses)),
        Pod("intruder", "other", {"app": "intruder"}, next(addresses)),
        # A pod of the namespace that no policy names (a debug pod, a Job started by hand).
        Pod("stray", NS, {"app": "debug"}, next(addresses)),
    ]
    policies = [{**o, "metadata": {**o["metadata"], "namespace": NS}} for o in objects if o["kind"] == "NetworkPolicy"]
    namespaces = {name: {} for name in (NS, "strimzi", "kube-system", "ingress-nginx", "other")}
    return Cluster(namespaces, pods, policies)


@pytest.fixture(scope="module")
def cluster(helm) -> Cluster:
    return model(render(helm, API_VALUES), dagster_pods(helm))


SPARK = [
    "shopstream-streaming-driver",
    "shopstream-streaming-executor",
    "gold-daily-sales-summary-20261124-1a2b3c-driver",
    "gold-daily-sales-summary-20261124-1a2b3c-exec-1",
]
DRIVERS = ["shopstream-streaming-driver", "gold-daily-sales-summary-20261124-1a2b3c-driver"]
EXECUTORS = ["shopstream-streaming-executor", "gold-daily-sales-summary-20261124-1a2b3c-exec-1"]
KAFKA = "shopstream-kafka-dual-role-0"
DAGSTER_DB_CLIENTS = ["dagster-webserver", "dagster-daemon", "dagster-code-server", "dagster-run"]
API = [(API_SERVICE, 443), (API_ENDPOINT, 6443)]

# (source, destination, port): every flow the platform needs (docs/kubernetes.md, "Network policies").
NEEDED = [
    *[
        (a, b, 7078)
        for a, b in [
            ("shopstream-streaming-driver", "shopstream-streaming-executor"),
            ("shopstream-streaming-executor", "shopstream-streaming-driver"),
            ("gold-daily-sales-summary-20261124-1a2b3c-driver", "gold-daily-sales-summary-20261124-1a2b3c-exec-1"),
            ("gold-daily-sales-summary-20261124-1a2b3c-exec-1", "gold-daily-sales-summary-20261124-1a2b3c-driver"),
            ("gold-daily-sales-summary-20261124-1a2b3c-exec-1", "gold-daily-sales-summary-20261124-1a2b3c-exec-2"),
        ]
    ],
    *[(driver, api, port) for driver in DRIVERS for api, port in API],
    *[
        (spark, destination, port)
        for spark in SPARK
        for destination, port in [(KAFKA, 9092), ("shopstream-minio", 9000), ("shopstream-postgres", 5432)]
    ],
    ("shopstream-generator", KAFKA, 9092),
    ("dagster-webserver", "dagster-code-server", 3030),
    ("dagster-daemon", "dagster-code-server", 3030),
    *[(client, "shopstream-postgres", 5432) for client in DAGSTER_DB_CLIENTS],
    *[
        (code, destination, port)
        for code in ("dagster-code-server", "dagster-run")
        for destination, port in [("shopstream-minio", 9000), (KAFKA, 9092), *API]
    ],
    *[(process, api, port) for process in ("dagster-daemon", "dagster-webserver") for api, port in API],
    ("shopstream-setup", "shopstream-minio", 9000),
    ("shopstream-setup", "shopstream-postgres", 5432),
    *[
        (a, b, port)
        for a, b in [(KAFKA, "shopstream-kafka-dual-role-1"), ("shopstream-kafka-dual-role-1", KAFKA)]
        for port in (9090, 9091)
    ],
    *[("strimzi-cluster-operator", KAFKA, port) for port in (9090, 9091, 8443)],
    ("shopstream-kafka-entity-operator", KAFKA, 9091),
    *[("shopstream-kafka-entity-operator", api, port) for api, port in API],
]

# Flows nothing needs: each must be denied.
UNNEEDED = [
    ("shopstream-generator", "shopstream-postgres", 5432),
    ("shopstream-generator", "shopstream-minio", 9000),
    ("shopstream-generator", API_SERVICE, 443),
    ("shopstream-generator", KAFKA, 9091),
    *[(executor, api, port) for executor in EXECUTORS for api, port in API],
    *[(spark, "dagster-webserver", 8080) for spark in SPARK],
    ("shopstream-streaming-driver", "dagster-code-server", 3030),
    ("shopstream-streaming-driver", "shopstream-minio", 9001),  # the console: port-forwards only
    ("shopstream-streaming-driver", KAFKA, 9091),
    ("shopstream-streaming-driver", INTERNET, 443),
    ("dagster-run", KAFKA, 9091),
    ("dagster-run", KAFKA, 9090),
    ("dagster-code-server", KAFKA, 9091),
    ("dagster-run", "dagster-code-server", 3030),
    ("dagster-code-server", INTERNET, 443),
    ("dagster-webserver", KAFKA, 9092),
    ("dagster-webserver", "shopstream-minio", 9000),
    ("dagster-daemon", "shopstream-minio", 9000),
    ("dagster-daemon", KAFKA, 9092),
    *[
        ("intruder", destination, port)
        for destination, port in [
            ("shopstream-postgres", 5432),
            ("shopstream-minio", 9000),
            (KAFKA, 9092),
            (KAFKA, 9091),
            ("dagster-webserver", 8080),
            ("dagster-code-server", 3030),
            ("shopstream-streaming-driver", 7078),
        ]
    ],
    ("ingress-controller", "dagster-webserver", 8080),  # only when networkPolicy.webserverIngressFrom says so
    ("strimzi-other", KAFKA, 9091),
    ("strimzi-cluster-operator", KAFKA, 9092),
    ("shopstream-kafka-entity-operator", KAFKA, 9092),
    ("shopstream-minio", "shopstream-postgres", 5432),
    ("shopstream-postgres", "shopstream-minio", 9000),
    ("shopstream-minio", INTERNET, 443),
    (KAFKA, "shopstream-postgres", 5432),
    (KAFKA, API_SERVICE, 443),
    ("shopstream-setup", KAFKA, 9092),
    ("shopstream-setup", API_SERVICE, 443),
    *[
        ("stray", destination, port)
        for destination, port in [
            ("shopstream-postgres", 5432),
            ("shopstream-minio", 9000),
            (KAFKA, 9092),
            (API_SERVICE, 443),
            (INTERNET, 443),
        ]
    ],
    ("shopstream-generator", "stray", 8080),
    ("shopstream-generator", "metrics-server", 53),
    ("shopstream-generator", "coredns", 8080),
]


def endpoint(cluster: Cluster, name):
    return name if isinstance(name, External) else cluster.pod(name)


def test_the_model_has_every_pod_the_flows_name(cluster):
    names = {p.name for p in cluster.pods}
    for source, destination, _ in NEEDED + UNNEEDED:
        for end in (source, destination):
            assert isinstance(end, External) or end in names, end
    assert {
        "shopstream-minio",
        "shopstream-postgres",
        "shopstream-generator",
        "shopstream-setup",
        "shopstream-streaming-driver",
        "shopstream-streaming-executor",
    } <= names


def test_every_pod_of_the_namespace_is_isolated_both_ways(cluster):
    for pod in (p for p in cluster.pods if p.namespace == NS):
        for direction in ("Ingress", "Egress"):
            assert cluster.policies_isolating(pod, direction), (pod, direction)
    # the default deny alone isolates a pod no other policy names
    [deny] = [p for p in cluster.policies if p["metadata"]["name"] == "shopstream-default-deny"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    stray = cluster.pod("stray")
    assert [p["metadata"]["name"] for p in cluster.policies_isolating(stray, "Ingress")] == ["shopstream-default-deny"]


@pytest.mark.parametrize("flow", NEEDED, ids=lambda f: f"{f[0]}->{f[1]}:{f[2]}")
def test_needed_flow_is_allowed_at_both_ends(cluster, flow):
    source, destination, port = flow
    egress, ingress = cluster.verdict(endpoint(cluster, source), endpoint(cluster, destination), port)
    assert (egress, ingress) == (True, True), f"egress allowed: {egress}, ingress allowed: {ingress}"


def test_unneeded_flows_are_denied(cluster):
    allowed = [f"{s}->{d}:{p}" for s, d, p in UNNEEDED if cluster.allows(endpoint(cluster, s), endpoint(cluster, d), p)]
    assert allowed == []


def test_every_pod_of_the_namespace_resolves_names_and_nothing_else_in_kube_system(cluster):
    coredns, metrics = cluster.pod("coredns"), cluster.pod("metrics-server")
    for pod in (p for p in cluster.pods if p.namespace == NS):
        assert cluster.allows(pod, coredns, 53, "UDP") and cluster.allows(pod, coredns, 53, "TCP"), pod
        assert not cluster.allows(pod, metrics, 443), pod


def test_the_webserver_takes_traffic_from_the_configured_ingress_only(helm):
    cluster = model(render(helm, API_VALUES, *INGRESS_FROM), dagster_pods(helm))
    webserver = cluster.pod("dagster-webserver")
    assert cluster.allows(cluster.pod("ingress-controller"), webserver, 8080)
    assert not cluster.allows(cluster.pod("ingress-controller"), webserver, 3030)
    assert not cluster.allows(cluster.pod("ingress-controller"), cluster.pod("dagster-code-server"), 3030)
    assert not cluster.allows(cluster.pod("intruder"), webserver, 8080)


def test_without_api_addresses_the_api_rule_keeps_to_the_api_ports(helm):
    """Rendered offline (no lookup), the API rule names no address: any, but on 443 and 6443 only."""
    cluster = model(render(helm), dagster_pods(helm))
    run = cluster.pod("dagster-run")
    assert cluster.allows(run, API_ENDPOINT, 6443) and cluster.allows(run, INTERNET, 443)
    assert not cluster.allows(run, INTERNET, 80)
    assert not cluster.allows(cluster.pod("shopstream-streaming-executor"), API_ENDPOINT, 6443)


def test_a_strimzi_operator_in_the_release_namespace_gets_its_own_policy(helm):
    objects = render(helm, {**API_VALUES, "kafka.operatorNamespace": NS})
    cluster = model(objects, dagster_pods(helm), operator_namespace=NS)
    operator = cluster.pod("strimzi-cluster-operator")
    for port in (9090, 9091, 8443):
        assert cluster.allows(operator, cluster.pod(KAFKA), port)
    assert cluster.allows(operator, API_ENDPOINT, 6443)
    assert not cluster.allows(operator, cluster.pod("shopstream-postgres"), 5432)
    assert not cluster.allows(cluster.pod("shopstream-generator"), cluster.pod(KAFKA), 9091)
    assert not cluster.allows(cluster.pod("strimzi-other"), cluster.pod(KAFKA), 9091)


def test_each_policy_says_which_flow_it_allows():
    source = (CHART / "templates" / "networkpolicies.yaml").read_text()
    documents = source.split("\n---\n")
    assert len(documents) >= 14
    for document in documents:
        assert "\n# " in "\n" + document.split("apiVersion:")[0], document[:200]


def test_network_policies_can_be_turned_off(helm):
    objects = render(helm, {"networkPolicy.enabled": "false"})
    assert not [o for o in objects if o["kind"] == "NetworkPolicy"]


def test_the_api_rule_carries_the_given_addresses_and_ports(helm):
    objects = render(helm, {**API_VALUES, "networkPolicy.apiServer.ports": "{6443}"})
    [driver_api] = [
        o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "shopstream-spark-driver-api"
    ]
    [rule] = driver_api["spec"]["egress"]
    assert rule == {
        "to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}],
        "ports": [{"protocol": "TCP", "port": 6443}],
    }


# -- the evaluator itself ------------------------------------------------------------------------


def test_the_evaluator_follows_the_documented_semantics():
    a = Pod("a", "x", {"app": "a"}, "10.0.0.1")
    b = Pod("b", "x", {"app": "b", "tier": "db"}, "10.0.0.2")
    c = Pod("c", "y", {"app": "a"}, "10.0.0.3")

    def policy(spec):
        return {"metadata": {"name": "p", "namespace": "x"}, "spec": spec}

    # no policy: everything open
    assert Cluster({"x": {}, "y": {}}, [a, b, c]).allows(a, b, 1)
    # policyTypes omitted: ingress only, egress too when there are egress rules
    only_ingress = policy({"podSelector": {"matchLabels": {"app": "b"}}})
    cluster = Cluster({"x": {}, "y": {}}, [a, b, c], [only_ingress])
    assert not cluster.allows(a, b, 1) and cluster.allows(b, a, 1)
    # a podSelector peer alone is the policy's namespace; with a namespaceSelector both must match
    same_namespace = policy(
        {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}],
        }
    )
    cluster.policies = [same_namespace]
    assert cluster.allows(a, b, 5432) and not cluster.allows(c, b, 5432)
    both = policy(
        {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}},
                            "podSelector": {"matchLabels": {"app": "other"}},
                        }
                    ]
                }
            ],
        }
    )
    cluster.policies = [both]
    assert not cluster.allows(c, b, 1)
    # rules add up; ports with protocol and endPort; NotIn matches a missing label
    egress = policy(
        {
            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.3/32"]}}],
                    "ports": [{"port": 5000, "endPort": 5010}],
                },
                {"ports": [{"protocol": "UDP", "port": 53}]},
            ],
        }
    )
    cluster.policies = [egress]
    assert selects(egress["spec"]["podSelector"], a.labels) and not selects(egress["spec"]["podSelector"], b.labels)
    assert cluster.allows(a, b, 5005) and not cluster.allows(a, b, 5011) and not cluster.allows(a, c, 5005)
    assert cluster.allows(a, c, 53, "UDP") and not cluster.allows(a, c, 53, "TCP")
    assert cluster.allows(b, c, 80)  # b is not selected: not isolated
