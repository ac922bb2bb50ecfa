"""The lake: Iceberg catalog settings (with the Spark configuration they imply), the pyiceberg
catalog, table names and the streaming checkpoint's place. No pyspark: the SparkSession and table
creation are in `shopstream.spark.iceberg`.

Spark writes through Iceberg's Java JDBC catalog and Python reads through pyiceberg's SQL catalog;
both share the same catalog tables (SQLite locally, PostgreSQL in a cluster), so the catalog name
below must be the same on both sides.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from shopstream import schema, settings

STREAMING_QUERY = "events"  # the streaming job's one query, which names its checkpoint folder
CATALOG = "lake"  # Spark catalog name and pyiceberg catalog name; stored in the catalog's rows

# Hadoop S3A reads the same AWS_* credentials as Iceberg's S3FileIO.
ENVIRONMENT_CREDENTIALS = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"

TABLE_PROPERTIES = {
    "format-version": "2",
    "write.target-file-size-bytes": str(128 * 1024 * 1024),
    "write.parquet.compression-codec": "zstd",
    "write.distribution-mode": "hash",
    "write.spark.fanout.enabled": "true",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
    "commit.retry.num-retries": "10",
}
# Tables whose rows are updated in place by the stream: merge-on-read writes delete files for the
# changed rows instead of rewriting every data file that holds one (copy-on-write).
MERGE_ON_READ = {f"write.{op}.mode": "merge-on-read" for op in ("merge", "update", "delete")}
TABLE_PROPERTY_OVERRIDES = {schema.SILVER_USER_SESSIONS: MERGE_ON_READ}


def table_properties(name: str) -> dict[str, str]:
    return {**TABLE_PROPERTIES, **TABLE_PROPERTY_OVERRIDES.get(name, {})}


@dataclass(frozen=True)
class LakeSettings:
    catalog_uri: str
    warehouse: str
    catalog_user: str | None = None
    catalog_password: str | None = None
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"

    @classmethod
    def local(cls, root: Path) -> LakeSettings:
        """The embedded default's lake under `root` (made absolute): a SQLite catalog and a local warehouse."""
        root = root.resolve()
        return cls(catalog_uri=f"jdbc:sqlite:{root / 'catalog.db'}", warehouse=f"file://{root / 'warehouse'}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: str | None) -> LakeSettings:
        """Overrides (command-line values) first, then the environment, then the embedded default."""

        def pick(name: str, setting: settings.Setting) -> str | None:
            return overrides.get(name) or setting.read(env)

        uri, warehouse = pick("catalog_uri", settings.CATALOG_URI), pick("warehouse", settings.WAREHOUSE)
        if not (uri and warehouse):
            base = cls.local(settings.home(env))
            uri, warehouse = uri or base.catalog_uri, warehouse or base.warehouse
        return cls(
            catalog_uri=uri,
            warehouse=warehouse,
            catalog_user=pick("catalog_user", settings.CATALOG_USER),
            catalog_password=pick("catalog_password", settings.CATALOG_PASSWORD),
            s3_endpoint=pick("s3_endpoint", settings.S3_ENDPOINT),
            s3_region=pick("s3_region", settings.S3_REGION) or "us-east-1",
        )

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            "Iceberg catalog (defaults: environment, else the embedded SQLite catalog under the home folder)"
        )
        group.add_argument(
            "--catalog-uri", help=f"{settings.CATALOG_URI.meaning} (env {settings.CATALOG_URI.variable})"
        )
        group.add_argument("--warehouse", help=f"{settings.WAREHOUSE.meaning} (env {settings.WAREHOUSE.variable})")
        group.add_argument(
            "--s3-endpoint", help=f"{settings.S3_ENDPOINT.meaning} (env {settings.S3_ENDPOINT.variable})"
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LakeSettings:
        return cls.from_env(catalog_uri=args.catalog_uri, warehouse=args.warehouse, s3_endpoint=args.s3_endpoint)

    def create_local_folders(self) -> None:
        """A SQLite catalog needs its folder before the first connection; a local warehouse its root."""
        if self.catalog_uri.startswith("jdbc:sqlite:"):
            Path(self.catalog_uri.removeprefix("jdbc:sqlite:").split("?")[0]).parent.mkdir(parents=True, exist_ok=True)
        if self.warehouse.startswith("file://"):
            Path(self.warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)

    # -- Spark -------------------------------------------------------------------------------

    def spark_conf(self) -> dict[str, str]:
        prefix = f"spark.sql.catalog.{CATALOG}"
        conf = {
            "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
            prefix: "org.apache.iceberg.spark.SparkCatalog",
            f"{prefix}.type": "jdbc",
            f"{prefix}.uri": self.catalog_uri,
            f"{prefix}.warehouse": self.warehouse,
        }
        if self.catalog_uri.startswith("jdbc:sqlite:"):
            # SQLite fails a write on a connection whose read snapshot another connection has
            # outdated (SQLITE_BUSY_SNAPSHOT), so each catalog keeps a single connection and
            # immediate transactions take the write lock up front; the busy timeout makes a
            # second process wait its turn, and write-ahead logging keeps readers (pyiceberg,
            # Dagster) out of the writer's way.
            conf[f"{prefix}.clients"] = "1"
            conf[f"{prefix}.jdbc.transaction_mode"] = "IMMEDIATE"
            conf[f"{prefix}.jdbc.journal_mode"] = "WAL"
            conf[f"{prefix}.jdbc.busy_timeout"] = "60000"
        if self.catalog_user:
            conf[f"{prefix}.jdbc.user"] = self.catalog_user
        if self.catalog_password:
            conf[f"{prefix}.jdbc.password"] = self.catalog_password
        if self.warehouse.startswith("s3://"):
            conf[f"{prefix}.io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO"
            conf[f"{prefix}.client.region"] = self.s3_region
            if self.s3_endpoint:
                conf[f"{prefix}.s3.endpoint"] = self.s3_endpoint
                conf[f"{prefix}.s3.path-style-access"] = "true"
        if self.s3_endpoint:
            # Hadoop's S3A (s3a:// checkpoints) is configured apart from Iceberg's S3FileIO: the
            # same endpoint, path-style addressing and the credentials of the environment.
            conf.update(
                {
                    "spark.hadoop.fs.s3a.endpoint": self.s3_endpoint,
                    "spark.hadoop.fs.s3a.endpoint.region": self.s3_region,
                    "spark.hadoop.fs.s3a.path.style.access": "true",
                    "spark.hadoop.fs.s3a.aws.credentials.provider": ENVIRONMENT_CREDENTIALS,
                }
            )
        return conf

    # -- pyiceberg ---------------------------------------------------------------------------

    def pyiceberg_properties(self) -> dict[str, str]:
        props = {
            "uri": _sqlalchemy_uri(self.catalog_uri, self.catalog_user, self.catalog_password),
            "warehouse": self.warehouse,
        }
        if self.warehouse.startswith("s3://"):
            props["s3.region"] = self.s3_region
            if self.s3_endpoint:
                props["s3.endpoint"] = self.s3_endpoint
                props["s3.force-virtual-addressing"] = "false"
        return props


def _sqlalchemy_uri(jdbc_uri: str, user: str | None, password: str | None) -> str:
    """The SQLAlchemy URI pyiceberg needs for the same database a JDBC URI names."""
    if jdbc_uri.startswith("jdbc:sqlite:"):
        return "sqlite:///" + jdbc_uri.removeprefix("jdbc:sqlite:").split("?")[0]
    if jdbc_uri.startswith("jdbc:postgresql://"):
        rest = jdbc_uri.removeprefix("jdbc:postgresql://")
        auth = ""
        if user:
            auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "") + "@"
        return f"postgresql+psycopg2://{auth}{rest}"
    raise ValueError(f"unsupported catalog URI {jdbc_uri!r}: use jdbc:sqlite:<path> or jdbc:postgresql://host:port/db")


def iceberg_catalog(lake: LakeSettings):
    import logging

    from pyiceberg.catalog.sql import SqlCatalog

    # The Java JDBC catalog keeps its default (v0) catalog schema on purpose; pyiceberg reads it
    # fine and would otherwise warn about it on every load.
    logging.getLogger("pyiceberg.catalog.sql").setLevel(logging.ERROR)
    lake.create_local_folders()
    return SqlCatalog(CATALOG, **lake.pyiceberg_properties())


def live_records(snapshot) -> int:
    """The rows a table holds at a pyiceberg snapshot, from its summary (no file is read)."""
    summary = snapshot.summary
    return int(summary.additional_properties.get("total-records", 0)) if summary else 0


def streaming_checkpoint(checkpoint_dir: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The checkpoint of the streaming job's one query: <checkpoint root>/<query name>."""
    root = checkpoint_dir or settings.CHECKPOINT_DIR.read(env) or str(settings.home(env) / "checkpoints")
    return f"{root.rstrip('/')}/{STREAMING_QUERY}"


def table_ref(name: str) -> str:
    """A table's name as Spark SQL sees it."""
    return f"{CATALOG}.{schema.TABLES[name].qualified}"
