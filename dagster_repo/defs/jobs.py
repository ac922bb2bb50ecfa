"""Jobs, schedules and the sensor.

Every gold table comes from one Spark application per day (the `gold_daily` multi-asset, which
cannot be split), so one asset job computes them: daily at 02:00 UTC (running by default), the
previous day once the stream has read all of it (`gated_daily_schedule`: skipped with the lagging
partitions otherwise); backfills over date ranges use the same job from the UI.

`spark_application_op` is the op-level way to run any project Spark job through the launcher, in
the manner of dagster-k8s's `k8s_job_op`; `streaming_catch_up` uses it.
"""

import time
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from dagster_repo.defs.assets import GOLD_GROUP, measure_streaming
from dagster_repo.defs.completeness import gated_daily_schedule
from dagster_repo.defs.launcher import SparkJobConfig, SparkLauncher
from dagster_repo.defs.resources import KafkaResource, LakeResource, StreamingJob
from dagster_repo.kube import spark_application as sa
from dagster_repo.monitoring import health
from shopstream import settings
from shopstream.catalog import JOBS

if TYPE_CHECKING:  # what define_asset_job returns; Dagster does not export the class
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

silver_to_gold_processing = dg.define_asset_job(
    "silver_to_gold_processing",
    selection=dg.AssetSelection.groups(GOLD_GROUP),
    description="Every gold table for a date from one Spark application, published only when its checks pass.",
)
iceberg_maintenance = dg.define_asset_job(
    "iceberg_maintenance",
    selection=dg.AssetSelection.assets("iceberg_table_maintenance"),
    description="Compact closed partitions, expire snapshots, remove orphan files.",
)

SCHEDULES = [
    gated_daily_schedule(silver_to_gold_processing, "daily_gold_processing_schedule", hour=2, running=True),
    dg.ScheduleDefinition(
        name="weekly_maintenance_schedule", job=iceberg_maintenance, cron_schedule="0 5 * * 0", execution_timezone="UTC"
    ),
]


# -- the reusable op ----------------------------------------------------------------------------


class SparkApplicationOpConfig(SparkJobConfig):
    job: str = Field(description=f"the project job to run: {', '.join(JOBS)}")
    arguments: list[str] = Field(default_factory=list, description="its arguments (python -m shopstream <job> --help)")


@dg.op(
    description="Runs one project Spark job through the launcher (a SparkApplication in kubernetes mode, "
    "local Spark otherwise) and returns its JSON result.",
    ins={"start_after": dg.In(dg.Nothing, description="optional: ops that must finish first")},
    out=dg.Out(dict, description="the job's result"),
)
def spark_application_op(
    context: dg.OpExecutionContext, config: SparkApplicationOpConfig, spark_launcher: SparkLauncher
):
    if config.job not in JOBS:
        raise dg.Failure(description=f"unknown job {config.job!r}; jobs: {', '.join(JOBS)}")
    launch = spark_launcher.run(context, config.job, list(config.arguments), config)
    context.add_output_metadata(launch.metadata())
    return launch.result or {}


@dg.op(
    description="Refuses to replay while the long-running streaming application owns the checkpoint.",
    out=dg.Out(dg.Nothing),
)
def ensure_stream_is_stopped(context: dg.OpExecutionContext, streaming: StreamingJob) -> None:
    state = streaming.application_state(context.log.warning)
    if state not in (None, "MISSING", *sa.TERMINAL_STATES):
        raise dg.Failure(
            description=f"the streaming SparkApplication {streaming.application} is "
            f"{'starting' if state == 'NEW' else state} and owns the checkpoint: suspend it "
            "(helm upgrade --set streaming.enabled=false) before a catch-up"
        )


@dg.job(
    description="Reads everything new in Kafka into bronze and silver, then stops (the streaming job with "
    "`--trigger catch-up`). Locally this is how new events reach the lake; in a cluster, for when "
    "the long-running stream is suspended.",
    config={"ops": {"spark_application_op": {"config": {"job": "streaming", "arguments": ["--trigger", "catch-up"]}}}},
)
def streaming_catch_up():
    spark_application_op(start_after=ensure_stream_is_stopped())


# -- health alert -------------------------------------------------------------------------------


class AlertConfig(dg.Config):
    problems: list[str]


@dg.op(description="Fails with the streaming job's problems, so the alert shows as a failed run.")
def raise_streaming_alert(config: AlertConfig) -> None:
    raise dg.Failure(description="streaming is unhealthy: " + "; ".join(config.problems))


@dg.job(description="Started by streaming_health_sensor when the stream is unhealthy; its failure is the alert.")
def streaming_health_alert():
    raise_streaming_alert()


ALERT_REPEAT_SECONDS = 3600  # one alert run per kind of problem per hour


def streaming_health_sensor(interval_seconds: int, running: bool) -> dg.SensorDefinition:
    """Alerts by starting a (failing) streaming_health_alert run; on by default where a stream runs
    unattended (kubernetes mode)."""

    @dg.sensor(
        job=streaming_health_alert,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        description=f"Every {interval_seconds} s ({settings.HEALTH_SENSOR_INTERVAL.variable}): alerts (a failed "
        "streaming_health_alert run) when progress is stale, lag is too high or the streaming "
        "application has stopped.",
    )
    def streaming_health_sensor(
        context: dg.SensorEvaluationContext, lake: LakeResource, kafka: KafkaResource, streaming: StreamingJob
    ):
        measured = measure_streaming(lake, kafka, streaming, context.log.warning)
        return alert_for(measured.problems(streaming.thresholds()), measured)

    return streaming_health_sensor


def alert_for(problems: dict[str, str], measured: health.StreamingHealth) -> dg.SkipReason | dg.RunRequest:
    if not problems:
        return dg.SkipReason(f"healthy: progress {measured.progress_age_seconds:.0f}s old, lag {measured.total_lag:,}")
    bucket = int(time.time() // ALERT_REPEAT_SECONDS)
    return dg.RunRequest(
        run_key=f"{'+'.join(sorted(problems))}-{bucket}",
        run_config={"ops": {"raise_streaming_alert": {"config": {"problems": list(problems.values())}}}},
        tags={"shopstream/alert": "streaming"},
    )


JOBS_DEFS: "list[dg.JobDefinition | UnresolvedAssetJobDefinition]" = [
    silver_to_gold_processing,
    iceberg_maintenance,
    streaming_catch_up,
    streaming_health_alert,
]
