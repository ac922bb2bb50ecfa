"""The gold job: every gold table of a day in one Spark application, from one read of silver,
written, audited and published (write-audit-publish).

1. Silver is read at the snapshot each table was at when the job started (the ids go into the
   result); the windows several tables share are read once and kept (`Inputs`).
2. Each gold table with rows is written to a new branch of its table, `audit_<day>_at_<made>_<id>`,
   with a dynamic partition overwrite: main, which every reader sees, is untouched.
3. The blocking checks (`audit.py`) run in Spark on the branch rows of the day and on silver.
4. All pass: each branch's commit is cherry-picked onto main. One fails: nothing is published.
   Either way the branches are dropped, and the result file carries every check's verdict.

`python -m shopstream gold --help` for the arguments. Exit status 0 when published, 1 when a silver
table is missing, 3 when a check failed (one line on stderr names the failed checks and counts).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from decimal import Decimal

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopstream import catalog, lake, results, schema, settings
from shopstream.cli import add_result_file, iso_date, positive_int
from shopstream.lake import LakeSettings
from shopstream.rules import TRAILING_DAYS
from shopstream.spark import iceberg
from shopstream.spark.batch import audit, transforms
from shopstream.spark.batch.inputs import Inputs, MissingTable

JOB = catalog.GOLD
AUDIT_FAILED = 3  # the exit status of a run whose checks failed


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m shopstream {JOB.name}",
        description=JOB.description,
        epilog=f"exit status: 0 published; 1 a silver table is missing; 2 a usage error; {AUDIT_FAILED} a check "
        "failed, nothing published (one line on stderr names each failed check and its counts)",
    )
    parser.add_argument("--date", required=True, type=iso_date, help="the day to compute, YYYY-MM-DD (UTC)")
    add_result_file(parser, "the run's result (rows per table, silver snapshots, checks, duration)")
    LakeSettings.add_arguments(parser)
    settings.TOGETHER_MIN_BASKETS.add_argument(parser, "--together-min-baskets", type=positive_int)
    return parser


def build(i: Inputs) -> dict[str, DataFrame]:
    """Every gold table of the day, in the order of `JOB.writes`."""
    silver_of_day = {
        schema.SILVER_PAGE_VIEWS: i.page_views(),
        schema.SILVER_PURCHASES: i.purchases(),
        schema.SILVER_USER_SESSIONS: i.sessions(),
    }
    return {
        schema.GOLD_CUSTOMER_ANALYTICS: transforms.customer_analytics(
            i.day, i.page_views(), i.order_lines(days_before=None), i.sessions()
        ),
        schema.GOLD_SALES_SUMMARY: transforms.sales_summary(
            i.day, i.page_views(), i.order_lines(days_before=TRAILING_DAYS), i.sessions(days_before=TRAILING_DAYS)
        ),
        schema.GOLD_SALES_BY_CATEGORY: transforms.sales_by_category(i.day, i.order_lines()),
        schema.GOLD_PRODUCT_ANALYTICS: transforms.product_analytics(
            i.day, i.page_views(), i.order_lines(), i.products(), i.options.together_min_baskets
        ),
        schema.SILVER_DATA_QUALITY_REPORT: transforms.data_quality(i.day, silver_of_day, i.quarantine()),
    }


def totals(evidence: audit.Evidence, quality_report: DataFrame, written: dict[str, int]) -> dict[str, dict]:
    """The key figures of each table, for the result file and the assets' metadata: the sums the
    checks computed on the branch rows (the rows written), and the quality report's rows."""

    def money(total: Decimal, table: str) -> str:
        return str(total) if written[table] else "0"  # nothing to sum: "0", not the checks' "0.00"

    sales = audit.sales_figures(evidence)
    return {
        schema.GOLD_CUSTOMER_ANALYTICS: {
            "customers": written[schema.GOLD_CUSTOMER_ANALYTICS],
            "revenue": money(audit.customer_figures(evidence)["revenue"], schema.GOLD_CUSTOMER_ANALYTICS),
        },
        schema.GOLD_SALES_SUMMARY: {
            "revenue": money(sales["revenue"], schema.GOLD_SALES_SUMMARY),
            "orders": sales["orders"],
        },
        schema.GOLD_SALES_BY_CATEGORY: {"categories": written[schema.GOLD_SALES_BY_CATEGORY]},
        schema.GOLD_PRODUCT_ANALYTICS: {
            "products": written[schema.GOLD_PRODUCT_ANALYTICS],
            "revenue": money(audit.product_figures(evidence)["revenue"], schema.GOLD_PRODUCT_ANALYTICS),
        },
        schema.SILVER_DATA_QUALITY_REPORT: {
            row["table_name"]: {
                "rows": row["row_count"],
                "duplicates": row["duplicate_count"],
                "out_of_range": row["out_of_range_count"],
            }
            for row in quality_report.collect()
        },
    }


