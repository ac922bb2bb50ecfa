"""The Dagster side end to end on the embedded default: a generated day goes through a real broker
and the streaming job (run by `streaming_catch_up`, i.e. `spark_application_op` in local mode),
then every gold table and check is materialized by one launch of the gold job with the local
launcher (the checks on damaged rows: tests/batch/test_gold.py; a failed audit through Dagster:
tests/dagster/test_gold_asset.py)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request

import dagster as dg
import pytest
from pyiceberg.expressions import EqualTo

from dagster_repo.definitions import build_definitions
from dagster_repo.defs.assets import iceberg_table_maintenance, streaming_health_monitor
from dagster_repo.defs.resources import StreamingJob
from dagster_repo.dev.demo import prepare_instance
from shopstream import catalog, lake, rules, schema
from shopstream.events.broker import KafkaBroker, create_topics, free_port
from shopstream.events.generator.cli import send
from shopstream.events.generator.shop import GeneratorConfig, Shop
from tests.browser import SCREENSHOTS, check_gold_in_dagster_ui
from tests.dagster.resources import local_resources

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

DAY = dt.date(2026, 3, 9)
CONFIG = GeneratorConfig(
    seed=11,
    start_date=DAY,
    days=1,
    events_per_day=3000,
    late_fraction=0.02,
    duplicate_fraction=0.02,
    malformed_fraction=0.02,
)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture(scope="module")
def module_lake(tmp_path_factory) -> lake.LakeSettings:
    """A lake of this module's own: only the launched jobs and pyiceberg touch it."""
    return lake.LakeSettings.local(tmp_path_factory.mktemp("dagster-lake"))


@pytest.fixture(scope="module")
def iceberg_lake(module_lake):
    return lake.iceberg_catalog(module_lake)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, module_lake):
    """Broker with one generated day -> streaming catch-up -> gold for DAY, all through Dagster,
    with this module's lake and broker given as resources."""
    broker = KafkaBroker(tmp_path_factory.mktemp("dagster-kafka"), port=free_port()).start()
    resources = local_resources(tmp_path_factory, module_lake, broker.bootstrap_servers)
    defs = build_definitions("local", resources)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHOPSTREAM_SHUFFLE_PARTITIONS", "2")  # read by the jobs' own Spark
        # A persistent instance, as `make demo` keeps one: `make ui` then shows these runs.
        env.setenv("DAGSTER_HOME", str(tmp_path_factory.mktemp("dagster-home")))
        prepare_instance()
        try:
            create_topics(broker.bootstrap_servers)
            shop = Shop(CONFIG)
            send(itertools.chain(shop.catalog(), shop.records()), broker.bootstrap_servers, show_progress=False)
            with dg.DagsterInstance.get() as instance:
                catch_up = defs.resolve_job_def("streaming_catch_up").execute_in_process(
                    instance=instance, run_config=QUIET
                )
                gold = defs.resolve_job_def("silver_to_gold_processing").execute_in_process(
                    partition_key=DAY.isoformat(), instance=instance, run_config=QUIET, raise_on_error=False
                )
                step_seconds = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(gold.run_id)}
                yield {
                    "catch_up": catch_up,
                    "gold": gold,
                    "step_seconds": step_seconds,
                    "broker": broker,
                    "resources": resources,
                    "defs": defs,
                    # what `make ui` needs to find the same lake and broker: the user's environment
                    "environment": {
                        **resources["lake"].job_environment(),
                        "SHOPSTREAM_KAFKA_BOOTSTRAP": broker.bootstrap_servers,
                    },
                }
        finally:
            broker.stop()


