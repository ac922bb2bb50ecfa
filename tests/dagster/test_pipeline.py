"""The Dagster side end to end on the embedded default: a generated day goes through a real broker
and the streaming job (run by `streaming_catch_up`, i.e. `spark_application_op` in local mode),
then every gold asset and check is materialized by the local launcher; each check then fails on
deliberately corrupted gold rows, and passes again once they are put back."""

from __future__ import annotations

import datetime as dt
import itertools

import dagster as dg
import pytest

from dagster_repo import quality
from dagster_repo.assets import GOLD_ASSETS, SILVER_ASSETS, streaming_health_monitor
from dagster_repo.checks import GOLD_CHECKS
from dagster_repo.definitions import defs
from dagster_repo.launcher import SparkLauncher
from shopstream import lake, schema
from shopstream.generator.cli import send
from shopstream.generator.shop import GeneratorConfig, Shop
from shopstream.kafka_local import KafkaBroker, create_topics, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

DAY = dt.date(2026, 3, 9)
CONFIG = GeneratorConfig(seed=11, start_date=DAY, days=1, events_per_day=3000, late_fraction=0.02,
                         duplicate_fraction=0.02, malformed_fraction=0.02)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, lake_settings, spark):
    """Broker with one generated day -> streaming catch-up -> gold for DAY, all through Dagster."""
    for name in schema.TABLES:
        spark.sql(f"DROP TABLE IF EXISTS {lake.table_ref(name)} PURGE")
    broker = KafkaBroker(tmp_path_factory.mktemp("dagster-kafka"), port=free_port()).start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHOPSTREAM_CATALOG_URI", lake_settings.catalog_uri)
        env.setenv("SHOPSTREAM_WAREHOUSE", lake_settings.warehouse)
        env.setenv("SHOPSTREAM_KAFKA_BOOTSTRAP", broker.bootstrap_servers)
        env.setenv("SHOPSTREAM_CHECKPOINT_DIR", str(tmp_path_factory.mktemp("checkpoints")))
        env.setenv("SHOPSTREAM_SHUFFLE_PARTITIONS", "2")
        try:
            create_topics(broker.bootstrap_servers)
            shop = Shop(CONFIG)
            send(itertools.chain(shop.catalog(), shop.records()), broker.bootstrap_servers, show_progress=False)
            with dg.DagsterInstance.ephemeral() as instance:
                catch_up = defs.resolve_job_def("streaming_catch_up").execute_in_process(instance=instance, run_config=QUIET)
                gold = defs.resolve_job_def("silver_to_gold_processing").execute_in_process(
                    partition_key=DAY.isoformat(), instance=instance, run_config=QUIET, raise_on_error=False)
                step_seconds = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(gold.run_id)}
                yield {"catch_up": catch_up, "gold": gold, "step_seconds": step_seconds, "broker": broker}
        finally:
            broker.stop()


def test_catch_up_runs_the_streaming_job_through_the_op(pipeline, iceberg):
    result = pipeline["catch_up"]
    assert result.success
    output = result.output_for_node("spark_application_op")
    assert output["job"] == "streaming" if "job" in output else True
    purchases = iceberg.load_table(schema.PURCHASES.qualified).scan().to_arrow()
    assert purchases.num_rows > 0
    assert set(purchases.column("event_date").to_pylist()) <= {DAY, DAY + dt.timedelta(days=1)}


def test_every_gold_asset_and_check_materializes_and_passes(pipeline, iceberg):
    gold = pipeline["gold"]
    assert gold.success
    checks = [e.event_specific_data for e in gold.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(checks) == 7 and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks]
    materialized = {e.asset_key.to_user_string(): e.materialization for e in gold.get_asset_materialization_events()}
    assert set(materialized) == {schema.GOLD_CUSTOMER_ANALYTICS, schema.GOLD_SALES_SUMMARY, schema.GOLD_SALES_BY_CATEGORY,
                                 schema.GOLD_PRODUCT_ANALYTICS, schema.SILVER_DATA_QUALITY_REPORT}
    for name, event in materialized.items():
        assert event.partition == DAY.isoformat()
        # the row count reported by the job equals what is in the table for that day
        rows = quality.Lake(lake.LakeSettings.from_env()).gold(name, DAY)
        assert event.metadata["dagster/row_count"].value == len(rows) > 0, name
        assert event.metadata["launcher_mode"].value == "local"
    summary = materialized[schema.GOLD_SALES_SUMMARY].metadata["totals"].value
    silver_revenue = sum(r["revenue"] for r in iceberg.load_table(schema.PURCHASES.qualified).scan().to_arrow().to_pylist()
                         if r["event_date"] == DAY)
    assert summary and str(silver_revenue) in summary.values(), summary


def run_check(name: str) -> dg.AssetCheckEvaluation:
    check = next(c for c in GOLD_CHECKS if next(iter(c.check_keys)).name == name)
    result = dg.materialize([*SILVER_ASSETS, *GOLD_ASSETS, check], selection=dg.AssetSelection.checks(check),
                            partition_key=DAY.isoformat(), resources={"spark_launcher": SparkLauncher()},
                            run_config=QUIET, raise_on_error=False)
    [evaluation] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return evaluation


def one(spark, sql: str):
    return spark.sql(sql).first()


