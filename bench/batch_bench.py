"""Batch benchmark: the gold job at three daily volumes in a warm Spark session, against DuckDB
computing the same daily sales and product numbers over the same Iceberg data files; and the whole
gold day end to end through Dagster (the `gold_daily` asset materialized for one partition with the
local launcher: a new Spark application that computes, audits and publishes every gold table), at
20,000 and 1,000,000 events/day, with the four launches of the jobs before it as the baseline when
`--baseline-jobs` names their code.

    .venv/bin/python bench/batch_bench.py [--volumes 250000 1000000 4000000] [--gold-day-volumes 20000 1000000]
    .venv/bin/python bench/batch_bench.py --volumes --gold-day-volumes 20000 --baseline-jobs /old/checkout/jobs

Silver is built straight from the generator's events for one day (no Kafka, no streaming job:
this measures the batch side only; a small unreported first pass warms the JVM): the generator's
valid events become silver rows with the
streaming job's definitions (revenue, event date) and sessions are aggregated in Python, then
appended with pyiceberg. Results are printed and written to bench/results/batch.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa

from dagster_repo.defs.assets import GOLD_ASSET
from dagster_repo.defs.completeness import CompletenessGate
from dagster_repo.defs.launcher import LocalSparkLauncher, SparkJobConfig
from dagster_repo.defs.resources import KafkaResource, LakeResource
from shopstream import lake, schema
from shopstream.events.generator.shop import VALID, GeneratorConfig, Shop
from shopstream.settings import DRIVER_MEMORY, SPARK_MASTER
from shopstream.spark import iceberg
from shopstream.spark.batch import gold

RESULTS = Path(__file__).resolve().parent / "results"
DAY = dt.date(2026, 11, 1)
# The four daily jobs that each started a Spark application before the gold job computed them all.
FOUR_JOBS = (
    schema.GOLD_CUSTOMER_ANALYTICS,
    schema.GOLD_SALES_SUMMARY,
    schema.GOLD_PRODUCT_ANALYTICS,
    schema.SILVER_DATA_QUALITY_REPORT,
)
CHUNK = 250_000
WARM_UP_EVENTS = 20_000


def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def build_silver(catalog, events_per_day: int) -> int:
    """One simulated day of valid events, written as silver; returns the events written."""
    for table in (schema.PAGE_VIEWS, schema.PURCHASES, schema.USER_SESSIONS, schema.PRODUCTS, schema.QUARANTINE_TABLE):
        catalog.create_table(table.qualified, schema.iceberg_schema(table.columns))
    shop = Shop(
        GeneratorConfig(
            seed=3,
            start_date=DAY,
            events_per_day=events_per_day,
            late_fraction=0.0,
            duplicate_fraction=0.0,
            malformed_fraction=0.0,
        )
    )
    products = {p.product_id: p for p in shop.products}
    catalog.load_table(schema.PRODUCTS.qualified).append(
        pa.Table.from_pylist(
            [
                {
                    "product_id": p.product_id,
                    "name": p.name,
                    "category": p.category,
                    "brand": p.brand,
                    "price": p.price,
                    "currency": "USD",
                    "updated_at": dt.datetime.combine(DAY, dt.time(), dt.UTC),
                }
                for p in products.values()
            ],
            schema.arrow_schema(schema.PRODUCT_COLUMNS),
        )
    )
    clicks: list[dict] = []
    lines: list[dict] = []
    written = 0
    sessions: dict[str, dict] = {}

    def flush() -> None:
        for table, rows in ((schema.PAGE_VIEWS, clicks), (schema.PURCHASES, lines)):
            if rows:
                catalog.load_table(table.qualified).append(
                    pa.Table.from_pylist(rows, schema.arrow_schema(table.columns))
                )
                rows.clear()

    for record in shop.records():
        if record.kind != VALID:
            continue
        e = json.loads(record.value, parse_float=Decimal)
        e["event_time"], e["ingest_time"] = _ts(e["event_time"]), _ts(e["ingest_time"])
        s = sessions.setdefault(
            e["session_id"],
            defaultdict(int, user_id=e["user_id"], times=[], products=set(), order_ids=set(), revenue=Decimal(0)),
        )
        s["times"].append(e["event_time"])
        if e["event_type"] in (schema.PAGE_VIEW, schema.ADD_TO_CART):
            clicks.append({**e, "page_type": e.get("page_type", "product"), "event_date": e["event_time"].date()})
            if e["event_type"] == schema.PAGE_VIEW:
                s["page_views"] += 1
                if e["page_type"] == "product":
                    s["products"].add(e["product_id"])
            else:
                s["cart_adds"] += 1
        elif e["event_type"] == schema.PURCHASE:
            revenue = e["quantity"] * e["unit_price"] - e["discount"]
            p = products[e["product_id"]]
            lines.append(
                {
                    **e,
                    "revenue": revenue,
                    "category": p.category,
                    "list_price": p.price,
                    "event_date": e["event_time"].date(),
                }
            )
            s["order_ids"].add(e["order_id"])
            s["revenue"] += revenue
        else:
            s.update({k: e[k] for k in ("device", "referrer", "country") if k in e})
        written += 1
        if len(clicks) >= CHUNK:
            flush()
    flush()
    catalog.load_table(schema.USER_SESSIONS.qualified).append(
        pa.Table.from_pylist(
            [
                {
                    "session_id": sid,
                    "user_id": s["user_id"],
                    "session_start": min(s["times"]),
                    "session_end": max(s["times"]),
                    "duration_seconds": int((max(s["times"]) - min(s["times"])).total_seconds()),
                    "device": s.get("device"),
                    "referrer": s.get("referrer"),
                    "country": s.get("country"),
                    "page_views": s["page_views"],
                    "products_viewed": len(s["products"]),
                    "cart_adds": s["cart_adds"],
                    "orders": len(s["order_ids"]),
                    "revenue": s["revenue"],
                    "converted": bool(s["order_ids"]),
                    "session_date": min(s["times"]).date(),
                }
                for sid, s in sessions.items()
            ],
            schema.arrow_schema(schema.USER_SESSIONS.columns),
        )
    )
    return written


def data_files(catalog, table: schema.Table) -> list[str]:
    return [
        task.file.file_path.removeprefix("file://") for task in catalog.load_table(table.qualified).scan().plan_files()
    ]


def duckdb_numbers(catalog) -> tuple[dict, dict, float, float]:
    """The day's sales totals and per-product figures, computed by DuckDB from the data files."""
    con = duckdb.connect()
    pv, pu = data_files(catalog, schema.PAGE_VIEWS), data_files(catalog, schema.PURCHASES)
    # The lines of the orders placed on the day: an order counts on the day of its first line.
    orders_of_day = """
        SELECT * FROM read_parquet($pu)
        QUALIFY min(event_date) OVER (PARTITION BY order_id) = $day"""
    started = time.monotonic()
    sales = con.execute(
        f"SELECT sum(revenue), count(DISTINCT order_id), sum(quantity), count(DISTINCT user_id) FROM ({orders_of_day})",
        {"pu": pu, "day": DAY},
    ).fetchall()[0]
    sales_seconds = time.monotonic() - started
    started = time.monotonic()
    rows = con.execute(
        f"""
        WITH v AS (SELECT product_id, count(*) AS views FROM read_parquet($pv)
                   WHERE event_date = $day AND event_type = 'page_view' AND page_type = 'product' GROUP BY 1),
             c AS (SELECT product_id, count(*) AS cart_adds FROM read_parquet($pv)
                   WHERE event_date = $day AND event_type = 'add_to_cart' GROUP BY 1),
             b AS (SELECT product_id, count(*) AS purchases, sum(quantity) AS units, sum(revenue) AS revenue
                   FROM ({orders_of_day}) GROUP BY 1)
        SELECT product_id, coalesce(views, 0), coalesce(cart_adds, 0), coalesce(purchases, 0), coalesce(units, 0),
               coalesce(revenue, 0)
        FROM v FULL JOIN c USING (product_id) FULL JOIN b USING (product_id)""",
        {"pv": pv, "pu": pu, "day": DAY},
    ).fetchall()
    product_seconds = time.monotonic() - started
    sales_dict = {"revenue": Decimal(sales[0]), "orders": sales[1], "units": int(sales[2]), "unique_buyers": sales[3]}
    products = {r[0]: (r[1], r[2], r[3], int(r[4]), Decimal(r[5])) for r in rows}
    return sales_dict, products, sales_seconds, product_seconds


