"""The Kubernetes deployment, checked offline with the real helm binary: the chart lints and
renders for its default values and every skaffold profile; every object is valid for the kind
node's Kubernetes version; images are pinned; pods run as non-root with requests and limits;
secrets have no literal values; RBAC grants exactly what the launcher needs; skaffold.yaml,
the Dockerfiles and manifests/ agree with the repository and with schema.py."""

from __future__ import annotations

import json
import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from shopstream import schema
from shopstream.events.broker import DEFAULT_PARTITIONS
from tests.deploy.chart import CHART, KUBE_VERSION, REPO, manifest_objects, profile_values, render, skaffold_configs

pytestmark = pytest.mark.k8s

PROJECT_IMAGES = {"shopstream-spark", "shopstream-app"}
POD_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


@pytest.fixture(scope="session", params=sorted(profile_values()))
def rendered(request, helm) -> list[dict]:
    return render(helm, profile_values()[request.param])


def pod_specs(objects):
    """(object, pod spec) for every workload."""
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            yield obj, obj["spec"]["template"]["spec"]


def images_of(objects) -> list[str]:
    found = [c["image"] for _, spec in pod_specs(objects) for c in spec["containers"] + spec.get("initContainers", [])]
    found += [o["spec"]["image"] for o in objects if o["kind"] == "SparkApplication"]
    found += [
        json.loads(o["data"]["SHOPSTREAM_SPARK_APP_DEFAULTS"])["image"]
        for o in objects
        if o["kind"] == "ConfigMap" and "SHOPSTREAM_SPARK_APP_DEFAULTS" in o["data"]
    ]
    return found


def test_lint_strict(helm):
    done = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_profiles_are_the_ones_documented():
    assert set(profile_values()) == {"default", "minimal", "ci-render", "kind-local"}
    assert profile_values()["minimal"] == {"generator.enabled": False, "streaming.enabled": False}
    assert profile_values()["kind-local"] == {}  # only the images differ: skaffold's build sets them


def test_every_object_is_valid_for_the_kind_node_version(rendered):
    kinds = set()
    for obj in rendered:
        kinds.add(obj["kind"])
        if obj["apiVersion"].startswith("sparkoperator.k8s.io"):
            continue  # a custom resource: validated by the real API server in tests/kube
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    assert {
        "Secret",
        "ConfigMap",
        "Service",
        "Deployment",
        "StatefulSet",
        "Job",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "NetworkPolicy",
    } <= kinds


def test_the_streaming_application_has_what_the_project_relies_on(helm):
    [app] = [o for o in render(helm) if o["kind"] == "SparkApplication"]
    spec = app["spec"]
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    assert (spec["type"], spec["mode"], spec["sparkVersion"]) == ("Python", "cluster", "4.0.4")
    assert spec["mainApplicationFile"] == "local:///opt/shopstream/jobs/shopstream/__main__.py"
    assert spec["arguments"][0] == "streaming" and spec["arguments"][1:3] == ["--trigger", "10 seconds"]
    assert spec["restartPolicy"]["type"] == "Always"
    assert spec["driver"]["serviceAccount"] == "shopstream-spark"
    assert spec["executor"]["serviceAccount"] == "shopstream-spark-executor"
    for pod in (spec["driver"], spec["executor"]):
        assert pod["envFrom"] == [
            {"configMapRef": {"name": "shopstream-lake"}},
            {"secretRef": {"name": "shopstream-credentials"}},
        ]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 185
        assert pod["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["cores"] >= 1 and pod["coreLimit"] and re.fullmatch(r"[1-9][0-9]*[kmgt]", pod["memory"])
        assert "coreRequest" not in pod  # whole cores unless a small node asks for less
    [lake] = [o for o in render(helm) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "shopstream-lake"]
    assert lake["data"]["SHOPSTREAM_CHECKPOINT_DIR"].startswith("s3a://shopstream/")
    # S3A is configured by the job from the lake settings (shopstream.lake), the same for every job
    assert lake["data"]["SHOPSTREAM_S3_ENDPOINT"] == "http://shopstream-minio:9000"
    assert not any(key.startswith("spark.hadoop.fs.s3a") for key in spec.get("sparkConf", {}))


def test_launched_applications_share_the_streaming_applications_spec(helm):
    """One SparkApplication spec: the launcher's defaults are the chart's, key for key."""
    objects = render(
        helm,
        {
            "spark.driverCoreRequest": "250m",
            "spark.executorCoreRequest": "200m",
            "spark.sparkConf.spark\\.scheduler\\.mode": "FAIR",
        },
    )
    [app] = [o for o in objects if o["kind"] == "SparkApplication"]
    [launcher] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "shopstream-launcher"]
    defaults = json.loads(launcher["data"]["SHOPSTREAM_SPARK_APP_DEFAULTS"])
    assert defaults["sparkConf"] == {"spark.scheduler.mode": "FAIR"} == app["spec"]["sparkConf"]
    assert (defaults["driver"]["coreRequest"], defaults["executor"]["coreRequest"]) == ("250m", "200m")
    for key in ("image", "imagePullPolicy", "sparkVersion"):
        assert defaults[key] == app["spec"][key], key
    for role in ("driver", "executor"):
        for key, value in defaults[role].items():
            assert app["spec"][role][key] == value, (role, key)
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    assert accounts["shopstream-spark-executor"]["automountServiceAccountToken"] is False
    assert "automountServiceAccountToken" not in accounts["shopstream-spark"]  # the driver creates executors


