"""How Dagster runs a project Spark job: one interface, `SparkLauncher`, with two backends, each a
resource; `definitions.py` picks one by the launcher-mode setting and assets only call `run(...)`.

- `LocalSparkLauncher`: `python -m shopstream <job> <arguments>` in a child process with local
  Spark; its log goes to the Dagster log line by line, at debug level (a failure carries its
  last lines).
- `KubernetesSparkLauncher`: a SparkApplication built by `spark_application.ApplicationSpec`,
  created, watched to a terminal state, and deleted when the run is cancelled or times out.

Both pass the same arguments and read back the job's JSON result (rows written, totals, checks)
from a file the job writes, also when the job failed (`JobFailed.result`). Dagster Pipes would
carry that result too, but a SparkApplication's driver has no Pipes transport of its own: it would
still need a file in the warehouse, plus dagster-pipes in the Spark image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from dagster_repo.defs.resources import KafkaResource, LakeResource, SparkApplicationsClient
from dagster_repo.kube import client as kube
from dagster_repo.kube import spark_application as sa
from shopstream import results, runtime, settings

REPO_ROOT = Path(__file__).resolve().parents[2]


class SparkJobConfig(dg.Config):
    """Per-asset (or per-op) sizing, overridable in the launchpad. Defaults from the seed."""

    driver_memory: str = Field(default="1g", description="Spark driver memory (512m, 1g, ...)")
    driver_cores: int = Field(default=1, description="Spark driver cores")
    executor_memory: str = Field(default="2g", description="memory of each executor (kubernetes mode)")
    executor_cores: int = Field(default=2, description="cores of each executor; local mode runs local[executor_cores]")
    executor_instances: int = Field(default=1, description="number of executors (kubernetes mode)")
    timeout_seconds: int = Field(default=3600, description="fail (and delete the SparkApplication) after this long")

    def resources(self) -> sa.Resources:
        return sa.Resources(
            driver_cores=self.driver_cores,
            driver_memory=self.driver_memory,
            executor_cores=self.executor_cores,
            executor_memory=self.executor_memory,
            executor_instances=self.executor_instances,
        )


@dataclass
class LaunchResult:
    job: str
    mode: str
    duration_seconds: float
    result: dict | None  # the job's own JSON result
    log_tail: str
    details: dict = field(default_factory=dict)  # mode-specific: application name, state history, ...

    def metadata(self) -> dict:
        meta: dict = {
            "launcher_mode": self.mode,
            "spark_job": self.job,
            "launch_duration_seconds": round(self.duration_seconds, 2),
        }
        if self.result:
            meta["rows_written"] = dg.MetadataValue.json(self.result.get("rows_written", {}))
            meta["totals"] = dg.MetadataValue.json(self.result.get("totals", {}))
            if "duration_seconds" in self.result:
                meta["job_duration_seconds"] = self.result["duration_seconds"]
        for key, value in self.details.items():
            meta[key] = dg.MetadataValue.json(value) if isinstance(value, (list, dict)) else value
        return meta


class JobFailed(dg.Failure):
    """The job ran and failed; `result` is the result file it wrote before failing, if any (the
    gold job writes its checks' verdicts there when an audit fails)."""

    def __init__(self, description: str, metadata: dict, result: dict | None):
        super().__init__(description=description, metadata=metadata)
        self.result = result


class SparkLauncher(dg.ConfigurableResource):
    """Runs a project Spark job and returns its result; raises dg.Failure with the job's error."""

    lake: LakeResource
    log_tail_lines: int = Field(default=60, description="lines of the job's log copied into the Dagster log")

    def run(
        self,
        context,
        job: str,
        arguments: list[str],
        config: SparkJobConfig | None = None,
        labels: dict[str, str] | None = None,
    ) -> LaunchResult:
        config = config or SparkJobConfig()
        problems = config.resources().problems()
        if problems:
            raise dg.Failure(
                description=f"invalid Spark settings for {job}: " + "; ".join(problems), allow_retries=False
            )
        return self._launch(context, job, arguments, config, labels or {})

    def _launch(
        self, context, job: str, arguments: list[str], config: SparkJobConfig, labels: dict[str, str]
    ) -> LaunchResult:
        raise NotImplementedError


class LocalSparkLauncher(SparkLauncher):
    """Each job a child process with local Spark (`local[executor_cores]`), on the lake of `lake`
    and the broker of `kafka`."""

    kafka: KafkaResource

    def _launch(
        self, context, job: str, arguments: list[str], config: SparkJobConfig, labels: dict[str, str]
    ) -> LaunchResult:
        with tempfile.TemporaryDirectory(prefix="shopstream-result-") as tmp:
            result_file = Path(tmp) / "result.json"
            command = [sys.executable, "-m", "shopstream", job, *arguments, "--result-file", str(result_file)]
            env = {
                **os.environ,
                **self.lake.job_environment(),
                settings.KAFKA_BOOTSTRAP.variable: self.kafka.bootstrap_servers,
                settings.SPARK_MASTER.variable: f"local[{config.executor_cores}]",
                settings.DRIVER_MEMORY.variable: config.driver_memory,
                "PYTHONUNBUFFERED": "1",
            }
            context.log.info(f"running {job} with local Spark: {' '.join(command[1:])}")
            started = time.monotonic()
            tail: deque[str] = deque(maxlen=self.log_tail_lines)
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )

            def relay() -> None:
                for line in process.stdout or ():
                    tail.append(line.rstrip())
                    context.log.debug(f"[{job}] {line.rstrip()}")

            reader = threading.Thread(target=relay, daemon=True)
            reader.start()
            try:
                code = process.wait(timeout=config.timeout_seconds)
            except subprocess.TimeoutExpired:
                _stop(process)
                raise dg.Failure(
                    description=f"{job} did not finish within {config.timeout_seconds}s and was stopped",
                    metadata={"log_tail": dg.MetadataValue.text("\n".join(tail))},
                ) from None
            except BaseException:  # the run was cancelled: leave nothing running
                _stop(process)
                raise
            reader.join(timeout=10)
            duration = time.monotonic() - started
            if code != 0:
                raise JobFailed(
                    f"{job} failed with exit code {code}: {last_error(tail)}",
                    {"log_tail": dg.MetadataValue.text("\n".join(tail)), "exit_code": code},
                    results.read_result(str(result_file)),
                )
            return LaunchResult(
                job,
                "local",
                duration,
                results.read_result(str(result_file)),
                "\n".join(tail),
                {"command": " ".join(command[1:-2])},
            )


