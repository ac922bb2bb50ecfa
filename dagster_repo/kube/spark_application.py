"""The SparkApplication resource (sparkoperator.k8s.io/v1beta2) the launcher submits: its name,
labels and body, built from plain values so they can be checked without a cluster.

Field names follow the Kubeflow Spark operator's v1beta2 API. What every application of a
deployment shares (service accounts, envFrom, security contexts, core requests, sparkConf) is not
written here: the platform chart renders it once, for its own streaming application and, as JSON
in the launcher ConfigMap, for the ones the launcher creates (`defaults`, merged under the body).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

GROUP = "sparkoperator.k8s.io"
VERSION = "v1beta2"
PLURAL = "sparkapplications"
KIND = "SparkApplication"
CRD_NAME = f"{PLURAL}.{GROUP}"

# The image carries the repository's jobs/ folder here (images/spark/Dockerfile).
MAIN_APPLICATION_FILE = "local:///opt/shopstream/jobs/shopstream/__main__.py"

# The operator's states (status.applicationState.state).
COMPLETED = "COMPLETED"
FAILED = "FAILED"
SUBMISSION_FAILED = "SUBMISSION_FAILED"
TERMINAL_STATES = frozenset({COMPLETED, FAILED, SUBMISSION_FAILED})

# The operator derives a driver pod "<name>-driver" and services "<name>-...-svc" from the name,
# and Service names are DNS-1035 labels of at most 63 characters: keep room for its suffixes.
MAX_NAME_LENGTH = 48
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MEMORY = re.compile(r"^[1-9][0-9]*[kmgt]$")  # Spark's JVM memory strings: 512m, 2g
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")

LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = "shopstream.io/job"
LABEL_RUN_ID = "dagster.io/run-id"
LABEL_PARTITION = "dagster.io/partition"
LABEL_ASSET = "dagster.io/asset"


def is_dns_label(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS_LABEL.match(name))


def application_name(job: str, run_id: str, partition: str | None = None, step: str | None = None) -> str:
    """A deterministic DNS-1123 name: the same run, step and partition always give the same name
    (so a retried step finds its own application), different ones never collide in practice."""
    digest = hashlib.sha256("\0".join([job, run_id, partition or "", step or ""]).encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9]+", "-", job.lower()).strip("-")
    if partition:
        readable += "-" + re.sub(r"[^0-9a-z]+", "", partition.lower())
    readable = readable[: MAX_NAME_LENGTH - len(digest) - 1].strip("-")
    if not readable or not readable[0].isalpha():
        readable = "job-" + readable
        readable = readable[: MAX_NAME_LENGTH - len(digest) - 1].strip("-")
    return f"{readable}-{digest}"


def label_value(value: str) -> str:
    """A Kubernetes label value: at most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends."""
    return _LABEL_VALUE.sub("_", value)[:63].strip("_.-")


@dataclass(frozen=True)
class Resources:
    """Driver and executor sizing (the seed's defaults: executors 2 cores / 2g, driver 1g)."""

    driver_cores: int = 1
    driver_memory: str = "1g"
    executor_cores: int = 2
    executor_memory: str = "2g"
    executor_instances: int = 1

    def problems(self) -> list[str]:
        found = []
        for name in ("driver_memory", "executor_memory"):
            if not _MEMORY.match(getattr(self, name)):
                found.append(f"{name} {getattr(self, name)!r} is not a Spark memory size such as 512m or 2g")
        for name in ("driver_cores", "executor_cores", "executor_instances"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1, not {getattr(self, name)}")
        return found


@dataclass(frozen=True)
class ApplicationSpec:
    name: str
    namespace: str
    job: str
    arguments: tuple[str, ...]
    image: str = ""
    spark_version: str = ""
    service_account: str = ""
    resources: Resources = Resources()
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    env_configmap: str | None = None
    env_secret: str | None = None
    image_pull_policy: str = ""
    spark_conf: dict[str, str] = field(default_factory=dict)
    on_failure_retries: int = 0
    time_to_live_seconds: int = 86400
    # The deployment's shared spec (chart helper "shopstream.sparkApplicationDefaults"); the fields
    # above win where both set one.
    defaults: dict = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = self.resources.problems()
        if not is_dns_label(self.name):
            found.append(f"name {self.name!r} is not a DNS-1123 label of at most 63 characters")
        if not (self.image or self.defaults.get("image")):
            found.append(
                "no Spark image is set (launcher config `image` or `application_defaults`, "
                "env SHOPSTREAM_SPARK_IMAGE or SHOPSTREAM_SPARK_APP_DEFAULTS)"
            )
        if not is_dns_label(self.namespace):
            found.append(f"namespace {self.namespace!r} is not a valid namespace name")
        return found

    def body(self) -> dict:
        """The SparkApplication object to create: the deployment's defaults, then this job's fields."""
        labels = {
            LABEL_PART_OF: "shopstream",
            LABEL_MANAGED_BY: "dagster",
            LABEL_JOB: label_value(self.job),
            **{k: label_value(v) for k, v in self.labels.items()},
        }
        env_from = []
        if self.env_configmap:
            env_from.append({"configMapRef": {"name": self.env_configmap}})
        if self.env_secret:
            env_from.append({"secretRef": {"name": self.env_secret}})
        pod: dict = {"labels": labels}
        if env_from:
            pod["envFrom"] = env_from
        if self.env:
            pod["env"] = [{"name": k, "value": v} for k, v in sorted(self.env.items())]
        driver = {**pod, **({"serviceAccount": self.service_account} if self.service_account else {})}
        r = self.resources
        restart = (
            {
                "type": "OnFailure",
                "onFailureRetries": self.on_failure_retries,
                "onFailureRetryInterval": 30,
                "onSubmissionFailureRetries": self.on_failure_retries,
                "onSubmissionFailureRetryInterval": 30,
            }
            if self.on_failure_retries
            else {"type": "Never"}
        )
        own: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "type": "Python",
                "pythonVersion": "3",
                "mode": "cluster",
                "mainApplicationFile": MAIN_APPLICATION_FILE,
                "arguments": [self.job, *self.arguments],
                "sparkConf": dict(self.spark_conf),
                "restartPolicy": restart,
                "timeToLiveSeconds": self.time_to_live_seconds,
                # coreLimit caps the CPU at what was asked for; Spark caps the memory itself.
                "driver": {
                    **driver,
                    "cores": r.driver_cores,
                    "coreLimit": str(r.driver_cores),
                    "memory": r.driver_memory,
                },
                "executor": {
                    **pod,
                    "cores": r.executor_cores,
                    "coreLimit": str(r.executor_cores),
                    "memory": r.executor_memory,
                    "instances": r.executor_instances,
                },
            },
        }
        chosen = {"image": self.image, "imagePullPolicy": self.image_pull_policy, "sparkVersion": self.spark_version}
        own["spec"].update({key: value for key, value in chosen.items() if value})
        # Without defaults: the Spark of the image is the pyspark this project pins.
        fallback = {"spec": {"imagePullPolicy": "IfNotPresent", "sparkVersion": version("pyspark")}}
        return merged(merged(fallback, {"spec": self.defaults}), own)


def merged(base: dict, override: dict) -> dict:
    """`override` laid over `base`: mappings merge key by key, anything else is replaced."""
    out = dict(base or {})
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def state_of(obj: dict) -> str | None:
    return ((obj.get("status") or {}).get("applicationState") or {}).get("state")


def error_of(obj: dict) -> str | None:
    return ((obj.get("status") or {}).get("applicationState") or {}).get("errorMessage")


def driver_pod_of(obj: dict) -> str | None:
    return ((obj.get("status") or {}).get("driverInfo") or {}).get("podName")