def test_one_registry_value_moves_every_image(helm):
    objects = render(helm, {"images.registry": "mirror.internal:5000/shop"})
    images = images_of(objects)
    assert len(images) >= 5 and all(i.startswith("mirror.internal:5000/shop/") for i in images), images
    assert "mirror.internal:5000/shop/minio/minio:" in " ".join(images)
    # without it, each image keeps its own registry
    assert {i.split("/")[0] for i in images_of(render(helm))} >= {"quay.io", "docker.io", "shopstream-spark:dev"}


def test_the_generator_waits_for_kafka_on_a_cold_cluster(helm):
    [generator] = [
        o
        for o in render(helm, {"generator.connectTimeoutSeconds": 900})
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "shopstream-generator"
    ]
    args = generator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--connect-timeout") + 1] == "900"


def test_minimal_profile_leaves_out_generator_and_stream(helm):
    objects = render(helm, profile_values()["minimal"])
    names = {o["metadata"]["name"] for o in objects}
    assert "shopstream-generator" not in names and "shopstream-streaming" not in names
    assert "shopstream-minio" in names and "shopstream-postgres" in names


def test_images_are_pinned(rendered):
    for image in images_of(rendered):
        repository = image.split("@")[0].rsplit(":", 1)[0]
        tag = image.split("@")[0].rsplit(":", 1)[1]
        assert tag and tag != "latest", image
        if repository not in PROJECT_IMAGES:  # third-party: tag and digest
            assert re.search(r":[^:@/]+@sha256:[0-9a-f]{64}$", image), image


def test_dockerfiles_pin_their_base_images():
    for dockerfile in (REPO / "images").glob("*/Dockerfile"):
        bases = re.findall(r"^ARG \w+_IMAGE=(\S+)", dockerfile.read_text(), re.M)
        froms = re.findall(r"^FROM (\S+)", dockerfile.read_text(), re.M)
        assert bases and all(f.startswith("${") or f in bases for f in froms), dockerfile
        for base in bases:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), (dockerfile, base)
            assert ":latest@" not in base


def test_every_container_is_non_root_with_requests_and_limits(rendered):
    for obj, spec in pod_specs(rendered):
        pod_context = spec.get("securityContext", {})
        for container in spec["containers"] + spec.get("initContainers", []):
            context = {**pod_context, **container.get("securityContext", {})}
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            assert context.get("runAsNonRoot") is True and context.get("runAsUser", 1) != 0, where
            assert context.get("allowPrivilegeEscalation") is False, where
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container.get("resources", {}).get(part, {})), where


def test_secrets_are_generated_not_defaulted(helm):
    first = {o["metadata"]["name"]: o for o in render(helm) if o["kind"] == "Secret"}
    second = {o["metadata"]["name"]: o for o in render(helm) if o["kind"] == "Secret"}
    assert set(first) == {"shopstream-admin-credentials", "shopstream-credentials", "shopstream-dagster-postgresql"}
    for name, secret in first.items():
        assert "stringData" not in secret
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        for key, value in secret["data"].items():
            if key == "AWS_ACCESS_KEY_ID":
                continue  # the lake user's name (minio.lakeUser), not a secret
            assert value != second[name]["data"][key], f"{name}.{key} is the same in two installs: a literal"
            assert len(__import__("base64").b64decode(value)) >= 20
    # each role has its own password (tests/deploy/test_credentials.py checks the rest)
    assert (
        first["shopstream-credentials"]["data"]["SHOPSTREAM_CATALOG_PASSWORD"]
        != first["shopstream-dagster-postgresql"]["data"]["postgresql-password"]
    )
    values = (CHART / "values.yaml").read_text().lower()
    assert not re.search(r"(password|secret|accesskey)\w*:\s*\S", values)