class KubernetesSparkLauncher(SparkLauncher):
    """Each job a SparkApplication in `applications`' namespace, watched until it ends."""

    applications: SparkApplicationsClient
    image: str = Field(default="", description="the Spark job image (images/spark), by digest or unique tag")
    image_pull_policy: Literal["", "Always", "IfNotPresent", "Never"] = Field(
        default="", description="empty: application_defaults, else IfNotPresent"
    )
    spark_version: str = Field(
        default="", description="spec.sparkVersion; empty: application_defaults, else the pinned pyspark's"
    )
    service_account: str = Field(
        default="",
        description="service account of the driver (creates executors); empty: the one in application_defaults",
    )
    env_configmap: str = Field(
        default="", description="ConfigMap of lake settings given to driver and executors (envFrom)"
    )
    env_secret: str = Field(default="", description="Secret of credentials given to driver and executors (envFrom)")
    application_defaults: str = Field(
        default="",
        description="JSON: the spec every application of the deployment shares "
        "(service accounts, envFrom, security contexts, sparkConf); "
        "the platform chart publishes it in the launcher ConfigMap",
    )
    result_root: str = Field(default="", description="where drivers write results; empty: <warehouse>/_job_results")
    time_to_live_seconds: int = Field(
        default=86400, description="the operator deletes finished applications after this"
    )
    on_failure_retries: int = Field(
        default=0,
        description="operator-side retries (0: restartPolicy Never; the gold assets' RetryPolicy retries instead)",
    )

    @property
    def namespace(self) -> str:
        return self.applications.namespace

    def application_spec(
        self, job: str, arguments: list[str], config: SparkJobConfig, name: str, labels: dict[str, str]
    ) -> sa.ApplicationSpec:
        return sa.ApplicationSpec(
            name=name,
            namespace=self.namespace,
            image=self.image,
            job=job,
            arguments=tuple(arguments),
            spark_version=self.spark_version,
            service_account=self.service_account,
            resources=config.resources(),
            labels=labels,
            env_configmap=self.env_configmap or None,
            env_secret=self.env_secret or None,
            image_pull_policy=self.image_pull_policy,
            on_failure_retries=self.on_failure_retries,
            time_to_live_seconds=self.time_to_live_seconds,
            defaults=self.defaults(),
        )

    def defaults(self) -> dict:
        if not self.application_defaults:
            return {}
        where = f"application_defaults (env {settings.SPARK_APP_DEFAULTS.variable})"
        try:
            found = json.loads(self.application_defaults)
        except json.JSONDecodeError as exc:
            raise dg.Failure(description=f"{where} is not JSON: {exc}", allow_retries=False) from None
        if not isinstance(found, dict):
            raise dg.Failure(description=f"{where} must be a JSON object", allow_retries=False)
        return found

    def result_location(self, name: str) -> str:
        root = self.result_root or f"{self.lake.settings().warehouse.rstrip('/')}/_job_results"
        return f"{root.rstrip('/')}/{name}.json"

    def _launch(
        self, context, job: str, arguments: list[str], config: SparkJobConfig, labels: dict[str, str]
    ) -> LaunchResult:
        op_context = getattr(context, "op_execution_context", context)  # an asset's or an op's context
        run_id = op_context.run_id
        partition = context.partition_key if context.has_partition_key else None
        name = sa.application_name(job, run_id, partition, str(op_context.op_handle))
        labels = {sa.LABEL_RUN_ID: run_id, **({sa.LABEL_PARTITION: partition} if partition else {}), **labels}
        result_location = self.result_location(name)
        spec = self.application_spec(job, [*arguments, "--result-file", result_location], config, name, labels)
        problems = spec.problems()
        if problems:
            raise dg.Failure(
                description=f"cannot build the SparkApplication for {job}: " + "; ".join(problems), allow_retries=False
            )
        body = spec.body()
        started = time.monotonic()
        deadline = started + config.timeout_seconds
        apps = self.applications.connect(log=context.log.warning)
        try:
            apps.preflight(body, deadline)
        except kube.LauncherError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        created = None
        try:
            created = apps.create(body, deadline)
            context.log.info(
                f"created SparkApplication {self.namespace}/{name}; watching it "
                f"(kubectl -n {self.namespace} get sparkapplication {name})"
            )
            outcome = apps.watch_until_terminal(
                created, deadline, on_transition=lambda t: context.log.info(f"SparkApplication {name}: {t.state}")
            )
        except kube.DeadlineExceeded as exc:
            apps.delete(name, time.monotonic() + 60)
            raise dg.Failure(
                description=f"{job}: {exc}; SparkApplication {self.namespace}/{name} was deleted "
                f"(timeout {config.timeout_seconds}s)"
            ) from None
        except kube.LauncherError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        except BaseException:  # cancelled (or the step died): leave nothing running behind the run
            if created is not None:
                context.log.warning(f"run stopped: deleting SparkApplication {self.namespace}/{name}")
                apps.delete(name, time.monotonic() + 60)
            raise
        duration = time.monotonic() - started
        driver_pod = sa.driver_pod_of(outcome.obj)
        log_tail = apps.driver_log_tail(driver_pod, self.log_tail_lines)
        context.log.info(f"driver log of {driver_pod} (last {self.log_tail_lines} lines):\n{log_tail}")
        details: dict[str, Any] = {
            "spark_application": name,
            "namespace": self.namespace,
            "driver_pod": driver_pod or "",
            "state_history": [t.as_dict() for t in outcome.history],
            "watch_reconnects": outcome.reconnects,
            "watch_relists_after_410": outcome.relists,
        }
        result = results.read_result(result_location, self.lake.settings())
        if outcome.state != sa.COMPLETED:
            raise JobFailed(
                f"{job}: SparkApplication {self.namespace}/{name} ended {outcome.state}: "
                f"{sa.error_of(outcome.obj) or 'the operator gave no error message'}",
                {
                    **{k: dg.MetadataValue.json(v) if isinstance(v, list) else v for k, v in details.items()},
                    "driver_log_tail": dg.MetadataValue.text(log_tail),
                },
                result,
            )
        return LaunchResult(job, "kubernetes", duration, result, log_tail, details)


def _stop(process: subprocess.Popen) -> None:
    """Stop a local job and the JVM it started (they share a process group)."""
    runtime.terminate(process.pid, 15, group=True)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def last_error(lines) -> str:
    """The last line of a job's log that names an error or exception, else its last line."""
    errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    return (errors[-1] if errors else (list(lines)[-1] if lines else "no output")).strip()