def new_lake(root: Path) -> tuple[lake.LakeSettings, object]:
    settings = lake.LakeSettings.local(root)
    catalog = lake.iceberg_catalog(settings)
    catalog.create_namespace(schema.NAMESPACE)
    return settings, catalog


def measure(volume: int, workdir: Path) -> dict:
    settings, catalog = new_lake(workdir / f"lake-{volume}")
    started = time.monotonic()
    events = build_silver(catalog, volume)
    build_seconds = time.monotonic() - started

    started = time.monotonic()
    spark = iceberg.spark_session(settings, f"batch-bench-{volume}")
    startup = time.monotonic() - started
    try:
        started = time.monotonic()
        result = gold.run(spark, DAY)
        jobs = {"gold": {"seconds": round(time.monotonic() - started, 2), "rows": result["rows_written"]}}
        gold_sales = spark.table(lake.table_ref(schema.GOLD_SALES_SUMMARY)).first()
        gold_products = {
            r.product_id: (r.views, r.cart_adds, r.purchases, r.units, r.revenue)
            for r in spark.table(lake.table_ref(schema.GOLD_PRODUCT_ANALYTICS)).collect()
        }
    finally:
        spark.stop()
    sales, products, duck_sales_s, duck_products_s = duckdb_numbers(catalog)
    identical = (sales == {k: getattr(gold_sales, k) for k in sales}) and products == gold_products
    duck_s = duck_sales_s + duck_products_s
    return {
        "events": events,
        "silver_build_seconds": round(build_seconds, 1),
        "spark_startup_seconds": round(startup, 2),
        "jobs": jobs,
        "published": result["published"],
        "duckdb": {"sales_seconds": round(duck_sales_s, 3), "products_seconds": round(duck_products_s, 3)},
        "identical_numbers": identical,
        "ratio_gold_to_duckdb": round(jobs["gold"]["seconds"] / duck_s, 1),
        "ratio_gold_with_startup_to_duckdb": round((jobs["gold"]["seconds"] + startup) / duck_s, 1),
    }