def test_rbac_grants_exactly_what_the_launcher_needs(helm):
    roles = {o["metadata"]["name"]: o for o in render(helm) if o["kind"] == "Role"}
    launcher = {
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"])), tuple(r.get("resourceNames", ())))
        for r in roles["shopstream-spark-launcher"]["rules"]
    }
    assert launcher == {
        (("sparkoperator.k8s.io",), ("sparkapplications",), ("create", "delete", "get", "list", "watch"), ()),
        (("",), ("pods",), ("get",), ()),
        (("",), ("pods/log",), ("get",), ()),
        (("",), ("serviceaccounts",), ("get",), ("shopstream-spark",)),
    }
    bindings = {o["metadata"]["name"]: o for o in render(helm) if o["kind"] == "RoleBinding"}
    assert bindings["shopstream-spark-launcher"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "dagster", "namespace": "shopstream"}
    ]
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]["name"]
            assert "secrets" not in rule["resources"]


def test_values_schema_refuses_bad_values(helm):
    command = [str(helm), "template", "x", str(CHART), "--kube-version", KUBE_VERSION]
    for bad in (
        "images.minio.tag=latest",
        "streaming.driver.memory=lots",
        "streaming.trigger=often",
        "images.postgres.digest=sha1:abc",
        "images.registry=Not A Registry",
        "spark.driverCoreRequest=lots",
        "podSecurityContext.runAsNonRoot=false",
        "unknownKey=1",
    ):
        done = subprocess.run([*command, "--set", bad], capture_output=True, text=True)
        assert done.returncode != 0 and "values don't meet the specifications of the schema" in done.stderr, bad
    schema_doc = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema_doc["properties"]) == set(yaml.safe_load((CHART / "values.yaml").read_text()))


# -- skaffold.yaml, Dockerfiles, manifests -----------------------------------------------------


def test_skaffold_configs_are_consistent():
    configs = {c["metadata"]["name"]: c for c in skaffold_configs()}
    assert list(configs) == ["operators", "kafka", "platform"]
    for config in configs.values():
        assert config["apiVersion"] == "skaffold/v4beta13" and config["kind"] == "Config"
        for required in config.get("requires", []):
            assert set(required["configs"]) <= set(configs)
        assert {p["name"] for p in config.get("profiles", [])} == {"minimal", "ci-render", "kind-local"}
        for release in config.get("deploy", {}).get("helm", {}).get("releases", []):
            if "chartPath" in release:
                assert (REPO / release["chartPath"] / "Chart.yaml").exists()
            else:
                assert release["repo"].startswith("https://") and re.fullmatch(r"\d+\.\d+\.\d+", release["version"])
            for values_file in release.get("valuesFiles", []):
                assert (REPO / values_file).exists(), values_file
        for path in config.get("manifests", {}).get("rawYaml", []):
            assert (REPO / path).exists(), path
    versions = {
        r["name"]: r["version"]
        for c in configs.values()
        for r in c.get("deploy", {}).get("helm", {}).get("releases", [])
        if "version" in r
    }
    assert versions["dagster"] == "1.13.27"  # the same as the dagster pin in pyproject.toml
    assert versions["spark-operator"].startswith("2.5.") and versions["strimzi"].startswith("1.2.")
    assert "dagster==1.13.27" in (REPO / "pyproject.toml").read_text()
    # every artifact is used by a release, through the values that carry it
    platform = configs["platform"]
    templates = json.dumps([r.get("setValueTemplates", {}) for r in platform["deploy"]["helm"]["releases"]])
    for artifact in platform["build"]["artifacts"]:
        key = artifact["image"].replace("-", "_")
        assert f"IMAGE_REPO_{key}" in templates and f"IMAGE_TAG_{key}" in templates, artifact["image"]
        assert (REPO / artifact["context"] / artifact["docker"]["dockerfile"]).exists()
    ports = {p["localPort"] for p in platform["portForward"]}
    assert ports == {3000, 9001}


