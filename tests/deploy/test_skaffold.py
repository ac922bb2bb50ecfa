"""skaffold.yaml under the pinned skaffold (built from its Go module): every profile parses (and a
misspelt field would not); the Dagster release upgrades on a new image; the kafka config waits for a
Ready Kafka cluster before the platform config deploys, and its hook commands say exactly that;
helm has 15 minutes per release; Strimzi runs in its own namespace watching the platform's; the
kind-local profile is the platform chart alone, built from base images the environment names, and
`skaffold render` gives exactly the chart's objects (and ci-render the chart's and manifests/')."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.chart import REPO, manifest_objects, profile_values, render
from tests.tools import SKAFFOLD_VERSION

pytestmark = pytest.mark.k8s

CONFIGS = ["operators", "kafka", "platform"]
PROFILES = ["minimal", "ci-render", "kind-local"]
HELM_TIMEOUT = "15m"


def by_name(configs: list[dict]) -> dict[str, dict]:
    return {c["metadata"]["name"]: c for c in configs}


def releases(config: dict) -> dict[str, dict]:
    return {r["name"]: r for r in config["deploy"].get("helm", {}).get("releases", [])}


def kafka_cluster() -> dict:
    [kafka] = [o for o in manifest_objects() if o["kind"] == "Kafka"]
    return kafka


def run_hook(hook: dict, tmp_path) -> list[dict]:
    """Runs a host hook's command as skaffold would (its environment carries the kube context) with
    a kubectl that records its arguments and input; returns those calls."""
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(
        f"#!{sys.executable}\n"
        + (
            "import json, os, sys\n"
            "with open(os.environ['KUBECTL_CALLS'], 'a') as calls:\n"
            "    calls.write(json.dumps({'args': sys.argv[1:], 'stdin': sys.stdin.read()}) + '\\n')\n"
            "if sys.argv[-2:] == ['-o', 'yaml']:\n"
            "    name = sys.argv[sys.argv.index('namespace') + 1]\n"
            "    print('apiVersion: v1\\nkind: Namespace\\nmetadata:\\n  name: ' + name)\n"
        )
    )
    fake.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {
        "PATH": f"{fake.parent}:/usr/bin:/bin",
        "SKAFFOLD_KUBE_CONTEXT": "kind-shopstream",
        "KUBECTL_CALLS": str(calls),
    }
    done = subprocess.run(hook["host"]["command"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in calls.read_text().splitlines()]


def without_generated(objects: list[dict]) -> list[dict]:
    """The objects minus the values the chart generates afresh on every render (credentials), by kind
    and name."""
    kept = []
    for obj in objects:
        if obj["kind"] == "Secret":
            obj = {**obj, "data": sorted(obj.get("data", {})), "stringData": sorted(obj.get("stringData", {}))}
        kept.append(obj)
    return sorted(kept, key=lambda o: (o["kind"], o["metadata"]["name"]))


# -- the pinned skaffold parses the file ----------------------------------------------------------


def test_skaffold_is_the_pinned_release_and_speaks_the_files_schema(skaffold):
    info = json.loads(skaffold.run("version", "--output", "{{json .}}").stdout)
    assert info["Version"] == SKAFFOLD_VERSION  # stamped by tests/tools/skaffold/ldflags, pinned by its go.mod
    assert {c["apiVersion"] for c in skaffold.configs()} == {info["ConfigVersion"]} == {"skaffold/v4beta13"}


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_every_profile_parses_and_deploys_the_configs_in_order(skaffold, profile):
    configs = skaffold.configs(*(["-p", profile] if profile else []))
    assert [c["metadata"]["name"] for c in configs] == CONFIGS


def test_the_pinned_skaffold_refuses_a_misspelt_field(skaffold, tmp_path):
    text = (REPO / "skaffold.yaml").read_text()
    assert text.count("upgradeOnChange:") == 1
    misspelt = tmp_path / "skaffold.yaml"
    misspelt.write_text(text.replace("upgradeOnChange:", "upgradeOnChanges:"))
    done = skaffold.run("diagnose", "--yaml-only", "-f", str(misspelt), check=False)
    assert done.returncode != 0 and "field upgradeOnChanges not found in type latest.HelmRelease" in done.stderr


# -- what skaffold dev does on a cold cluster --------------------------------------------------------


def test_the_dagster_release_is_upgraded_with_every_new_app_image(skaffold):
    configs = by_name(skaffold.configs())
    dagster = releases(configs["platform"])["dagster"]
    assert dagster["remoteChart"] == "dagster" and dagster["upgradeOnChange"] is True
    assert (
        dagster["setValueTemplates"]["dagster-user-deployments.deployments[0].image.tag"]
        == "{{.IMAGE_TAG_shopstream_app}}"
    )
    # the operators take no built image: installed once, left alone by the dev loop (skaffold's default)
    assert all("upgradeOnChange" not in r for r in releases(configs["operators"]).values())


def test_the_kafka_config_waits_for_a_ready_cluster_before_the_platform_deploys(skaffold, tmp_path):
    configs = skaffold.configs("-m", "platform")  # the platform config pulls in what it requires, first
    assert [c["metadata"]["name"] for c in configs] == CONFIGS
    kafka_config = configs[1]
    assert kafka_config["manifests"]["rawYaml"] == [str(REPO / "manifests" / f) for f in ("kafka.yaml", "topics.yaml")]
    hooks = kafka_config["deploy"]["kubectl"]["hooks"]
    assert list(hooks) == ["after"]  # after the apply (and skaffold's status check), before the next config
    [hook] = hooks["after"]
    [call] = run_hook(hook, tmp_path)
    cluster = kafka_cluster()
    assert call["args"] == [
        "--context",
        "kind-shopstream",
        "-n",
        cluster["metadata"]["namespace"],
        "wait",
        f"kafka/{cluster['metadata']['name']}",
        "--for=condition=Ready",
        f"--timeout={HELM_TIMEOUT}",
    ]


def test_the_namespace_both_operators_put_rbac_into_exists_before_their_releases(skaffold, tmp_path):
    operators = by_name(skaffold.configs())["operators"]
    hooks = operators["deploy"]["helm"]["hooks"]
    assert list(hooks) == ["before"]
    [hook] = hooks["before"]
    create, apply = run_hook(hook, tmp_path)
    assert create["args"] == [
        "--context",
        "kind-shopstream",
        "create",
        "namespace",
        "shopstream",
        "--dry-run=client",
        "-o",
        "yaml",
    ]
    assert apply["args"] == ["--context", "kind-shopstream", "apply", "-f", "-"]  # idempotent: also on a second run
    assert yaml.safe_load(apply["stdin"]) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "shopstream"},
    }


def test_helm_has_fifteen_minutes_for_every_release(skaffold):
    configs = by_name(skaffold.configs())
    for name in ("operators", "platform"):
        flags = configs[name]["deploy"]["helm"]["flags"]
        assert flags["install"] == flags["upgrade"] == ["--timeout", HELM_TIMEOUT], name
    waits = [r["name"] for c in configs.values() for r in releases(c).values() if r.get("wait")]
    assert waits == ["strimzi", "spark-operator", "shopstream"]


def test_strimzi_runs_in_its_own_namespace_and_watches_the_platforms(skaffold):
    configs = by_name(skaffold.configs())
    strimzi = releases(configs["operators"])["strimzi"]
    assert strimzi["namespace"] == "strimzi" and strimzi["createNamespace"] is True
    [values_file] = strimzi["valuesFiles"]
    watched = yaml.safe_load(Path(values_file).read_text())["watchNamespaces"]
    platform = {r["namespace"] for r in releases(configs["platform"]).values()}
    manifests = {o["metadata"]["namespace"] for o in manifest_objects()}
    assert watched == ["shopstream"] and platform == manifests == {"shopstream"}
    assert configs["kafka"]["deploy"]["kubectl"]["defaultNamespace"] == "shopstream"
    chart = yaml.safe_load((REPO / "charts" / "shopstream" / "values.yaml").read_text())
    assert chart["kafka"]["operatorNamespace"] == strimzi["namespace"]  # the chart's network policies admit it


# -- kind-local: the platform chart alone, from local base images ----------------------------------


def base_images(registry) -> dict[str, str]:
    return {
        "MAVEN_IMAGE": f"{registry.host}/shopstream-test/maven:1",
        "SPARK_IMAGE": f"{registry.host}/shopstream-test/spark:2",
        "PYTHON_IMAGE": f"{registry.host}/shopstream-test/python:3",
    }


def test_kind_local_selects_the_platform_chart_alone(skaffold):
    [platform] = skaffold.configs("-m", "platform", "-p", "kind-local")
    assert platform["metadata"]["name"] == "platform" and "requires" not in platform
    assert [(r["name"], r["chartPath"]) for r in releases(platform).values()] == [
        ("shopstream", str(REPO / "charts" / "shopstream"))
    ]
    assert [p["resourceName"] for p in platform["portForward"]] == ["shopstream-minio"]
    for artifact in platform["build"]["artifacts"]:
        dockerfile = (REPO / artifact["docker"]["dockerfile"]).read_text()
        declared = set(re.findall(r"^ARG (\w+_IMAGE)=", dockerfile, re.M))
        assert set(artifact["docker"]["buildArgs"]) == declared and declared, artifact["image"]
    # Without -m, the other configs take the profile too and deploy nothing.
    others = by_name(skaffold.configs("-p", "kind-local"))
    assert others["operators"]["deploy"]["helm"] == {"concurrency": 1}
    assert "manifests" not in others["kafka"] and others["kafka"]["deploy"]["kubectl"] == {}


def test_kind_local_builds_from_the_base_images_the_environment_names(skaffold, registry):
    registry.asked.clear()
    tags = skaffold.tags("-m", "platform", "-p", "kind-local", env=base_images(registry))
    # skaffold read both Dockerfiles' FROM lines with the variables expanded: it looked those up
    assert sorted(set(registry.asked)) == [
        "shopstream-test/maven:1",
        "shopstream-test/python:3",
        "shopstream-test/spark:2",
    ]
    assert set(tags) == {"shopstream-spark", "shopstream-app"}
    assert all(re.fullmatch(rf"{image}:[0-9a-f]{{64}}", tag) for image, tag in tags.items())  # inputDigest


def test_kind_local_names_a_missing_base_image(skaffold, registry):
    env = {k: v for k, v in base_images(registry).items() if k != "SPARK_IMAGE"}
    done = skaffold.run("build", "--dry-run", "-m", "platform", "-p", "kind-local", "-v", "debug", env=env)
    assert "kind-local: SPARK_IMAGE is not set" in done.stderr
    assert "shopstream-spark -> shopstream-spark:latest" in done.stdout  # a tag the chart's schema refuses


def test_kind_local_renders_the_platform_chart_with_the_built_images(skaffold, registry, helm):
    env = base_images(registry)
    tags = skaffold.tags("-m", "platform", "-p", "kind-local", env=env)
    rendered = skaffold.render("-m", "platform", "-p", "kind-local", "--digest-source=tag", env=env)
    values = {
        f"images.{key}.tag": tags[image].partition(":")[2]
        for key, image in (("spark", "shopstream-spark"), ("app", "shopstream-app"))
    }
    assert without_generated(rendered) == without_generated(render(helm, values))


def test_ci_render_renders_the_chart_and_manifests_offline(skaffold, helm):
    rendered = skaffold.render("-m", "platform", "-p", "ci-render")
    expected = render(helm, profile_values()["ci-render"]) + manifest_objects()
    assert without_generated(rendered) == without_generated(expected)
    assert {o["kind"] for o in rendered} >= {"SparkApplication", "Kafka", "KafkaTopic", "StatefulSet"}