def gold_day(volume: int, workdir: Path, baseline_jobs: Path | None) -> dict:
    """One day's gold end to end through Dagster, as the schedule runs it in local mode: the
    `gold_daily` asset materialized for the day in an in-process run of an ephemeral instance, its
    launcher starting `python -m shopstream gold` (a new JVM). With `baseline_jobs`, then the four
    launches of the jobs before it, one after another as their assets ran, on the same silver."""
    settings, catalog = new_lake(workdir / f"gold-day-{volume}")
    events = build_silver(catalog, volume)
    resource = LakeResource(home=str(workdir), catalog_uri=settings.catalog_uri, warehouse=settings.warehouse)
    kafka = KafkaResource(bootstrap_servers="")
    started = time.monotonic()
    run = dg.materialize(
        [GOLD_ASSET],
        partition_key=DAY.isoformat(),
        # silver built here without Kafka: the completeness gate has no stream to ask
        resources={
            "spark_launcher": LocalSparkLauncher(lake=resource, kafka=kafka),
            "completeness": CompletenessGate(lake=resource, kafka=kafka),
        },
        instance=dg.DagsterInstance.ephemeral(),
        run_config={
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            "ops": {GOLD_ASSET.op.name: {"config": {"require_complete_day": False}}},
        },
        raise_on_error=False,
    )
    seconds = time.monotonic() - started
    for failure in (e for e in run.all_events if e.event_type_value == "STEP_FAILURE"):
        print(f"gold day at {volume:,} events failed: {failure.message}", file=sys.stderr)
    [summary] = [
        e.materialization.metadata
        for e in run.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(schema.GOLD_SALES_SUMMARY)
    ] or [{}]
    measured: dict = {
        "events_per_day": volume,
        "events": events,
        "success": run.success,
        "seconds": round(seconds, 1),
        "launch_seconds": summary["launch_duration_seconds"].value if summary else None,
        "job_seconds": summary["job_duration_seconds"].value if summary else None,
    }
    if baseline_jobs is not None:
        # The same Spark as the launcher gives the gold job: its master and driver memory.
        config = SparkJobConfig()
        environment = {
            **os.environ,
            **resource.job_environment(),
            SPARK_MASTER.variable: f"local[{config.executor_cores}]",
            DRIVER_MEMORY.variable: config.driver_memory,
            "PYTHONPATH": str(baseline_jobs),
        }
        started = time.monotonic()
        for job in FOUR_JOBS:
            subprocess.run(
                [sys.executable, "-m", "shopstream", job, "--date", DAY.isoformat()],
                env=environment,
                check=True,
                capture_output=True,
            )
        measured["four_launches_seconds"] = round(time.monotonic() - started, 1)
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--volumes", type=int, nargs="*", default=[250_000, 1_000_000, 4_000_000], help="events per day for each run"
    )
    parser.add_argument(
        "--gold-day-volumes",
        type=int,
        nargs="*",
        default=[20_000, 1_000_000],
        help="events per day for each gold day through Dagster",
    )
    parser.add_argument(
        "--baseline-jobs",
        type=Path,
        help="the `jobs` folder of a checkout with the four gold jobs (before the gold job): timed on the same "
        "silver after each gold day",
    )
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    runs: dict[str, dict] = {}
    days: list[dict] = []
    out = {"machine_cores": os.cpu_count(), "runs": runs, "gold_day": days}
    with tempfile.TemporaryDirectory(prefix="shopstream-batch-bench-") as tmp:
        os.environ["SHOPSTREAM_HOME"] = tmp
        # A small first pass warms the JVM (class loading, JIT), which would otherwise be charged
        # to the first volume and hide how time grows with volume.
        if args.volumes:
            warm_up = measure(WARM_UP_EVENTS, Path(tmp) / "warm-up")
            out["spark_cold_start_seconds"] = warm_up["spark_startup_seconds"]
        for volume in args.volumes:
            print(f"volume {volume:,} events/day ...", file=sys.stderr, flush=True)
            runs[str(volume)] = measure(volume, Path(tmp))
            print(json.dumps(runs[str(volume)]), file=sys.stderr, flush=True)
        for volume in args.gold_day_volumes:
            print(f"gold day through Dagster, {volume:,} events/day ...", file=sys.stderr, flush=True)
            days.append(gold_day(volume, Path(tmp), args.baseline_jobs))
            print(json.dumps(days[-1]), file=sys.stderr, flush=True)
    (RESULTS / "batch.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
