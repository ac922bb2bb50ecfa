"""The code location: `dagster dev -m dagster_repo.definitions` (or `make ui`).

One setting, SHOPSTREAM_LAUNCHER_MODE, chooses the deployment's resources, as Dagster's example
projects choose resources per deployment: `local` (the default) runs every Spark job on this
machine against the embedded default's lake; `kubernetes` runs them as SparkApplications, with the
values the platform chart sets in the code server's environment (see docs/kubernetes.md).
`python -m shopstream.settings` lists every setting.
"""

from __future__ import annotations

import dagster as dg

from dagster_repo.defs.assets import (
    GOLD_ASSET,
    GOLD_TABLES,
    SILVER_ASSETS,
    iceberg_table_maintenance,
    streaming_health_monitor,
)
from dagster_repo.defs.completeness import CompletenessGate, recompute_sensor
from dagster_repo.defs.jobs import JOBS_DEFS, SCHEDULES, streaming_health_sensor
from dagster_repo.defs.launcher import KubernetesSparkLauncher, LocalSparkLauncher
from dagster_repo.defs.resources import (
    KafkaResource,
    LakeResource,
    SparkApplicationsClient,
    StreamingJob,
    StreamingSparkApplication,
)
from shopstream import settings

MODES = ("local", "kubernetes")


def completeness_gate(lake: LakeResource, kafka: KafkaResource) -> CompletenessGate:
    """The gate with the streaming job's allowed lateness (the lake ConfigMap gives it to Dagster in a cluster)."""
    return CompletenessGate(lake=lake, kafka=kafka, allowed_lateness_seconds=settings.ALLOWED_LATENESS.read_int())


def local_resources() -> dict[str, dg.ConfigurableResource]:
    """The embedded default: values from the settings (their defaults when unset)."""
    lake = LakeResource.from_settings()
    kafka = KafkaResource(bootstrap_servers=settings.KAFKA_BOOTSTRAP.read() or "")
    return {
        "lake": lake,
        "kafka": kafka,
        "spark_launcher": LocalSparkLauncher(lake=lake, kafka=kafka),
        "streaming": StreamingJob.from_settings(),
        "completeness": completeness_gate(lake, kafka),
    }


def kubernetes_resources() -> dict[str, dg.ConfigurableResource]:
    """In a cluster: what the platform chart always sets is read through EnvVar when a run starts
    (so the catalog password never shows in run config); optional values are read here."""

    def env(setting: settings.Setting) -> dg.EnvVar:
        return dg.EnvVar(setting.variable)

    lake = LakeResource(
        home=str(settings.home()),
        catalog_uri=env(settings.CATALOG_URI),
        warehouse=env(settings.WAREHOUSE),
        catalog_user=env(settings.CATALOG_USER),
        catalog_password=env(settings.CATALOG_PASSWORD),
        s3_endpoint=env(settings.S3_ENDPOINT),
        s3_region=env(settings.S3_REGION),
        checkpoint_dir=env(settings.CHECKPOINT_DIR),
    )
    applications = SparkApplicationsClient(
        namespace=env(settings.SPARK_NAMESPACE), kubeconfig_file=settings.KUBECONFIG.read() or ""
    )
    launcher = KubernetesSparkLauncher(
        lake=lake,
        applications=applications,
        application_defaults=env(settings.SPARK_APP_DEFAULTS),
        image=settings.SPARK_IMAGE.read() or "",
        spark_version=settings.SPARK_VERSION.read() or "",
        service_account=settings.SPARK_SERVICE_ACCOUNT.read() or "",
        env_configmap=settings.SPARK_ENV_CONFIGMAP.read() or "",
        env_secret=settings.SPARK_ENV_SECRET.read() or "",
    )
    kafka = KafkaResource(bootstrap_servers=env(settings.KAFKA_BOOTSTRAP))
    return {
        "lake": lake,
        "kafka": kafka,
        "spark_launcher": launcher,
        "streaming": StreamingSparkApplication.from_settings(
            application=env(settings.STREAMING_APP), applications=applications
        ),
        "completeness": completeness_gate(lake, kafka),
    }


def build_definitions(mode: str, resources: dict[str, dg.ConfigurableResource] | None = None) -> dg.Definitions:
    """Everything of the code location for a launcher mode; tests pass their own resources."""
    if mode not in MODES:
        raise ValueError(f"{settings.LAUNCHER_MODE.variable}={mode!r}: use one of {', '.join(MODES)}")
    local = mode == "local"
    # Locally every step is a Spark JVM on this machine: one at a time unless told otherwise.
    # In a cluster each step only watches a SparkApplication, so several can run at once.
    max_concurrent = int(settings.MAX_CONCURRENT_STEPS.read() or ("1" if local else "4"))
    return dg.Definitions(
        assets=[*SILVER_ASSETS, GOLD_ASSET, streaming_health_monitor, iceberg_table_maintenance],
        jobs=JOBS_DEFS,
        schedules=SCHEDULES,
        sensors=[
            streaming_health_sensor(settings.HEALTH_SENSOR_INTERVAL.read_int(), running=not local),
            recompute_sensor(
                GOLD_TABLES, settings.RECOMPUTE_LOOKBACK_DAYS.read_int(), settings.RECOMPUTE_SENSOR_INTERVAL.read_int()
            ),
        ],
        resources=resources or (local_resources() if local else kubernetes_resources()),
        executor=dg.multiprocess_executor.configured({"max_concurrent": max_concurrent}),
    )


defs = build_definitions(settings.LAUNCHER_MODE.read() or "local")