def test_catch_up_runs_the_streaming_job_through_the_op(pipeline, iceberg_lake):
    result = pipeline["catch_up"]
    assert result.success
    output = result.output_for_node("spark_application_op")
    assert output["job"] == "streaming"
    assert output["totals"]["micro_batches"] >= 1 and output["totals"]["input_rows"] > 0
    purchases = iceberg_lake.load_table(schema.PURCHASES.qualified).scan().to_arrow()
    assert purchases.num_rows > 0
    assert set(purchases.column("event_date").to_pylist()) <= {DAY, DAY + dt.timedelta(days=1)}


def test_every_gold_asset_and_check_materializes_and_passes(pipeline, iceberg_lake, module_lake):
    gold = pipeline["gold"]
    assert gold.success
    checks = [e.event_specific_data for e in gold.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(checks) == 7 and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks]
    materialized = {e.asset_key.to_user_string(): e.materialization for e in gold.get_asset_materialization_events()}
    assert set(materialized) == {
        schema.GOLD_CUSTOMER_ANALYTICS,
        schema.GOLD_SALES_SUMMARY,
        schema.GOLD_SALES_BY_CATEGORY,
        schema.GOLD_PRODUCT_ANALYTICS,
        schema.SILVER_DATA_QUALITY_REPORT,
    }
    silver_snapshots = {
        name: iceberg_lake.load_table(schema.TABLES[name].qualified).current_snapshot() for name in catalog.GOLD.reads
    }
    for name, event in materialized.items():
        assert event.partition == DAY.isoformat()
        # the row count reported by the job equals what is in the table for that day
        table = iceberg_lake.load_table(schema.TABLES[name].qualified)
        rows = table.scan(row_filter=EqualTo("date", DAY.isoformat())).count()
        assert event.metadata["dagster/row_count"].value == rows > 0, name
        assert event.metadata["launcher_mode"].value == "local" and set(table.metadata.refs) == {"main"}
        # the silver each table was computed from: the snapshots current when the job read them
        assert event.metadata["silver_snapshots"].value == {
            name: snapshot.snapshot_id if snapshot else None for name, snapshot in silver_snapshots.items()
        }
    # one Spark application for the day's gold: one step, one launch
    assert list(pipeline["step_seconds"]) == ["gold_daily"]
    summary = materialized[schema.GOLD_SALES_SUMMARY].metadata["totals"].value
    lines = iceberg_lake.load_table(schema.PURCHASES.qualified).scan().to_arrow().to_pylist()
    placed = rules.order_dates((r["order_id"], r["event_date"]) for r in lines)  # an order's first line's day
    silver_revenue = sum(r["revenue"] for r in lines if placed[r["order_id"]] == DAY)
    assert summary and str(silver_revenue) in summary.values(), summary


def test_make_ui_shows_the_gold_assets_their_checks_and_the_run(pipeline):
    """`make ui` on the embedded default's instance, opened in headless Chromium as a user opens it."""
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "dagster_repo.dev.ui", "--port", str(port)],
        env={**os.environ, **pipeline["environment"]},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=5)
                break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, "make ui did not answer"
                time.sleep(1)
        # `dagster dev -m` names the location after the module
        check_gold_in_dagster_ui(base, "dagster_repo.definitions", pipeline["gold"].run_id, SCREENSHOTS / "embedded")
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)


