"""The asset graph: silver tables observed from Iceberg, the daily gold tables computed together by
one Spark job with their blocking checks, the streaming health monitor and table maintenance.

Names, columns, checks and which silver tables each gold table is computed from all come from
`shopstream.schema` and the job catalog, so the graph cannot drift from the jobs (and loading it needs no pyspark).
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from dagster_repo.defs.completeness import CompletenessGate, GoldConfig
from dagster_repo.defs.launcher import JobFailed, SparkJobConfig, SparkLauncher
from dagster_repo.defs.resources import KafkaResource, LakeResource, StreamingJob
from dagster_repo.kube import spark_application as sa
from dagster_repo.monitoring import health
from shopstream import catalog, schema, settings
from shopstream.lake import CATALOG, live_records

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
                "dagster/row_count": live_records(snapshot),
                "snapshot_id": str(snapshot.snapshot_id),
                "last_snapshot_time": committed.isoformat(),
                "last_operation": str(snapshot.summary.operation.value),
            },
        )

    return observe


SILVER_ASSETS = [silver_source(name) for name in SILVER_TABLES]


# -- gold: one Spark application per date ----------------------------------------------------------


def check_result(name: str, verdict: dict) -> dg.AssetCheckResult:
    """A check's verdict from the gold job's result file, its counts as metadata."""
    return dg.AssetCheckResult(
        asset_key=verdict["table"],
        check_name=name,
        passed=verdict["passed"],
        description=verdict["summary"],
        metadata={
            k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v for k, v in verdict["counts"].items()
        },
    )


def gold_asset() -> dg.AssetsDefinition:
    """Every gold table of a date from one launch of the gold job, which writes them to an audit
    branch, runs the checks there and publishes only when all pass; the checks' verdicts come back
    in its result file."""
    job = catalog.GOLD
    specs = [
        dg.AssetSpec(
            table,
            deps=list(catalog.GOLD_TABLE_READS[table]),
            group_name=GOLD_GROUP,
            kinds={"spark", "iceberg"},
            description=f"{table}: computed by the gold job ({job.description})",
            metadata=table_metadata(table),
        )
        for table in job.writes
    ]
    check_specs = [
        dg.AssetCheckSpec(check.name, asset=check.table, description=check.description, blocking=True)
        for check in job.checks
    ]

    @dg.multi_asset(
        name=f"{job.name}_daily",
        specs=specs,
        check_specs=check_specs,
        partitions_def=DAILY,
        retry_policy=GOLD_RETRY_POLICY,
        description=f"`python -m shopstream {job.name} --date <partition>`, through the Spark launcher: one Spark "
        "application computes every gold table of the date, audits it on a branch and publishes it.",
    )
    def materialize(
        context: dg.AssetExecutionContext,
        config: GoldConfig,
        spark_launcher: SparkLauncher,
        completeness: CompletenessGate,
    ):
        silver_versions = completeness.admit(context, config.require_complete_day, job.reads)
        try:
            launch = spark_launcher.run(
                context, job.name, ["--date", context.partition_key], config, labels={sa.LABEL_ASSET: job.name}
            )
        except JobFailed as failed:
            verdicts = (failed.result or {}).get("checks", {})
            refused = {name: verdict for name, verdict in verdicts.items() if not verdict["passed"]}
            if not refused:
                raise
            for name, verdict in refused.items():
                yield check_result(name, verdict)
            # Nothing was published: a retry would compute the same rows from the same silver.
            raise dg.Failure(
                description=f"gold {context.partition_key} not published, checks failed: "
                + "; ".join(f"{name}: {verdict['summary']}" for name, verdict in refused.items()),
                metadata=failed.metadata,
                allow_retries=False,
            ) from None
        result = launch.result or {}
        snapshots = dg.MetadataValue.json(result.get("silver_snapshots", {}))
        for table in job.writes:
            yield dg.MaterializeResult(
                asset_key=table,
                metadata={
                    **launch.metadata(),
                    "totals": dg.MetadataValue.json(result.get("totals", {}).get(table, {})),
                    "silver_snapshots": snapshots,
                    **silver_versions,
                    "dagster/row_count": result.get("rows_written", {}).get(table, 0),
                },
            )
        for name, verdict in result.get("checks", {}).items():
            yield check_result(name, verdict)

    return materialize


GOLD_ASSET = gold_asset()
GOLD_TABLES = catalog.GOLD.writes


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
        "abandoned_audit_branches_dropped": sum(t.get("abandoned_audit_branches_dropped", 0) for t in tables.values()),
    }
    return dg.MaterializeResult(metadata=metadata)