# check -> (corrupting statement, restoring statement, the metadata key that must count the damage)
def corruptions(spark):
    customers, sales, products = (lake.table_ref(t) for t in (schema.GOLD_CUSTOMER_ANALYTICS, schema.GOLD_SALES_SUMMARY,
                                                               schema.GOLD_PRODUCT_ANALYTICS))
    day = f"date = DATE '{DAY}'"
    user = one(spark, f"SELECT user_id, segment FROM {customers} WHERE {day} AND segment = 'new' ORDER BY user_id LIMIT 1")
    buyer = one(spark, f"SELECT product_id, view_to_cart_rate, views FROM {products} WHERE {day} AND purchasing_sessions > 0 "
                       "ORDER BY product_id LIMIT 1")
    rate = "NULL" if buyer.view_to_cart_rate is None else str(buyer.view_to_cart_rate)
    return {
        "customer_completeness": (
            f"UPDATE {customers} SET user_id = 'ghost' WHERE {day} AND user_id = '{user.user_id}'",
            f"UPDATE {customers} SET user_id = '{user.user_id}' WHERE {day} AND user_id = 'ghost'",
            "missing_customers"),
        "customer_revenue_consistency": (
            f"UPDATE {customers} SET revenue = revenue + 5 WHERE {day} AND user_id = '{user.user_id}'",
            f"UPDATE {customers} SET revenue = revenue - 5 WHERE {day} AND user_id = '{user.user_id}'",
            "difference_cents"),
        "customer_segment_logic": (
            f"UPDATE {customers} SET segment = 'loyal' WHERE {day} AND user_id = '{user.user_id}'",
            f"UPDATE {customers} SET segment = '{user.segment}' WHERE {day} AND user_id = '{user.user_id}'",
            "wrong_segment"),
        "sales_revenue_arithmetic": (
            f"UPDATE {sales} SET revenue = revenue + 1 WHERE {day}",
            f"UPDATE {sales} SET revenue = revenue - 1 WHERE {day}",
            "difference_from_silver_cents"),
        "sales_order_consistency": (
            f"UPDATE {sales} SET orders = orders + 3 WHERE {day}",
            f"UPDATE {sales} SET orders = orders - 3 WHERE {day}",
            "difference_from_silver_orders"),
        "product_rates_in_range": (
            f"UPDATE {products} SET view_to_cart_rate = 1.5 WHERE {day} AND product_id = '{buyer.product_id}'",
            f"UPDATE {products} SET view_to_cart_rate = {rate} WHERE {day} AND product_id = '{buyer.product_id}'",
            "products_with_rate_out_of_range"),
        "product_views_cover_purchases": (
            f"UPDATE {products} SET views = 0 WHERE {day} AND product_id = '{buyer.product_id}'",
            f"UPDATE {products} SET views = {buyer.views} WHERE {day} AND product_id = '{buyer.product_id}'",
            "products_with_views_below_sessions"),
    }


@pytest.mark.parametrize("check", ["customer_completeness", "customer_revenue_consistency", "customer_segment_logic",
                                   "sales_revenue_arithmetic", "sales_order_consistency", "product_rates_in_range",
                                   "product_views_cover_purchases"])
def test_each_check_fails_on_corrupted_gold(pipeline, spark, check):
    assert pipeline["gold"].success
    corrupt, restore, counter = corruptions(spark)[check]
    spark.sql(corrupt)
    try:
        failed = run_check(check)
    finally:
        spark.sql(restore)
    assert not failed.passed
    assert failed.metadata[counter].value > 0, failed.metadata
    assert failed.description and counter in failed.description
    assert run_check(check).passed


def test_health_monitor_reports_progress_and_lag(pipeline):
    # The catch-up consumed everything: no lag; its progress is recent only if the threshold allows it.
    result = dg.materialize([streaming_health_monitor], resources={"spark_launcher": SparkLauncher()}, run_config=QUIET,
                            raise_on_error=False)
    [materialization] = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in materialization.materialization.metadata.items()}
    assert metadata["total_lag"] == 0
    assert metadata["committed_batch"] >= 0 and metadata["last_batch_id"] >= 0
    checks = {e.event_specific_data.check_name: e.event_specific_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["consumer_lag_within_limit"].passed
    assert checks["streaming_progress_is_recent"].passed  # the catch-up ran moments ago

    # New events arrive and nobody reads them: lag is exactly what was sent, and the check fails past the limit.
    shop = Shop(GeneratorConfig(seed=12, start_date=DAY, days=1, events_per_day=300, late_fraction=0.0,
                                duplicate_fraction=0.0, malformed_fraction=0.0))
    sent = send(shop.records(), pipeline["broker"].bootstrap_servers, show_progress=False)
    result = dg.materialize([streaming_health_monitor], resources={"spark_launcher": SparkLauncher()},
                            run_config={**QUIET, "ops": {"streaming_health_monitor": {"config": {"max_lag": 10}}}},
                            raise_on_error=False)
    [materialization] = result.get_asset_materialization_events()
    assert materialization.materialization.metadata["total_lag"].value == sent.as_dict()["messages"]
    lag_check = next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                     and e.event_specific_data.check_name == "consumer_lag_within_limit")
    assert not lag_check.passed and "consumer lag is" in lag_check.description
