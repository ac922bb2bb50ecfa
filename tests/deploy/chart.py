"""The platform chart as the tests see it: the helm binary (built from the Go module proxy), the
values of each skaffold profile, rendering, and the objects of manifests/; and the Dagster release
of charts/values/dagster.yaml, rendered by the cluster stage's stand-in of the official chart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.tools import build

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "shopstream"
DAGSTER_CHART = REPO / "tests" / "cluster" / "charts" / "dagster"
DAGSTER_VALUES = REPO / "charts" / "values" / "dagster.yaml"
KUBE_VERSION = "1.35.0"  # kindest/node in manifests/kind-config.yaml


@pytest.fixture(scope="session")
def helm() -> Path:
    return build("helm") / "helm"


def skaffold_configs() -> list[dict]:
    return list(yaml.safe_load_all((REPO / "skaffold.yaml").read_text()))


def profile_values() -> dict[str, dict]:
    """The --set values each skaffold profile gives the platform chart (default: none)."""
    [platform] = [c for c in skaffold_configs() if c["metadata"]["name"] == "platform"]
    found = {"default": {}}
    for profile in platform["profiles"]:
        values: dict = {}
        for patch in profile.get("patches", []):
            if patch["op"] == "add" and patch["path"] == "/deploy/helm/releases/0/setValues":
                values.update(patch["value"])
        found[profile["name"]] = values
    return found


def render(helm: Path, values: dict | None = None, *extra: str, namespace: str = "shopstream") -> list[dict]:
    command = [
        str(helm),
        "template",
        "shopstream",
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ]
    for key, value in (values or {}).items():
        command += ["--set", f"{key}={value}"]
    done = subprocess.run([*command, *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def render_dagster(helm: Path, namespace: str = "shopstream") -> list[dict]:
    done = subprocess.run(
        [
            str(helm),
            "template",
            "dagster",
            str(DAGSTER_CHART),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            "-f",
            str(DAGSTER_VALUES),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def manifest_objects() -> list[dict]:
    return [
        d
        for path in ("kafka.yaml", "topics.yaml")
        for d in yaml.safe_load_all((REPO / "manifests" / path).read_text())
        if d
    ]