def dockerignore_allows(path: str) -> bool:
    allowed = [
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    return any(path == a or path.startswith(a + "/") for a in allowed)


def test_every_dockerfile_copies_paths_that_exist_and_reach_the_build():
    for dockerfile in (REPO / "images").glob("*/Dockerfile"):
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile.read_text(), re.M):
            *sources, _ = line.split()
            for source in sources:
                source = source.rstrip("/")
                assert (REPO / source).exists(), (dockerfile, source)
                assert dockerignore_allows(source), (dockerfile, source, ".dockerignore excludes it")


def test_the_dagster_values_point_at_the_platform_charts_names(helm):
    values = yaml.safe_load((REPO / "charts" / "values" / "dagster.yaml").read_text())
    names = {o["metadata"]["name"] for o in render(helm)}
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "dagster_repo.definitions"]
    for ref in deployment["envConfigMaps"] + deployment["envSecrets"]:
        assert ref["name"] in names
    assert values["global"]["postgresqlSecretName"] in names
    assert values["postgresql"]["postgresqlHost"] in names
    assert values["global"]["serviceAccountName"] == "dagster"
    # what the platform chart knows of the Dagster release (its roles, network policies, notes)
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["postgresql"]["postgresqlUsername"] == chart["lake"]["dagsterUser"]
    assert values["postgresql"]["postgresqlDatabase"] == chart["lake"]["dagsterDatabase"]
    assert (deployment["name"], deployment["port"]) == (
        chart["dagster"]["codeLocation"],
        chart["dagster"]["codeServerPort"],
    )
    webserver_port = (
        values.get("dagsterWebserver", {}).get("service", {}).get("port", 80)
    )  # the Dagster chart's default: 80
    assert webserver_port == chart["dagster"]["webserverPort"]
    skaffold_release = [
        r
        for c in skaffold_configs()
        for r in c.get("deploy", {}).get("helm", {}).get("releases", [])
        if r.get("valuesFiles") == ["charts/values/dagster.yaml"]
    ]
    assert [r["name"] for r in skaffold_release] == [chart["dagster"]["releaseName"]]


def test_kafka_topics_match_schema_py():
    topics = {o["metadata"]["name"]: o for o in manifest_objects() if o["kind"] == "KafkaTopic"}
    assert set(topics) == set(schema.ALL_TOPICS)
    for name, topic in topics.items():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "shopstream-kafka"
        compacted = name in schema.COMPACTED_TOPICS
        assert topic["spec"]["config"]["cleanup.policy"] == ("compact" if compacted else "delete")
        assert topic["spec"]["partitions"] == (1 if compacted else DEFAULT_PARTITIONS)


def test_kafka_is_single_node_kraft_with_ephemeral_storage(helm):
    objects = {o["kind"]: o for o in manifest_objects() if o["kind"] in ("Kafka", "KafkaNodePool")}
    pool, kafka = objects["KafkaNodePool"], objects["Kafka"]
    assert pool["apiVersion"] == kafka["apiVersion"] == "kafka.strimzi.io/v1"
    assert pool["spec"]["replicas"] == 1 and set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert {v["type"] for v in pool["spec"]["storage"]["volumes"]} == {"ephemeral"}
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    assert kafka["metadata"]["name"] == chart["kafka"]["clusterName"]  # the network policies select its pods
    [listener] = kafka["spec"]["kafka"]["listeners"]
    [lake] = [o for o in render(helm) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "shopstream-lake"]
    assert (
        lake["data"]["SHOPSTREAM_KAFKA_BOOTSTRAP"] == f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    )


def test_the_topic_operator_puts_no_finalizers_on_kafka_topics():
    [kafka] = [o for o in manifest_objects() if o["kind"] == "Kafka"]
    entity_operator = kafka["spec"]["entityOperator"]
    assert entity_operator["topicOperator"] == {}
    env = entity_operator["template"]["topicOperatorContainer"]["env"]
    assert env == [{"name": "STRIMZI_USE_FINALIZERS", "value": "false"}]


def test_kind_config():
    config = yaml.safe_load((REPO / "manifests" / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    assert [n["role"] for n in config["nodes"]] == ["control-plane"]  # kindctl and the laptop case: one node
    assert {n["image"] for n in config["nodes"]} == {f"kindest/node:v{KUBE_VERSION}"}
