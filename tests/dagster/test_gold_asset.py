"""The gold asset with the local launcher on the hand-worked day of tests/batch/test_gold.py: a
failed audit reports the failed check with its counts, materializes and publishes nothing and is
not retried; once silver is right, one launch materializes every gold table with every check."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pytest

from dagster_repo.defs.assets import GOLD_ASSET
from dagster_repo.defs.completeness import CompletenessGate
from dagster_repo.defs.launcher import LocalSparkLauncher
from dagster_repo.defs.resources import KafkaResource, LakeResource
from shopstream import catalog, schema
from tests.batch.test_gold import DAY, PAGE_VIEWS, VIEWS_OF_WHAT_WAS_BOUGHT, write_silver

pytestmark = pytest.mark.spark

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def materialize_gold(lake_settings, tmp_path) -> dg.ExecuteInProcessResult:
    lake_resource = LakeResource(
        home=str(tmp_path), catalog_uri=lake_settings.catalog_uri, warehouse=lake_settings.warehouse
    )
    kafka = KafkaResource(bootstrap_servers="")
    # silver written here, without Kafka: no stream to wait for
    return dg.materialize(
        [GOLD_ASSET],
        partition_key=DAY.isoformat(),
        resources={
            "spark_launcher": LocalSparkLauncher(lake=lake_resource, kafka=kafka),
            "completeness": CompletenessGate(lake=lake_resource, kafka=kafka),
        },
        run_config={**QUIET, "ops": {"gold_daily": {"config": {"executor_cores": 1, "require_complete_day": False}}}},
        raise_on_error=False,
    )


def gold_table(iceberg, name: str):
    """A table through pyiceberg, loaded fresh (the test's Spark session could serve a cached version)."""
    return iceberg.load_table(schema.TABLES[name].qualified)


def test_a_failed_audit_publishes_nothing_then_a_good_day_publishes_everything(
    empty_lake, iceberg, lake_settings, tmp_path
):
    # p1 and p2 were each bought in three sessions but viewed twice: the views check refuses the day.
    write_silver(empty_lake, page_views=PAGE_VIEWS)
    failed = materialize_gold(lake_settings, tmp_path)
    assert not failed.success
    assert failed.get_asset_materialization_events() == []
    checks = {e.check_name: e for e in failed.get_asset_check_evaluations()}
    assert {name: c.passed for name, c in checks.items()} == {"product_views_cover_purchases": False}
    metadata = {k: v.value for k, v in checks["product_views_cover_purchases"].metadata.items()}
    assert (metadata["products_with_views_below_sessions"], metadata["examples"]) == (2, ["p1", "p2"])
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.user_failure_data.description == (
        f"gold {DAY} not published, checks failed: product_views_cover_purchases: "
        "views below purchasing sessions: products_with_views_below_sessions 2"
    )
    assert not [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"], "an audit is not retried"
    for name in catalog.GOLD.writes:
        table = gold_table(iceberg, name)
        assert table.scan().count() == 0 and set(table.metadata.refs) == {"main"}, name

    # The missing views arrive: the same partition now publishes every table with every check passed.
    gold_table(iceberg, schema.SILVER_PAGE_VIEWS).append(
        pa.Table.from_pylist(VIEWS_OF_WHAT_WAS_BOUGHT, schema.arrow_schema(schema.PAGE_VIEWS.columns))
    )
    published = materialize_gold(lake_settings, tmp_path)
    assert published.success
    checks = {e.check_name: e for e in published.get_asset_check_evaluations()}
    assert sorted(checks) == sorted(c.name for c in catalog.GOLD_CHECKS) and all(c.passed for c in checks.values())
    materialized = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in published.get_asset_materialization_events()
    }
    assert {name: m["dagster/row_count"].value for name, m in materialized.items()} == {
        schema.GOLD_CUSTOMER_ANALYTICS: 5,
        schema.GOLD_SALES_SUMMARY: 1,
        schema.GOLD_SALES_BY_CATEGORY: 2,
        schema.GOLD_PRODUCT_ANALYTICS: 3,
        schema.SILVER_DATA_QUALITY_REPORT: 3,
    }
    for name, m in materialized.items():
        table = gold_table(iceberg, name)
        assert table.scan().count() == m["dagster/row_count"].value and set(table.metadata.refs) == {"main"}, name
    summary = materialized[schema.GOLD_SALES_SUMMARY]
    assert summary["totals"].value == {"revenue": "79.00", "orders": 5}
    snapshots = summary["silver_snapshots"].value
    current = gold_table(iceberg, schema.SILVER_PAGE_VIEWS).current_snapshot()
    assert snapshots[schema.SILVER_PAGE_VIEWS] == current.snapshot_id, "the silver snapshot the job read"
