"""Go-built test tools (one wrapper module per tool pins its version; build.sh builds and caches),
and Go modules' source folders (e.g. the Spark operator's Helm chart and CRDs, pinned by its
wrapper module's go.mod)."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

HERE = Path(__file__).parent
BUILD = HERE / "build.sh"


def build(tool: str) -> Path:
    """The directory holding a tool's binaries: built from the Go module proxy once, then cached."""
    done = subprocess.run(["bash", str(BUILD), tool], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building {tool} failed:\n{done.stderr.strip()}")
    return Path(done.stdout.strip())


def requirements(tool: str) -> dict[str, str]:
    """The modules a tool's wrapper module requires directly (not `// indirect`): path -> version,
    read from tests/tools/<tool>/go.mod, the one place the pins live."""
    found: dict[str, str] = {}
    in_block = False
    for line in (HERE / tool / "go.mod").read_text().splitlines():
        code, _, comment = line.partition("//")
        words = code.split()
        if in_block:
            if words == [")"]:
                in_block = False
            elif len(words) == 2 and comment.strip() != "indirect":
                found[words[0]] = words[1]
        elif words[:1] == ["require"]:
            if words[1:] == ["("]:
                in_block = True
            elif len(words) == 3 and comment.strip() != "indirect":
                found[words[1]] = words[2]
    return found


@functools.cache
def go_module_dir(path: str, version: str) -> Path:
    """The extracted source folder of a Go module in the module cache (read-only), downloaded from
    the Go module proxy with `go mod download` the first time; e.g.
    go_module_dir(SPARK_OPERATOR_MODULE, SPARK_OPERATOR_VERSION) / "charts" / "spark-operator-chart"."""
    try:
        done = subprocess.run(
            ["go", "mod", "download", "-json", f"{path}@{version}"], capture_output=True, text=True, cwd=HERE
        )
    except FileNotFoundError:
        raise RuntimeError(f"reading {path}@{version} needs Go (https://go.dev/dl/); it is not on PATH") from None
    try:
        info = json.loads(done.stdout)
    except json.JSONDecodeError:
        info = {}
    if done.returncode != 0 or info.get("Error") or not info.get("Dir"):
        raise RuntimeError(f"downloading {path}@{version} failed: {info.get('Error') or done.stderr.strip()}")
    return Path(info["Dir"])


# The Kubeflow Spark operator: the module tests/tools/spark-operator/go.mod requires.
((SPARK_OPERATOR_MODULE, SPARK_OPERATOR_VERSION),) = requirements("spark-operator").items()


def spark_operator_chart() -> Path:
    """The Helm chart the Spark operator's module ships (its CRDs are in crds/)."""
    return go_module_dir(SPARK_OPERATOR_MODULE, SPARK_OPERATOR_VERSION) / "charts" / "spark-operator-chart"


# skaffold: the module tests/tools/skaffold/go.mod requires.
((SKAFFOLD_MODULE, SKAFFOLD_VERSION),) = requirements("skaffold").items()


def skaffold() -> Path:
    """The skaffold binary (`skaffold version` prints SKAFFOLD_VERSION, stamped by its ldflags)."""
    return build("skaffold") / "skaffold"
