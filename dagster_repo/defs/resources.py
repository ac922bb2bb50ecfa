"""The resources the definitions use, apart from the Spark launchers (launcher.py): the lake, Kafka,
the SparkApplications API and the streaming job as the health checks see it.

`definitions.py` builds them per deployment: from the settings' values on the embedded default,
from `EnvVar`s the platform chart sets in a cluster. Tests build their own.
"""

from __future__ import annotations

import time
from typing import Any, Self

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
    catalog_uri: str = Field(default="", description="JDBC URI of the catalog database")
    warehouse: str = Field(default="", description="warehouse root, file:// or s3://")
    catalog_user: str = Field(default="", description="user of the catalog database")
    catalog_password: str = Field(default="", description="its password (an EnvVar from a Secret in a cluster)")
    s3_endpoint: str = Field(default="", description="S3-compatible endpoint of s3:// warehouses and checkpoints")
    s3_region: str = Field(default="us-east-1", description="region of the S3 client")
    checkpoint_dir: str = Field(default="", description="root of the streaming checkpoint; empty: <home>/checkpoints")

    @classmethod
    def from_settings(cls) -> LakeResource:
        return cls(
            home=str(settings.home()),
            catalog_uri=settings.CATALOG_URI.read() or "",
            warehouse=settings.WAREHOUSE.read() or "",
            catalog_user=settings.CATALOG_USER.read() or "",
            catalog_password=settings.CATALOG_PASSWORD.read() or "",
            s3_endpoint=settings.S3_ENDPOINT.read() or "",
            s3_region=settings.S3_REGION.read() or "",
            checkpoint_dir=settings.CHECKPOINT_DIR.read() or "",
        )

    def _home_only(self) -> dict[str, str]:
        return {settings.HOME.variable: self.home}

    def settings(self) -> LakeSettings:
        return LakeSettings.from_env(
            self._home_only(),
            catalog_uri=self.catalog_uri,
            warehouse=self.warehouse,
            catalog_user=self.catalog_user,
            catalog_password=self.catalog_password,
            s3_endpoint=self.s3_endpoint,
            s3_region=self.s3_region,
        )

    def catalog(self):
        return lake.iceberg_catalog(self.settings())

    def checkpoint(self) -> str:
        return lake.streaming_checkpoint(self.checkpoint_dir or None, self._home_only())

    def job_environment(self) -> dict[str, str]:
        """The variables a job on this machine needs to open this same lake (home made absolute)."""
        values = {
            settings.HOME: self.home,
            settings.CATALOG_URI: self.catalog_uri,
            settings.WAREHOUSE: self.warehouse,
            settings.CATALOG_USER: self.catalog_user,
            settings.CATALOG_PASSWORD: self.catalog_password,
            settings.S3_ENDPOINT: self.s3_endpoint,
            settings.CHECKPOINT_DIR: self.checkpoint_dir,
        }
        return {setting.variable: value for setting, value in values.items() if value}


class KafkaResource(dg.ConfigurableResource):
    bootstrap_servers: str = Field(
        default=settings.KAFKA_BOOTSTRAP.default or "", description="Kafka bootstrap servers"
    )


class SparkApplicationsClient(dg.ConfigurableResource):
    """The SparkApplications of one namespace, through the Kubernetes API."""

    namespace: str = Field(
        default=settings.SPARK_NAMESPACE.default or "", description="namespace of the SparkApplications"
    )
    kubeconfig_file: str = Field(
        default="", description="kubeconfig to use; empty: in-cluster, else the default kubeconfig"
    )

    def connect(self, log=None) -> kube.SparkApplications:
        return kube.SparkApplications(kube.api_client(self.kubeconfig_file or None), self.namespace, log=log)

    def state(self, name: str, log=None) -> str:
        """The application's state: MISSING when there is none, NEW before the operator has seen it."""
        found = self.connect(log).get(name, deadline=time.monotonic() + 30)
        return "MISSING" if found is None else (sa.state_of(found) or "NEW")


class StreamingJob(dg.ConfigurableResource):
    """The long-running streaming job as the health checks see it. On the embedded default it is a
    process of this machine, with no application to look at."""

    max_progress_age_seconds: int = Field(
        default=Thresholds.max_progress_age_seconds,
        description="unhealthy when the last micro-batch finished longer ago",
    )
    max_lag: int = Field(default=Thresholds.max_lag, description="unhealthy above this many unread records")
    application: str = Field(default="", description="name of the streaming SparkApplication; empty: none")

    @classmethod
    def from_settings(cls, **others: Any) -> Self:
        """With the thresholds of the settings (read when the code location loads)."""
        max_age, max_lag = settings.HEALTH_MAX_PROGRESS_AGE.read_int(), settings.HEALTH_MAX_LAG.read_int()
        return cls(max_progress_age_seconds=max_age, max_lag=max_lag, **others)

    def thresholds(self) -> Thresholds:
        return Thresholds(self.max_progress_age_seconds, self.max_lag)

    def application_state(self, log=None) -> str | None:
        return None


class StreamingSparkApplication(StreamingJob):
    """The streaming job as a SparkApplication (kubernetes mode)."""

    applications: SparkApplicationsClient

    def application_state(self, log=None) -> str | None:
        return self.applications.state(self.application, log)