def run(spark: SparkSession, day: dt.date, options: argparse.Namespace | None = None) -> dict:
    """Compute, audit and (when every check passes) publish `day`; `options` are the parsed
    arguments (default: the job's defaults)."""
    started = time.monotonic()
    existing = iceberg.existing_tables(spark)
    for name in JOB.reads:
        if name not in existing:
            raise MissingTable(f"silver table {lake.table_ref(name)} does not exist; run the streaming job first")
    if options is None:
        options = parser().parse_args(["--date", day.isoformat()])
    silver_snapshots = iceberg.snapshot_ids(spark, JOB.reads)
    inputs = Inputs(spark, day, options, silver_snapshots)
    # A day without activity gets no gold rows at all (a summary of zeros would claim a day that was not).
    active = inputs.has_activity()
    outputs = {name: df.persist() for name, df in build(inputs).items()} if active else {}
    written = {name: outputs[name].count() if active else 0 for name in JOB.writes}
    staged = [name for name, rows in written.items() if rows]
    branch = iceberg.audit_branch(day, dt.datetime.now(dt.UTC))
    try:
        iceberg.ensure_tables(spark, staged)
        iceberg.create_branches(spark, staged, branch)
        for name in staged:
            # Dynamic overwrite: the partitions present in the rows (this date) are replaced, others kept.
            # The rows all lie in one table partition (the date): one task writes them, as the tables' hash
            # distribution would, without the shuffle that distribution costs (a Spark job per table).
            writer = outputs[name].coalesce(1).writeTo(iceberg.branch_ref(name, branch))
            writer.option("distribution-mode", "none").overwritePartitions()
        # What the checks see is what main would get: the branch's rows of the day (none for a table
        # with no rows that day, which is not written at all).
        audited = {
            name: spark.table(iceberg.branch_ref(name, branch)).where(F.col("date") == F.lit(day))
            if name in staged
            else spark.createDataFrame([], schema.spark_schema(schema.TABLES[name].columns))
            for name in JOB.writes
        }
        evidence = audit.Evidence(
            day, audited, inputs.page_views(), inputs.sessions(), inputs.order_lines(), active=active
        )
        checks = audit.run_checks(evidence)
        passed = all(check["passed"] for check in checks.values())
        if passed:
            iceberg.publish(spark, staged, branch)
        figures = totals(evidence, outputs[schema.SILVER_DATA_QUALITY_REPORT], written) if active else {}
    finally:
        for name in staged:
            iceberg.drop_branch(spark, name, branch)
        inputs.release()
        for rows in outputs.values():
            rows.unpersist()
    return {
        "job": JOB.name,
        "date": day.isoformat(),
        "rows_written": written,
        "totals": figures,
        "silver_snapshots": silver_snapshots,
        "audit_branch": branch,
        "checks": checks,
        "published": passed,
        "duration_seconds": round(time.monotonic() - started, 3),
    }


def failed_checks_line(result: dict) -> str:
    """One line naming each failed check with its non-zero failure counts."""
    failed = [f"{name} ({check['summary']})" for name, check in result.get("checks", {}).items() if not check["passed"]]
    return f"gold {result['date']}: audit failed, nothing published: " + "; ".join(failed)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    lake_settings = LakeSettings.from_args(args)
    spark = iceberg.spark_session(lake_settings, f"shopstream-{JOB.name}")
    try:
        result = run(spark, args.date, args)
    except MissingTable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    results.write_result(args.result_file, lake_settings, **result)
    if not result["published"]:
        print(f"error: {failed_checks_line(result)}", file=sys.stderr)
        return AUDIT_FAILED
    rows = ", ".join(f"{n} {c}" for n, c in result["rows_written"].items())
    print(
        f"{JOB.name} {result['date']}: wrote {rows} in {result['duration_seconds']:.1f}s;"
        f" {len(result['checks'])} checks passed; published"
    )
    return 0
