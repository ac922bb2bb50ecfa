"""The resources the definitions use, apart from the Spark launchers (launcher.py): the lake, Kafka,
the SparkApplications API and the streaming job as the health checks see it.

`definitions.py` builds them per deployment: from the settings' values on the embedded default,
from `EnvVar`s the platform chart sets in a cluster. Tests build their own.
"""

from __future__ import annotations

import time

import dagster as dg
from pydantic import Field

from dagster_repo.kube import client as kube
from dagster_repo.kube import spark_application as sa
from dagster_repo.monitoring.health import Thresholds
from shopstream import lake, settings
from shopstream.lake import LakeSettings


class LakeResource(dg.ConfigurableResource):
    """The Iceberg lake and the streaming checkpoint; empty values mean the embedded default's under `home`."""

    home: str = Field(description="absolute home folder of the embedded default (catalog, warehouse, checkpoints)")
    catalog_uri: str = Field("", description="JDBC URI of the catalog database")
    warehouse: str = Field("", description="warehouse root, file:// or s3://")
    catalog_user: str = Field("", description="user of the catalog database")
    catalog_password: str = Field("", description="its password (an EnvVar from a Secret in a cluster)")
    s3_endpoint: str = Field("", description="S3-compatible endpoint of s3:// warehouses and checkpoints")
    s3_region: str = Field("us-east-1", description="region of the S3 client")
    checkpoint_dir: str = Field("", description="root of the streaming checkpoint; empty: <home>/checkpoints")

    @classmethod
    def from_settings(cls) -> LakeResource:
        values = {"catalog_uri": settings.CATALOG_URI, "warehouse": settings.WAREHOUSE,
                  "catalog_user": settings.CATALOG_USER, "catalog_password": settings.CATALOG_PASSWORD,
                  "s3_endpoint": settings.S3_ENDPOINT, "s3_region": settings.S3_REGION,
                  "checkpoint_dir": settings.CHECKPOINT_DIR}
        return cls(home=str(settings.home()), **{field: s.read() for field, s in values.items() if s.read()})

    def _home_only(self) -> dict[str, str]:
        return {settings.HOME.variable: self.home}

    def settings(self) -> LakeSettings:
        return LakeSettings.from_env(self._home_only(), catalog_uri=self.catalog_uri, warehouse=self.warehouse,
                                     catalog_user=self.catalog_user, catalog_password=self.catalog_password,
                                     s3_endpoint=self.s3_endpoint, s3_region=self.s3_region)

    def catalog(self):
        return lake.iceberg_catalog(self.settings())

    def checkpoint(self) -> str:
        return lake.streaming_checkpoint(self.checkpoint_dir or None, self._home_only())

    def job_environment(self) -> dict[str, str]:
        """The variables a job on this machine needs to open this same lake (home made absolute)."""
        values = {settings.HOME: self.home, settings.CATALOG_URI: self.catalog_uri, settings.WAREHOUSE: self.warehouse,
                  settings.CATALOG_USER: self.catalog_user, settings.CATALOG_PASSWORD: self.catalog_password,
                  settings.S3_ENDPOINT: self.s3_endpoint, settings.CHECKPOINT_DIR: self.checkpoint_dir}
        return {setting.variable: value for setting, value in values.items() if value}


class KafkaResource(dg.ConfigurableResource):
    bootstrap_servers: str = Field(settings.KAFKA_BOOTSTRAP.default or "", description="Kafka bootstrap servers")


class SparkApplicationsClient(dg.ConfigurableResource):
    """The SparkApplications of one namespace, through the Kubernetes API."""

    namespace: str = Field(settings.SPARK_NAMESPACE.default or "", description="namespace of the SparkApplications")
    kubeconfig_file: str = Field("", description="kubeconfig to use; empty: in-cluster, else the default kubeconfig")

    def connect(self, log=None) -> kube.SparkApplications:
        return kube.SparkApplications(kube.api_client(self.kubeconfig_file or None), self.namespace, log=log)

    def state(self, name: str, log=None) -> str:
        """The application's state: MISSING when there is none, NEW before the operator has seen it."""
        found = self.connect(log).get(name, deadline=time.monotonic() + 30)
        return "MISSING" if found is None else (sa.state_of(found) or "NEW")


class StreamingJob(dg.ConfigurableResource):
    """The long-running streaming job as the health checks see it. On the embedded default it is a
    process of this machine, with no application to look at."""

    max_progress_age_seconds: int = Field(Thresholds.max_progress_age_seconds,
                                          description="unhealthy when the last micro-batch finished longer ago")
    max_lag: int = Field(Thresholds.max_lag, description="unhealthy above this many unread records")

    @classmethod
    def thresholds_from_settings(cls) -> dict[str, int]:
        return {"max_progress_age_seconds": settings.HEALTH_MAX_PROGRESS_AGE.read_int(),
                "max_lag": settings.HEALTH_MAX_LAG.read_int()}

    def thresholds(self) -> Thresholds:
        return Thresholds(self.max_progress_age_seconds, self.max_lag)

    def application_state(self, log=None) -> str | None:
        return None


class StreamingSparkApplication(StreamingJob):
    """The streaming job as a SparkApplication (kubernetes mode)."""

    application: str = Field(settings.STREAMING_APP.default or "", description="name of the streaming SparkApplication")
    applications: SparkApplicationsClient

    def application_state(self, log=None) -> str | None:
        return self.applications.state(self.application, log)
