"""The cluster test stage: a real kind cluster with the real Spark operator, the platform chart and a
Kafka broker, driven with kubectl and helm as a user drives them.

On machines without a container registry the cluster comes from kindctl (../shared/kind: it builds
the node image locally and guards egress); elsewhere from plain `kind` with the node image named in
manifests/kind-config.yaml. Every image is built here (tests/cluster/images.py) and loaded into the
node, so nothing is pulled.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from dagster_repo.kube import spark_application as sa
from tests.cluster.images import image_size
from tests.tools import build, spark_operator_chart

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
KIND_CONFIG = REPO / "manifests" / "kind-config.yaml"
NAMESPACE = "shopstream"
OPERATOR_NAMESPACE = "spark-operator"
RELEASE = "shopstream"
# Dagster: the release of skaffold.yaml with its values file, installed from the stand-in chart
# (tests/cluster/charts/dagster) because the official one cannot be fetched here.
DAGSTER_RELEASE = "dagster"
DAGSTER_CHART = HERE / "charts" / "dagster"
DAGSTER_VALUES = REPO / "charts" / "values" / "dagster.yaml"
DAGSTER_WEBSERVER = "dagster-dagster-webserver"
CLUSTER = os.environ.get("SHOPSTREAM_KIND_CLUSTER", "shopstream-e2e")
# A cold cluster pulls nothing but starts many JVMs on two cores: give Helm room.
HELM_TIMEOUT = "15m"
# Loading images takes this many times their size in free disk: kind saves them to a tar under the
# temp folder, and the node's containerd keeps their layers and unpacks them (measured: 1.3 times
# their size on the node, beside the tar).
LOAD_DISK_FACTOR = 2.5
GIB = 1024**3


def kindctl_path() -> Path | None:
    """kindctl, when this machine has it (SHOPSTREAM_KINDCTL, else ../shared/kind/kindctl)."""
    found = Path(os.environ.get("SHOPSTREAM_KINDCTL") or REPO.parent / "shared" / "kind" / "kindctl")
    return found if found.is_file() else None


def split_image(ref: str) -> tuple[str, str, str]:
    """(registry, repository, tag) of `[registry/]repository:tag`; the first path part is a registry
    only when it looks like a host (has a dot or a port)."""
    name, _, tag = ref.rpartition(":")
    first, _, rest = name.partition("/")
    return (first, rest, tag) if rest and ("." in first or ":" in first) else ("", name, tag)


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class StageError(RuntimeError):
    pass


class ClusterStage:
    """One kind cluster for the session, with helpers to run kubectl and helm against it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self.kindctl = kindctl_path()
        self.env = dict(os.environ)
        self.helm_bin = str(build("helm") / "helm")
        self.context = f"kind-{CLUSTER}"
        self.nudges = 0
        self._stuck_since: dict[str, float] = {}

    # -- the cluster -------------------------------------------------------------------------

    def up(self) -> ClusterStage:
        started = time.monotonic()
        if self.kindctl:
            exports = self._run([str(self.kindctl), "env"]).stdout
            for name, value in re.findall(r"^export (\w+)=(.*)$", exports, re.M):
                self.env[name] = os.path.expandvars(value.strip("'\"")).replace("$PATH", self.env.get("PATH", ""))
            if os.environ.get("SHOPSTREAM_KEEP_CLUSTER") != "1":
                # A fresh cluster every session: one left over (or dead after a Docker restart) is removed.
                self._run([str(self.kindctl), "down", CLUSTER], check=False)
            log(f"kindctl up {CLUSTER} (builds the node image the first time) ...")
            self.context = (
                self._run([str(self.kindctl), "up", CLUSTER, "--config", str(KIND_CONFIG)], stderr=None)
                .stdout.strip()
                .splitlines()[-1]
            )
        else:
            if not shutil.which("kind", path=self.env["PATH"]):
                raise StageError("the cluster stage needs kind (https://kind.sigs.k8s.io) or kindctl on this machine")
            clusters = self._run(["kind", "get", "clusters"]).stdout.split()
            if CLUSTER not in clusters:
                self._run(
                    ["kind", "create", "cluster", "--name", CLUSTER, "--config", str(KIND_CONFIG), "--wait", "5m"],
                    stderr=None,
                )
        config = self._run(["kubectl", "config", "view", "--minify", "--flatten", "--context", self.context]).stdout
        self.kubeconfig.write_text(config)
        log(f"cluster {self.context} ready in {time.monotonic() - started:.0f}s")
        return self

    def down(self) -> None:
        if self.kindctl:
            self._run([str(self.kindctl), "down", CLUSTER], check=False)
        else:
            self._run(["kind", "delete", "cluster", "--name", CLUSTER], check=False)

    def load(self, *images: str) -> None:
        """Into the node, after checking that Docker's disk has room: when it has not, containerd's
        import fails half-way with an error that does not say so."""
        started = time.monotonic()
        size = sum(image_size(ref) for ref in images)
        need = LOAD_DISK_FACTOR * size
        free = self.docker_disk_free()
        if free is not None and free < need:
            raise StageError(
                f"loading {len(images)} images ({size / GIB:.1f} GiB) into the kind node needs "
                f"about {need / GIB:.1f} GiB free on Docker's disk; {free / GIB:.1f} GiB is free. Free some "
                "(`docker image prune`, `docker builder prune`) and run again."
            )
        if self.kindctl:
            self._run([str(self.kindctl), "load", CLUSTER, *images], stderr=None)
        else:
            self._run(["kind", "load", "docker-image", "--name", CLUSTER, *images], stderr=None)
        log(f"loaded {len(images)} images in {time.monotonic() - started:.0f}s")

    @functools.cached_property
    def docker_root(self) -> Path | None:
        """The folder of Docker's data (the node's containerd lives there too); None for an engine on
        another machine."""
        root = Path(self._run(["docker", "info", "-f", "{{.DockerRootDir}}"]).stdout.strip())
        return root if root.is_dir() else None

    def docker_disk_free(self) -> int | None:
        """Free bytes on the filesystem of Docker's data; None for an engine on another machine."""
        return None if self.docker_root is None else shutil.disk_usage(self.docker_root).free

    def node_has_image(self, ref: str) -> bool:
        """Whether the node's containerd holds `ref` (`docker.io/library/` is how it names short references)."""
        found = json.loads(self._run(["docker", "exec", self.node, "crictl", "images", "-o", "json"]).stdout)
        names = {tag for image in found["images"] for tag in image.get("repoTags") or []}
        return ref in names or f"docker.io/library/{ref}" in names

    def retag(self, image: str, new: str) -> None:
        self._run(["docker", "tag", image, new])

    def untag(self, *refs: str) -> None:
        """Drop tags a test made from Docker (the node keeps its copy): left there, each would keep
        an older gigabyte-sized build alive after the image cache moved on."""
        if refs:
            done = self._run(["docker", "rmi", *refs], check=False)
            log(f"untagged {', '.join(refs)}: exit {done.returncode} {done.stderr.strip()}")

    @property
    def node(self) -> str:
        return f"{CLUSTER}-control-plane"

    # -- commands ----------------------------------------------------------------------------

    def _run(
        self,
        command: list[str],
        *,
        check: bool = True,
        input: str | None = None,
        stderr=subprocess.PIPE,
        timeout: float | None = 1800,
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            command, env=self.env, input=input, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise StageError(
                f"{' '.join(command[:6])} ... failed ({done.returncode}):\n"
                f"{(done.stderr or '')[-3000:]}{done.stdout[-2000:]}"
            )
        return done

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 600,
        namespace: str | None = NAMESPACE,
    ) -> subprocess.CompletedProcess:
        ns = ["-n", namespace] if namespace else []
        return self._run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *ns, *args], input=input, check=check, timeout=timeout
        )

    def kubectl_json(self, *args: str, namespace: str | None = NAMESPACE) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json", namespace=namespace).stdout)

    def apply(self, objects: list[dict], namespace: str | None = NAMESPACE) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects), namespace=namespace)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run([self.helm_bin, "--kubeconfig", str(self.kubeconfig), *args], check=check, timeout=2400)

    # -- installs ----------------------------------------------------------------------------

    def _helm_install(
        self,
        release: str,
        chart: Path,
        namespace: str,
        values_files: list[Path],
        sets: list[str],
        set_flag: str = "--set",
    ) -> float:
        """`helm upgrade --install --wait` of a release; returns the seconds it took."""
        command = [
            "upgrade",
            "--install",
            release,
            str(chart),
            "--namespace",
            namespace,
            "--create-namespace",
            "--wait",
            "--timeout",
            HELM_TIMEOUT,
        ]
        for path in values_files:
            command += ["-f", str(path)]
        for value in sets:
            command += [set_flag, value]
        started = time.monotonic()
        self.helm(*command)
        return time.monotonic() - started

    def install_operator(self, image: str) -> None:
        """The real Kubeflow Spark operator, with the chart its Go module ships and the project's values."""
        registry, repository, tag = split_image(image)
        self.kubectl("create", "namespace", NAMESPACE, check=False)
        took = self._helm_install(
            "spark-operator",
            spark_operator_chart(),
            OPERATOR_NAMESPACE,
            [REPO / "charts" / "values" / "spark-operator.yaml", HERE / "values" / "spark-operator.yaml"],
            [f"image.registry={registry}", f"image.repository={repository}", f"image.tag={tag}"],
        )
        log(f"Spark operator installed in {took:.0f}s")

    def install_kafka(self, image: str) -> None:
        """The broker image as a StatefulSet behind the Service Strimzi would create for
        manifests/kafka.yaml (the Strimzi operator image cannot be built here), with the topics of
        manifests/topics.yaml created by the broker as the topic operator would."""
        kafka = next(
            d for d in yaml.safe_load_all((REPO / "manifests" / "kafka.yaml").read_text()) if d["kind"] == "Kafka"
        )
        [listener] = kafka["spec"]["kafka"]["listeners"]
        service = f"{kafka['metadata']['name']}-kafka-bootstrap"
        topics = [d for d in yaml.safe_load_all((REPO / "manifests" / "topics.yaml").read_text()) if d]
        spec = " ".join(
            f"{t['metadata']['name']}:{t['spec']['partitions']}:{t['spec']['config']['cleanup.policy']}" for t in topics
        )
        text = (HERE / "manifests" / "kafka.yaml").read_text()
        objects = [
            d
            for d in yaml.safe_load_all(
                text.replace("@SERVICE@", service)
                .replace("@IMAGE@", image)
                .replace("@PORT@", str(listener["port"]))
                .replace("@TOPICS@", spec)
            )
            if d
        ]
        started = time.monotonic()
        self.apply(objects)
        # Ready only once every topic exists (the image's readiness file).
        self.kubectl("rollout", "status", "statefulset/shopstream-kafka-broker", "--timeout", "10m")
        log(f"Kafka broker and {len(topics)} topics ready in {time.monotonic() - started:.0f}s")

    def install_platform(self, values_files: list[Path], *sets: str, upgrade: bool = False) -> None:
        took = self._helm_install(RELEASE, REPO / "charts" / "shopstream", NAMESPACE, values_files, list(sets))
        log(f"platform chart {'upgraded' if upgrade else 'installed'} in {took:.0f}s")

    def install_dagster(self, app_image: str, *sets: str) -> None:
        """Dagster's webserver, daemon and the shopstream code server, all from the app image, as
        skaffold.yaml's dagster release sets them. Values are strings (an env value "20" stays one)."""
        repository, _, tag = app_image.rpartition(":")
        images = [
            f"{key}.{part}={value}"
            for key in (
                "dagsterWebserver.image",
                "dagsterDaemon.image",
                "dagster-user-deployments.deployments[0].image",
            )
            for part, value in (("repository", repository), ("tag", tag))
        ]
        took = self._helm_install(
            DAGSTER_RELEASE,
            DAGSTER_CHART,
            NAMESPACE,
            [DAGSTER_VALUES, HERE / "values" / "dagster.yaml"],
            [*images, *sets],
            set_flag="--set-string",
        )
        log(f"Dagster ({app_image}) installed in {took:.0f}s")

    # -- waiting and reading -----------------------------------------------------------------

    def wait_for(self, predicate, what: str, timeout: float, interval: float = 3.0):
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except Exception as exc:  # noqa: BLE001 - a port-forward or a pod between restarts: try again
                last_error = exc
            time.sleep(interval)
        raise StageError(
            f"timed out after {timeout:.0f}s waiting for {what}"
            + (f" (last error: {last_error})" if last_error else "")
        )

    def application(self, name: str) -> dict | None:
        done = self.kubectl("get", "sparkapplication", name, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def application_state(self, name: str) -> str | None:
        app = self.application(name)
        return sa.state_of(app) if app else None

    def nudge_if_stuck(self, name: str, patience: float = 30.0) -> bool:
        """Work around Spark operator 2.5.0 losing track of an application in PENDING_RERUN (upstream
        issue 2905): when its old driver pod disappears only after the rerun was reconciled, it waits
        for good; when a status update conflicts right after a resubmission, it keeps PENDING_RERUN
        while a driver of a newer submission runs. After `patience` seconds in that state: a driver
        that is not the application's recorded submission is deleted, and with no driver left, any
        change to the object makes the operator look again (sooner would race the operator's own
        retries). Returns whether it acted."""
        app = self.application(name) or {}
        status = app.get("status") or {}
        if sa.state_of(app) != "PENDING_RERUN":
            self._stuck_since.pop(name, None)
            return False
        since = self._stuck_since.setdefault(name, time.monotonic())
        if time.monotonic() - since < patience:
            return False
        self._stuck_since[name] = time.monotonic()
        driver = self.kubectl("get", "pod", f"{name}-driver", "-o", "json", check=False)
        if driver.returncode == 0:
            submission = json.loads(driver.stdout)["metadata"]["labels"].get("sparkoperator.k8s.io/submission-id")
            if submission == status.get("submissionID"):
                return False  # the operator still tracks this driver
            self.kubectl("delete", "pod", f"{name}-driver", "--wait=false")
            action = f"deleted driver of untracked submission {submission}"
        else:
            self.kubectl(
                "annotate", "sparkapplication", name, f"shopstream.io/reconcile-nudge={time.time():.0f}", "--overwrite"
            )
            action = "annotated it"
        self.nudges += 1
        log(f"{name} stuck in PENDING_RERUN for {patience:.0f}s: {action} (Spark operator issue 2905)")
        return True

    def secret(self, name: str) -> dict[str, str]:
        import base64

        data = self.kubectl_json("get", "secret", name)["data"]
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    @contextmanager
    def port_forward(self, service: str, port: int):
        """`kubectl port-forward` to a Service on a free local port; yields the local port."""
        process = subprocess.Popen(
            [
                "kubectl",
                "--kubeconfig",
                str(self.kubeconfig),
                "-n",
                NAMESPACE,
                "port-forward",
                "--address",
                "127.0.0.1",
                f"service/{service}",
                f":{port}",
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            line = process.stdout.readline()
            found = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not found:
                tail = process.stdout.read(2000) if process.poll() is not None else ""
                raise StageError(f"port-forward to {service}:{port} failed: {line}{tail}")
            # keep draining its output so it never blocks on a full pipe
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            yield int(found.group(1))
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    # -- when something failed ---------------------------------------------------------------

    def dump(self, target: Path) -> Path:
        """Pod logs, events, SparkApplication status and Helm releases, for a failed run."""
        target.mkdir(parents=True, exist_ok=True)
        reads = {
            "pods.txt": ["get", "pods", "-A", "-o", "wide"],
            "events.txt": ["get", "events", "-A", "--sort-by", ".lastTimestamp"],
            "sparkapplications.yaml": ["get", "sparkapplications", "-A", "-o", "yaml"],
            "describe-pods.txt": ["describe", "pods", "-n", NAMESPACE],
        }
        for name, args in reads.items():
            done = self.kubectl(*args, check=False, namespace=None)
            (target / name).write_text(done.stdout + done.stderr)
        for namespace in (NAMESPACE, OPERATOR_NAMESPACE):
            pods = self.kubectl("get", "pods", "-o", "name", check=False, namespace=namespace).stdout.split()
            for pod in pods:
                for previous in ("", "--previous"):
                    done = self.kubectl(
                        "logs",
                        pod,
                        "--all-containers",
                        "--tail",
                        "400",
                        *([previous] if previous else []),
                        check=False,
                        namespace=namespace,
                    )
                    if done.stdout:
                        (target / f"{namespace}-{pod.split('/')[-1]}{previous.replace('--', '.')}.log").write_text(
                            done.stdout
                        )
        done = self.helm("list", "-A", check=False)
        (target / "helm.txt").write_text(done.stdout + done.stderr)
        return target


class MemorySampler:
    """Peak memory of the kind node (its container's cgroup) and of every pod (crictl's working
    set, summed over a pod's containers), and the least free space on Docker's disk, sampled in
    the background."""

    def __init__(self, stage: ClusterStage, interval: float = 10.0):
        self.stage = stage
        self.interval = interval
        self.node_peak = 0
        self.pods: dict[str, int] = {}
        self.disk_free_least = stage.docker_disk_free()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="memory-sampler")

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.report()

    def report(self) -> dict:
        mib = 1024 * 1024
        disk = self.disk_free_least
        return {
            "node_peak_mib": round(self.node_peak / mib),
            "docker_disk_free_least_gib": None if disk is None else round(disk / GIB, 1),
            "pods_peak_mib": {
                pod: round(value / mib) for pod, value in sorted(self.pods.items(), key=lambda kv: -kv[1])
            },
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except Exception:  # noqa: BLE001 - a sample lost while pods come and go is fine
                pass

    def _sample(self) -> None:
        free = self.stage.docker_disk_free()
        if free is not None:
            self.disk_free_least = min(free, self.disk_free_least or free)
        node = self.stage.node
        stats = subprocess.run(
            ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", node],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        used = re.match(r"\s*([\d.]+)\s*([KMG]i?B)", stats)
        if used:
            factor = {"K": 1024, "M": 1024**2, "G": 1024**3}[used.group(2)[0]]
            self.node_peak = max(self.node_peak, int(float(used.group(1)) * factor))
        out = subprocess.run(
            ["docker", "exec", node, "crictl", "stats", "-o", "json"], capture_output=True, text=True, timeout=30
        ).stdout
        containers = {
            c["id"]: c["labels"]
            for c in json.loads(
                subprocess.run(
                    ["docker", "exec", node, "crictl", "ps", "-o", "json"], capture_output=True, text=True, timeout=30
                ).stdout
                or "{}"
            ).get("containers", [])
        }
        per_pod: dict[str, int] = {}
        for entry in json.loads(out or "{}").get("stats", []):
            labels = containers.get(entry["attributes"]["id"]) or entry["attributes"].get("labels", {})
            pod = f"{labels.get('io.kubernetes.pod.namespace', '?')}/{labels.get('io.kubernetes.pod.name', '?')}"
            per_pod[pod] = per_pod.get(pod, 0) + int(entry.get("memory", {}).get("workingSetBytes", {}).get("value", 0))
        for pod, value in per_pod.items():
            self.pods[pod] = max(self.pods.get(pod, 0), value)