def test_health_monitor_reports_progress_and_lag(pipeline):
    # The catch-up consumed everything: no lag; its progress is recent only if the threshold allows it.
    result = dg.materialize(
        [streaming_health_monitor], resources=pipeline["resources"], run_config=QUIET, raise_on_error=False
    )
    [materialization] = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in materialization.materialization.metadata.items()}
    assert metadata["total_lag"] == 0
    assert metadata["committed_batch"] >= 0 and metadata["last_batch_id"] >= 0
    checks = {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks["consumer_lag_within_limit"].passed
    assert checks["streaming_progress_is_recent"].passed  # the catch-up ran moments ago

    # New events arrive and nobody reads them: lag is exactly what was sent, and the check fails past the limit.
    shop = Shop(
        GeneratorConfig(
            seed=12,
            start_date=DAY,
            days=1,
            events_per_day=300,
            late_fraction=0.0,
            duplicate_fraction=0.0,
            malformed_fraction=0.0,
        )
    )
    sent = send(shop.records(), pipeline["broker"].bootstrap_servers, show_progress=False)
    result = dg.materialize(
        [streaming_health_monitor],
        resources={**pipeline["resources"], "streaming": StreamingJob(max_lag=10)},
        run_config=QUIET,
        raise_on_error=False,
    )
    [materialization] = result.get_asset_materialization_events()
    # The lag is over the topics the job reads: each event counts once, on raw-events.
    assert materialization.materialization.metadata["total_lag"].value == sent.as_dict()["events_sent"]
    lag_check = next(
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == "consumer_lag_within_limit"
    )
    assert not lag_check.passed and "consumer lag is" in lag_check.description


def test_table_maintenance_compacts_closed_days_and_keeps_every_row(pipeline, iceberg_lake):
    """The maintenance asset through the local launcher: DAY is long closed, so its small files are
    compacted; no row is lost or added, and the figures land in the asset's metadata."""
    counts = {
        name: iceberg_lake.load_table(schema.TABLES[name].qualified).scan().count()
        for name in (schema.SILVER_PAGE_VIEWS, schema.BRONZE_EVENTS, schema.GOLD_CUSTOMER_ANALYTICS)
    }
    page_views = iceberg_lake.load_table(schema.PAGE_VIEWS.qualified)
    files_before = len(page_views.inspect.files())
    result = dg.materialize(
        [iceberg_table_maintenance], resources=pipeline["resources"], run_config=QUIET, raise_on_error=False
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["closed_before"] > DAY.isoformat()
    tables = metadata["tables"]
    assert set(counts) <= set(tables) and all("expired_data_files" in t for t in tables.values())
    assert metadata["files_rewritten"] == sum(t.get("rewritten_files", 0) for t in tables.values())
    # every gold run of the test finished: no audit branch was left behind to drop
    assert tables[schema.GOLD_CUSTOMER_ANALYTICS]["abandoned_audit_branches_dropped"] == 0
    assert metadata["abandoned_audit_branches_dropped"] == 0
    for name, rows in counts.items():
        assert iceberg_lake.load_table(schema.TABLES[name].qualified).scan().count() == rows, name
    files_after = len(iceberg_lake.load_table(schema.PAGE_VIEWS.qualified).inspect.files())
    assert files_after <= files_before
    if tables[schema.SILVER_PAGE_VIEWS]["rewritten_files"]:
        assert files_after < files_before


def test_health_sensor_alerts_with_a_failed_run_only_when_unhealthy(pipeline):
    from dagster_repo.defs.jobs import streaming_health_sensor

    sensor = streaming_health_sensor(300, running=False)
    lenient = {**pipeline["resources"], "streaming": StreamingJob(max_progress_age_seconds=86400, max_lag=1_000_000)}
    with dg.build_sensor_context(resources=lenient) as context:
        quiet = sensor(context)
    assert isinstance(quiet, dg.SkipReason) and quiet.skip_message.startswith("healthy:")

    # the events sent unread by the test above exceed a limit of 10
    with dg.build_sensor_context(resources={**pipeline["resources"], "streaming": StreamingJob(max_lag=10)}) as context:
        request = sensor(context)
    assert isinstance(request, dg.RunRequest) and request.run_key.startswith("lag-")
    [problem] = request.run_config["ops"]["raise_streaming_alert"]["config"]["problems"]
    assert problem.startswith("consumer lag is ") and "(limit 10;" in problem

    alert = (
        pipeline["defs"]
        .resolve_job_def("streaming_health_alert")
        .execute_in_process(run_config={**QUIET, **request.run_config}, raise_on_error=False)
    )
    assert not alert.success
    [failure] = [e for e in alert.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.user_failure_data.description == f"streaming is unhealthy: {problem}"
