"""Gold that waits for a complete day and follows late data: the completeness gate (a resource the
gold assets and the daily schedules call), the gold run configuration, and the recompute sensor.

The logic is in `dagster_repo/monitoring/completeness.py`; this module puts it where Dagster acts:
a gold run of an incomplete day fails with the lagging partitions (unless its run config says
`require_complete_day: false`), a daily schedule skips such a day with the same reason in its tick
history, and `gold_recompute_sensor` re-materializes the gold days whose silver changed since they
were computed.
"""

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence

import dagster as dg
from pydantic import Field

from dagster_repo.defs.launcher import SparkJobConfig
from dagster_repo.defs.resources import KafkaResource, LakeResource
from dagster_repo.monitoring import completeness as C
from shopstream import schema, settings

SILVER_VERSIONS = "silver_versions"


class GoldConfig(SparkJobConfig):
    require_complete_day: bool = Field(
        default=True,
        description="fail at once when the stream has not read past the end of the day plus the allowed "
        "lateness; false computes the day from whatever silver holds (a test, or a day known to be final)",
    )


class CompletenessGate(dg.ConfigurableResource):
    """Whether the stream has read a whole day (monitoring/completeness.py), and what silver a gold run reads."""

    lake: LakeResource
    kafka: KafkaResource
    allowed_lateness_seconds: int = Field(
        default=settings.ALLOWED_LATENESS.read_int({}),
        description="the streaming job's --allowed-lateness: a day is complete this long after its end",
    )

    def measure(self, day: dt.date, now: dt.datetime | None = None) -> C.Completeness:
        """Never raises: what cannot be measured makes the day incomplete, with the error as its reason."""
        now = now or dt.datetime.now(dt.UTC)
        try:
            return C.measure(
                self.lake.settings(),
                self.kafka.bootstrap_servers,
                schema.SUBSCRIBED_TOPICS,
                day,
                self.allowed_lateness_seconds,
                now,
            )
        except Exception as exc:  # noqa: BLE001 - the reason a user reads
            return C.Completeness(day, C.cutoff(day, self.allowed_lateness_seconds), problem=f"cannot tell: {exc}")

    def silver_versions(self, days) -> dict[str, dict[str, dict]]:
        return C.silver_versions(self.lake.catalog(), days)

    def admit(self, context: dg.AssetExecutionContext, require_complete_day: bool, reads: Sequence[str]) -> dict:
        """Called first by a gold asset: raises dg.Failure for an incomplete day (no retry: the day
        stays incomplete for hours), else returns the versions of the day partitions of the silver
        tables `reads` that its gold follows."""
        day = dt.date.fromisoformat(context.partition_key)
        if require_complete_day:
            measured = self.measure(day)
            if not measured.complete:
                raise dg.Failure(description=measured.reason(), allow_retries=False)
            context.log.info(measured.reason())
        else:
            context.log.warning(f"require_complete_day is false: {day} is computed from whatever silver holds now")
        # Read before the launch: a silver commit between this and the job's own read shows as a
        # change to the recompute sensor, which recomputes once more rather than never.
        followed = [t for t in C.SILVER_DAILY if t in reads]
        return {
            SILVER_VERSIONS: dg.MetadataValue.json(
                C.silver_versions(self.lake.catalog(), C.dependent_days(day), followed)
            ),
        }


def gated_daily_schedule(job, name: str, hour: int, running: bool = False) -> dg.ScheduleDefinition:
    """At `hour` UTC, the previous day's run of `job` when that day is complete; otherwise a skipped
    tick whose reason names the lagging partitions (start that day from the launchpad later)."""

    @dg.schedule(
        name=name,
        job=job,
        cron_schedule=f"0 {hour} * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
        description=f"At {hour:02d}:00 UTC, {job.name} for the previous day once the stream has read past its "
        "end plus the allowed lateness; skipped with the lagging Kafka partitions otherwise.",
    )
    def schedule(context: dg.ScheduleEvaluationContext, completeness: CompletenessGate):
        day = context.scheduled_execution_time.astimezone(dt.UTC).date() - dt.timedelta(days=1)
        measured = completeness.measure(day)
        if not measured.complete:
            return dg.SkipReason(measured.reason())
        return dg.RunRequest(run_key=day.isoformat(), partition_key=day.isoformat())

    return schedule


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def recorded_versions(instance: dg.DagsterInstance, key: str, days: Sequence[str]) -> dict[str, dict]:
    """day -> the silver versions the newest materialization of `key` for that day recorded."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=list(days)), limit=10 * len(days)
    ).records
    found: dict[str, dict] = {}
    for record in records:  # newest first
        materialization = record.asset_materialization
        if materialization is None or materialization.partition in found:
            continue
        versions = materialization.metadata.get(SILVER_VERSIONS)
        if versions is not None:
            found[str(materialization.partition)] = dict(versions.value)  # type: ignore[arg-type]
    return found


def recompute_sensor(
    gold_keys: Sequence[str],
    lookback_days: int,
    interval_seconds: int,
    today: Callable[[], dt.date] = utc_today,
) -> dg.SensorDefinition:
    """Requests the gold of each day in the look-back whose silver changed after it was computed."""

    @dg.sensor(
        name="gold_recompute_sensor",
        asset_selection=dg.AssetSelection.assets(*gold_keys),
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Every {interval_seconds} s ({settings.RECOMPUTE_SENSOR_INTERVAL.variable}): re-materializes "
        f"the gold of each of the last {lookback_days} days ({settings.RECOMPUTE_LOOKBACK_DAYS.variable}) whose "
        "silver rows changed after its gold was computed (late events, a replay); days whose gold never ran "
        "are left alone.",
    )
    def gold_recompute_sensor(context: dg.SensorEvaluationContext, completeness: CompletenessGate):
        last = today() - dt.timedelta(days=1)  # the newest daily partition
        days = [(last - dt.timedelta(days=n)).isoformat() for n in range(lookback_days)]
        recorded = {key: recorded_versions(context.instance, key, days) for key in gold_keys}
        computed = sorted({day for by_day in recorded.values() for day in by_day})
        if not computed:
            return dg.SkipReason(f"no gold of {days[-1]} to {days[0]} was computed yet")
        needed = {d for day in computed for d in C.dependent_days(dt.date.fromisoformat(day))}
        current = completeness.silver_versions(needed)
        requests = []
        for day in computed:
            read = {d.isoformat() for d in C.dependent_days(dt.date.fromisoformat(day))}
            now = {table: {d: v for d, v in by_day.items() if d in read} for table, by_day in current.items()}
            stale = [key for key in gold_keys if day in recorded[key] and C.stale_tables(recorded[key][day], now)]
            if stale:
                changed = C.stale_tables(recorded[stale[0]][day], now)
                context.log.info(f"gold of {day} is stale: {', '.join(changed)} changed")
                version = hashlib.sha256(json.dumps(now, sort_keys=True).encode()).hexdigest()[:12]
                requests.append(
                    dg.RunRequest(
                        run_key=f"{day}-{version}",
                        partition_key=day,
                        # the gold tables of a day are computed together (one Spark application)
                        asset_selection=[dg.AssetKey(key) for key in gold_keys],
                        tags={"shopstream/recompute": ", ".join(changed)[:255]},
                    )
                )
        if not requests:
            return dg.SkipReason(f"silver unchanged since the gold of {', '.join(computed)} was computed")
        return requests

    return gold_recompute_sensor
