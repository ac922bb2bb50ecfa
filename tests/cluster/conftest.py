"""The cluster stage's session: one kind cluster with everything installed, deleted at the end
(SHOPSTREAM_KEEP_CLUSTER=1 keeps it for debugging). When a test failed, pod logs, events and
SparkApplication status are saved and their folder is printed."""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml

from tests.cluster.images import build_images
from tests.cluster.stage import HERE, ClusterStage, MemorySampler, split_image

# Lines for the end of the pytest run: times, peak memory, workarounds applied, where diagnostics are.
REPORT: list[str] = []

# What the cluster runs, by the names of tests/cluster/images.py.
CLUSTER_IMAGES = ("spark-operator", "kafka", "minio", "postgres", "spark", "app")


# The code server: the health sensor looks every 20 s instead of every 5 minutes, so a test sees its
# alert soon; a sliver of CPU, like the rest of Dagster here (values/dagster.yaml).
DAGSTER_TEST_VALUES = (
    "dagster-user-deployments.deployments[0].env[0].name=SHOPSTREAM_HEALTH_SENSOR_INTERVAL_SECONDS",
    "dagster-user-deployments.deployments[0].env[0].value=20",
    "dagster-user-deployments.deployments[0].resources.requests.cpu=20m",
    "dagster-user-deployments.deployments[0].resources.requests.memory=256Mi",
)


def chart_image_values(images: dict[str, str]) -> dict:
    """The platform chart's images moved to the ones built here (registry/repository:tag)."""

    def values(ref: str) -> dict:
        registry, repository, tag = split_image(ref)
        return {"registry": registry, "repository": repository, "tag": tag, "digest": ""}

    return {"images": {name: values(images[name]) for name in ("spark", "app", "minio", "postgres")}}


# Package scope: the cluster goes away after the last test of tests/cluster, not at the end of the
# whole run, so its pods do not compete with the other tests for the CPUs.
@pytest.fixture(scope="package")
def cluster(tmp_path_factory, request):
    workdir = tmp_path_factory.mktemp("cluster")
    started = time.monotonic()
    timings: dict[str, float] = {}
    sampler = None
    stage = ClusterStage(workdir)
    try:
        mark = time.monotonic()
        stage.up()  # first: on a new machine this also starts the Docker engine the image builds need
        timings["cluster_up"] = time.monotonic() - mark
        sampler = MemorySampler(stage).start()
        mark = time.monotonic()
        images = build_images(list(CLUSTER_IMAGES))
        timings["images"] = time.monotonic() - mark
        mark = time.monotonic()
        stage.load(*(images[name] for name in CLUSTER_IMAGES))
        timings["load_images"] = time.monotonic() - mark
        mark = time.monotonic()
        stage.install_operator(images["spark-operator"])
        stage.install_kafka(images["kafka"])
        overrides = workdir / "images.yaml"
        overrides.write_text(yaml.safe_dump(chart_image_values(images)))
        stage.values_files = [HERE / "values" / "platform.yaml", overrides]
        stage.install_platform(stage.values_files)
        stage.install_dagster(images["app"], *DAGSTER_TEST_VALUES)
        timings["install"] = time.monotonic() - mark
        stage.images = images
        yield stage
    except BaseException:
        request.session.testsfailed += 1
        raise
    finally:
        if sampler is not None:
            memory = sampler.stop()
            (workdir / "memory.json").write_text(json.dumps(memory, indent=2))
            pods = memory["pods_peak_mib"]
            shown = [pod for pod in pods if pod.startswith("spark-operator/")] + list(pods)[:10]
            top = ", ".join(f"{pod} {pods[pod]} MiB" for pod in dict.fromkeys(shown))
            REPORT.append(
                f"cluster stage: node peak {memory['node_peak_mib']} MiB; peak per pod: {top} "
                f"(all in {workdir / 'memory.json'}); least free on Docker's disk "
                f"{memory['docker_disk_free_least_gib']} GiB"
            )
        timings["total"] = time.monotonic() - started
        REPORT.append(
            "cluster stage times (s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
            + f"; Spark operator rerun workaround applied {stage.nudges} time(s)"
        )
        if request.session.testsfailed:
            where = stage.dump(workdir / "diagnostics")
            REPORT.append(f"cluster stage: diagnostics (pod logs, events, SparkApplications) in {where}")
        if os.environ.get("SHOPSTREAM_KEEP_CLUSTER") == "1":
            REPORT.append(f"cluster stage: kept the cluster: kubectl --kubeconfig {stage.kubeconfig} get pods -A")
        else:
            stage.down()


def pytest_terminal_summary(terminalreporter):
    for line in REPORT:
        terminalreporter.write_line(line)
