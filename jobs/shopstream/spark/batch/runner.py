"""What every daily batch job shares: arguments, the checks before anything is written, reading
the silver day, overwriting exactly that day's partitions, and the result file.

A job is a `BatchJob`: the silver tables it needs and a `build` function from those inputs (and
the date) to its gold DataFrames. `python -m shopstream <job> --help` for the arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopstream import catalog, lake, results, schema
from shopstream.cli import add_result_file, iso_date
from shopstream.lake import LakeSettings
from shopstream.rules import ORDER_SPAN_DAYS
from shopstream.spark import iceberg


class MissingTable(RuntimeError):
    pass


@dataclass(frozen=True)
class Inputs:
    """The silver rows a job may read for `day`, each as a lazy DataFrame, and the job's own
    options (its arguments beyond the date and the lake)."""

    spark: SparkSession
    day: dt.date
    options: argparse.Namespace = field(default_factory=argparse.Namespace)

    def table(self, name: str) -> DataFrame:
        return self.spark.table(lake.table_ref(name))

    def page_views(self) -> DataFrame:
        return self.table(schema.SILVER_PAGE_VIEWS).where(F.col("event_date") == F.lit(self.day))

    def purchases(self) -> DataFrame:
        """The order lines that happened on the day."""
        return self.table(schema.SILVER_PURCHASES).where(F.col("event_date") == F.lit(self.day))

    def order_lines(self, days_before: int | None = 0) -> DataFrame:
        """Every line of the orders placed on the day and on the `days_before` days before it (None:
        all history): the lines of those days and of ORDER_SPAN_DAYS more on either side, where an
        order's first line or its last lines may lie."""
        day = F.lit(self.day)
        rows = self.table(schema.SILVER_PURCHASES).where(F.col("event_date") <= F.date_add(day, ORDER_SPAN_DAYS))
        if days_before is not None:
            rows = rows.where(F.col("event_date") >= F.date_sub(day, days_before + ORDER_SPAN_DAYS))
        return rows

    def sessions(self, days_before: int = 0) -> DataFrame:
        """The sessions started on the day and on the `days_before` days before it."""
        day = F.lit(self.day)
        return self.table(schema.SILVER_USER_SESSIONS).where(
            (F.col("session_date") <= day) & (F.col("session_date") >= F.date_sub(day, days_before))
        )

    def products(self) -> DataFrame:
        return self.table(schema.SILVER_PRODUCTS)

    def quarantine(self) -> DataFrame:
        day_of = F.coalesce(F.to_date("event_time"), F.to_date("ingest_time"))
        return self.table(schema.QUARANTINE).where(day_of == F.lit(self.day))

    def has_activity(self) -> bool:
        return not (self.page_views().isEmpty() and self.purchases().isEmpty() and self.sessions().isEmpty())


@dataclass(frozen=True)
class BatchJob:
    """A daily job of the catalog with its Spark side: how it builds its outputs and sums them up."""

    job: catalog.Job
    build: Callable[[Inputs], tuple[DataFrame, ...]]  # the outputs, in the order of `job.writes`
    totals: Callable[[dict[str, DataFrame]], dict]  # key figures for the result file
    add_options: Callable[[argparse.ArgumentParser], None] = lambda parser: None  # the job's own arguments

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def writes(self) -> tuple[str, ...]:
        return self.job.writes

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"python -m shopstream {self.name}", description=self.job.description)
        parser.add_argument("--date", required=True, type=iso_date, help="the day to compute, YYYY-MM-DD (UTC)")
        add_result_file(parser, "the run's result (rows, totals, duration)")
        LakeSettings.add_arguments(parser)
        self.add_options(parser)
        return parser

    def run(self, spark: SparkSession, day: dt.date, options: argparse.Namespace | None = None) -> dict:
        """Compute and write `day`; `options` are the parsed arguments (default: the job's defaults)."""
        started = time.monotonic()
        for name in self.job.reads:
            if not iceberg.table_exists(spark, name):
                raise MissingTable(f"silver table {lake.table_ref(name)} does not exist; run the streaming job first")
        if options is None:
            options = self.parser().parse_args(["--date", day.isoformat()])
        inputs = Inputs(spark, day, options)
        written = {name: 0 for name in self.writes}
        totals: dict = {}
        if inputs.has_activity():
            iceberg.ensure_tables(spark, self.writes)
            outputs = dict(zip(self.writes, self.build(inputs), strict=True))
            for name, df in outputs.items():
                df = df.persist()
                written[name] = df.count()
                if written[name]:
                    # Dynamic overwrite: the partitions present in df (this date) are replaced, others kept.
                    df.writeTo(lake.table_ref(name)).overwritePartitions()
                outputs[name] = df
            totals = self.totals(outputs)
        return {
            "job": self.name,
            "date": day.isoformat(),
            "rows_written": written,
            "totals": totals,
            "duration_seconds": round(time.monotonic() - started, 3),
        }

    def main(self, argv: list[str] | None = None) -> int:
        args = self.parser().parse_args(argv)
        settings = LakeSettings.from_args(args)
        spark = iceberg.spark_session(settings, f"shopstream-{self.name}")
        try:
            result = self.run(spark, args.date, args)
        except MissingTable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            spark.stop()
        results.write_result(args.result_file, settings, **result)
        rows = ", ".join(f"{n} {c}" for n, c in result["rows_written"].items())
        print(
            f"{self.name} {result['date']}: wrote {rows} in {result['duration_seconds']:.1f}s;"
            f" totals {result['totals']}"
        )
        return 0


def sum_of(df: DataFrame, column: str):
    [row] = df.agg(F.sum(column)).collect()
    value = row[0]
    return str(value) if value is not None else "0"
