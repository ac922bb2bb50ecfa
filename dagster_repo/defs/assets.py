"""The asset graph: silver tables observed from Iceberg, daily gold tables computed by Spark jobs,
the streaming health monitor and table maintenance.

Names, columns and which silver tables each gold job reads all come from `shopstream.schema` and
the job catalog, so the graph cannot drift from the jobs (and loading it needs no pyspark).
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from dagster_repo.defs.completeness import CompletenessGate, GoldConfig
from dagster_repo.defs.launcher import SparkJobConfig, SparkLauncher
from dagster_repo.defs.resources import KafkaResource, LakeResource, StreamingJob
from dagster_repo.kube import spark_application as sa
from dagster_repo.monitoring import health
from shopstream import catalog, schema, settings
from shopstream.lake import CATALOG

DAILY = dg.DailyPartitionsDefinition(start_date=settings.PARTITIONS_START.read() or "", timezone="UTC")
SILVER_TABLES = tuple(sorted({name for job in catalog.DAILY for name in job.reads}))
# A launch that fails for a reason that may pass (a node lost, an API hiccup, a driver killed) is
# retried; configuration errors fail at once (dg.Failure(allow_retries=False) in the launcher).
GOLD_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)
GOLD_GROUP, SILVER_GROUP, OPS_GROUP = "gold", "silver", "operations"


def column_schema(name: str) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, c.type, description=c.doc or None) for c in schema.TABLES[name].columns]
    )


def table_metadata(name: str) -> dict:
    return {"table": f"{CATALOG}.{schema.TABLES[name].qualified}", "dagster/column_schema": column_schema(name)}


# -- silver: written by the streaming job, observed here ----------------------------------------


def silver_source(name: str) -> dg.SourceAsset:
    @dg.observable_source_asset(
        name=name,
        group_name=SILVER_GROUP,
        metadata=table_metadata(name),
        description=f"{name}, written continuously by the streaming job; observed from Iceberg.",
    )
    def observe(context, lake: LakeResource) -> dg.ObserveResult:
        iceberg = lake.catalog()
        identifier = schema.TABLES[name].qualified
        if not iceberg.table_exists(identifier):
            raise dg.Failure(description=f"{CATALOG}.{identifier} does not exist yet: run the streaming job first")
        snapshot = iceberg.load_table(identifier).current_snapshot()
        if snapshot is None:
            return dg.ObserveResult(data_version=dg.DataVersion("empty"), metadata={"dagster/row_count": 0})
        committed = dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC)
        return dg.ObserveResult(
            data_version=dg.DataVersion(str(snapshot.snapshot_id)),
            metadata={
                "dagster/row_count": int(snapshot.summary.additional_properties.get("total-records", 0)),
                "snapshot_id": str(snapshot.snapshot_id),
                "last_snapshot_time": committed.isoformat(),
                "last_operation": str(snapshot.summary.operation.value),
            },
        )

    return observe


SILVER_ASSETS = [silver_source(name) for name in SILVER_TABLES]


# -- gold: one Spark job per date ----------------------------------------------------------------


def gold_asset(job: catalog.Job, retry_policy: dg.RetryPolicy = GOLD_RETRY_POLICY) -> dg.AssetsDefinition:
    """The gold tables one batch job writes, materialized together for a date by launching it."""
    specs = [
        dg.AssetSpec(
            table,
            deps=list(job.reads),
            group_name=GOLD_GROUP,
            kinds={"spark", "iceberg"},
            description=f"{table}: {job.description}",
            metadata=table_metadata(table),
        )
        for table in job.writes
    ]

    @dg.multi_asset(
        name=job.name,
        specs=specs,
        partitions_def=DAILY,
        retry_policy=retry_policy,
        description=f"`python -m shopstream {job.name} --date <partition>`, through the Spark launcher.",
    )
    def materialize(
        context: dg.AssetExecutionContext,
        config: GoldConfig,
        spark_launcher: SparkLauncher,
        completeness: CompletenessGate,
    ):
        silver_read = completeness.admit(context, config.require_complete_day, job.reads)
        launch = spark_launcher.run(
            context, job.name, ["--date", context.partition_key], config, labels={sa.LABEL_ASSET: job.name}
        )
        rows = (launch.result or {}).get("rows_written", {})
        for table in job.writes:
            yield dg.MaterializeResult(
                asset_key=table,
                metadata={**launch.metadata(), **silver_read, "dagster/row_count": rows.get(table, 0)},
            )

    return materialize


GOLD_ASSETS = [gold_asset(job) for job in catalog.DAILY]
GOLD_TABLES = tuple(table for job in catalog.DAILY for table in job.writes)


# -- operations ----------------------------------------------------------------------------------


def measure_streaming(
    lake: LakeResource, kafka: KafkaResource, streaming: StreamingJob, log=None
) -> health.StreamingHealth:
    return health.measure(
        lake.settings(), kafka.bootstrap_servers, lake.checkpoint(), lambda: streaming.application_state(log)
    )


@dg.asset(
    group_name=OPS_GROUP,
    kinds={"kafka", "iceberg"},
    check_specs=[
        dg.AssetCheckSpec("streaming_progress_is_recent", asset="streaming_health_monitor"),
        dg.AssetCheckSpec("consumer_lag_within_limit", asset="streaming_health_monitor"),
    ],
    description="The streaming job's health: age of its last progress record, consumer lag against the "
    "checkpoint, and the streaming SparkApplication's state in kubernetes mode.",
)
def streaming_health_monitor(
    context: dg.AssetExecutionContext, lake: LakeResource, kafka: KafkaResource, streaming: StreamingJob
):
    measured = measure_streaming(lake, kafka, streaming, context.log.warning)
    limits = streaming.thresholds()
    for problem in measured.errors:
        context.log.warning(problem)
    progress, lag = measured.progress_problem(limits), measured.lag_problem(limits)
    metadata = {k: v for k, v in measured.metadata().items() if v is not None}
    return dg.MaterializeResult(
        metadata={k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v for k, v in metadata.items()},
        check_results=[
            dg.AssetCheckResult(
                check_name="streaming_progress_is_recent",
                passed=progress is None,
                description=progress or "progress is recent",
                metadata={
                    "progress_age_seconds": metadata.get("progress_age_seconds", -1),
                    "limit_seconds": limits.max_progress_age_seconds,
                },
            ),
            dg.AssetCheckResult(
                check_name="consumer_lag_within_limit",
                passed=lag is None,
                description=lag or "lag is within the limit",
                metadata={"total_lag": metadata.get("total_lag", -1), "limit": limits.max_lag},
            ),
        ],
    )


class MaintenanceConfig(SparkJobConfig):
    expire_older_than_hours: float = Field(default=168.0, description="expire snapshots older than this")
    retain_last: int = Field(default=10, description="always keep this many newest snapshots")
    orphan_older_than_hours: float = Field(default=72.0, description="remove unreferenced files older than this")


@dg.asset(
    group_name=OPS_GROUP,
    kinds={"spark", "iceberg"},
    deps=[*SILVER_TABLES, *GOLD_TABLES],
    description="Iceberg maintenance: compacts the small files of closed day partitions (never the days the "
    "streaming job may still write) and the streaming tables' manifests, expires old snapshots, removes orphan "
    "files; a commit that conflicts with the stream's is retried.",
)
def iceberg_table_maintenance(
    context: dg.AssetExecutionContext, config: MaintenanceConfig, spark_launcher: SparkLauncher
):
    launch = spark_launcher.run(
        context,
        "maintenance",
        [
            "--expire-older-than-hours",
            str(config.expire_older_than_hours),
            "--retain-last",
            str(config.retain_last),
            "--orphan-older-than-hours",
            str(config.orphan_older_than_hours),
        ],
        config,
    )
    tables = (launch.result or {}).get("tables", {})
    metadata = {
        **launch.metadata(),
        "closed_before": (launch.result or {}).get("closed_before", ""),
        "tables": dg.MetadataValue.json(tables),
        "files_rewritten": sum(t.get("rewritten_files", 0) for t in tables.values()),
        "orphan_files_removed": sum(t.get("orphan_files_removed", 0) for t in tables.values()),
    }
    return dg.MaterializeResult(metadata=metadata)
