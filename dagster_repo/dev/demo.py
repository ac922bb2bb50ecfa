"""`make demo`: the whole pipeline on the embedded default, from a clean state folder.

local Kafka broker -> topics -> generator (simulated days) -> streaming catch-up into bronze and
silver Iceberg tables -> Dagster materializes every gold asset and its checks for each simulated
day (local launcher) -> a summary.

Each step prints one line: what it produced and its time. The streaming job's log goes to
$SHOPSTREAM_HOME/logs/streaming.log, the gold job's log to its Dagster runs (`make ui`); a
failed step prints its error and the last lines of its log. --verbose prints every log line as it
comes: Spark's warnings, the jobs' output, Dagster's events, per-table and per-step figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import dagster as dg

from dagster_repo.defs.launcher import last_error
from shopstream import catalog, lake, schema, settings
from shopstream.events.broker import KafkaBroker, create_topics, free_port
from shopstream.events.generator import cli as generator_cli
from shopstream.events.generator.shop import GeneratorConfig, Shop
from shopstream.runtime import SetupError

TAIL_LINES = 20  # of a failed step's log, printed without --verbose too
SILVER_TABLES = (schema.SILVER_PAGE_VIEWS, schema.SILVER_PURCHASES, schema.SILVER_USER_SESSIONS, schema.SILVER_PRODUCTS)


class StepFailed(Exception):
    """A step failed; its error and log tail are printed already."""


class Report:
    """What the demo prints. A step prints one line when it ends; while it runs, a terminal shows
    its name. With `verbose` a header comes before each step and the logs as they come."""

    def __init__(self, verbose: bool, live: bool):
        self.verbose = verbose
        self.live = live and not verbose
        self.pending = False

    def begin(self, title: str, header: str) -> None:
        if self.verbose:
            print(f"\n==> {header}", flush=True)
        elif self.live:
            print(f"{title} ...", end="", flush=True)
            self.pending = True

    def _clear(self) -> None:
        if self.pending:
            print("\r\033[K", end="", flush=True)
            self.pending = False

    def line(self, text: str) -> None:
        self._clear()
        print(text, flush=True)

    def detail(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    def error(
        self, message: str, tail: Sequence[str] = (), source: str = "its log", log_file: Path | None = None
    ) -> None:
        """The error, then (unless verbose printed them already) the last lines of its log."""
        self._clear()
        print(f"error: {message}", file=sys.stderr, flush=True)
        tail = [line for line in tail if line.strip()][-TAIL_LINES:]
        if tail and not self.verbose:
            lines = "the last line" if len(tail) == 1 else f"the last {len(tail)} lines"
            print(f"{lines} of {log_file or source}:", file=sys.stderr)
            for line in tail:
                print(f"  {line}", file=sys.stderr)
        elif log_file:
            print(f"its log: {log_file}", file=sys.stderr)
        sys.stderr.flush()


def seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s"


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def count(n) -> str:
    return f"{int(n):,}"


def money(value) -> str:
    return f"{Decimal(str(value)):,.2f}"


def table_counts(settings: lake.LakeSettings, names) -> dict[str, int]:
    catalog = lake.iceberg_catalog(settings)
    counts = {}
    for name in names:
        table = catalog.load_table(schema.TABLES[name].qualified)
        counts[name] = table.scan().count() if table.current_snapshot() else 0
    return counts


def prepare_instance() -> Path:
    """$DAGSTER_HOME for the embedded default, with the local instance settings."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.home() / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("local_instance.yaml"), home / "dagster.yaml")
    return home


# -- streaming catch-up --------------------------------------------------------------------------


def run_streaming(report: Report, bootstrap_servers: str, log_file: Path) -> None:
    """`python -m shopstream streaming --trigger catch-up`, its output into `log_file` (and on the
    terminal with --verbose)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "shopstream",
        "streaming",
        "--trigger",
        "catch-up",
        "--bootstrap-servers",
        bootstrap_servers,
    ]
    with open(log_file, "w") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        lines = []
        for line in process.stdout or ():
            log.write(line)
            lines.append(line.rstrip())
            del lines[:-200]
            if report.verbose:
                print(line, end="", flush=True)
        code = process.wait()
    if code != 0:
        report.error(
            f"the streaming catch-up failed with exit code {code}: {last_error(lines)}", lines, log_file=log_file
        )
        raise StepFailed


def streaming_line(counts: dict[str, int], took: float) -> str:
    silver = sum(counts.get(name, 0) for name in SILVER_TABLES)
    return (
        f"streaming catch-up: {count(counts.get(schema.BRONZE_EVENTS, 0))} rows into bronze, "
        f"{count(silver)} into silver, {count(counts.get(schema.QUARANTINE, 0))} quarantined in {seconds(took)}"
    )


# -- gold through Dagster -------------------------------------------------------------------------


@dataclass
class GoldDay:
    """What one silver_to_gold_processing run produced: the jobs' totals per gold table and the checks."""

    day: dt.date
    run_id: str
    success: bool
    took: float  # seconds
    totals: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    failures: list[tuple[str, str, list[str]]] = field(default_factory=list)  # step, error, log tail

    @classmethod
    def of(cls, day: dt.date, result, took: float) -> GoldDay:
        gold = cls(day, result.run_id, result.success, took)
        for event in result.all_events:
            if event.event_type_value == "ASSET_MATERIALIZATION":
                metadata = event.event_specific_data.materialization.metadata
                if "totals" in metadata:
                    gold.totals[event.asset_key.to_user_string()] = metadata["totals"].value or {}
            elif event.event_type_value == "ASSET_CHECK_EVALUATION":
                gold.checks[event.event_specific_data.check_name] = event.event_specific_data.passed
            elif event.event_type_value == "STEP_FAILURE":
                data = event.step_failure_data
                user = data.user_failure_data
                message = (
                    user.description
                    if user and user.description
                    else data.error.message.strip()
                    if data.error
                    else "no error message"
                )
                tail = user.metadata.get("log_tail") if user else None
                gold.failures.append((event.step_key, message, tail.value.splitlines() if tail else []))
        return gold

    @property
    def failed_checks(self) -> list[str]:
        return [name for name, passed in self.checks.items() if not passed]

    def report_failure(self, report: Report) -> None:
        for step_key, message, tail in self.failures:
            report.error(f"gold {self.day}, step {step_key}: {message}", tail, f"{step_key}'s log")
        report.error(f"the gold run for {self.day} failed; all of its log: `make ui`, run {self.run_id}")

    def line(self) -> str:
        if self.failures:
            return (
                f"gold {self.day}: failed in {', '.join(step for step, _, _ in self.failures)} "
                f"after {seconds(self.took)}"
            )
        customers = self.totals.get(schema.GOLD_CUSTOMER_ANALYTICS, {})
        sales = self.totals.get(schema.GOLD_SALES_SUMMARY, {})
        products = self.totals.get(schema.GOLD_PRODUCT_ANALYTICS, {})
        figures = (
            f"{count(customers.get('customers', 0))} active customers, "
            f"{count(sales.get('orders', 0))} orders, revenue {money(sales.get('revenue', 0))}, "
            f"{count(products.get('products', 0))} products"
            if sales
            else "no events that day"
        )
        checks = f"{len(self.checks) - len(self.failed_checks)} of {len(self.checks)} checks passed"
        if self.failed_checks:
            checks += f" (failed: {', '.join(self.failed_checks)})"
        return f"gold {self.day}: {figures}; {checks} in {seconds(self.took)}"


def materialize_gold(report: Report, days: list[dt.date]) -> list[GoldDay]:
    """Run the silver_to_gold_processing job for each day in this process, recorded in the
    Dagster instance under $DAGSTER_HOME so `make ui` shows the same runs. Dagster's console
    shows its warnings and errors; with --verbose every event, the jobs' log lines among them."""
    prepare_instance()
    from dagster_repo.definitions import defs

    job = defs.resolve_job_def("silver_to_gold_processing")
    level = "DEBUG" if report.verbose else "WARNING"
    done = []
    with dg.DagsterInstance.get() as instance:
        for day in days:
            report.begin(f"gold {day}", f"Dagster materializes every gold asset and check for {day} (local launcher)")
            started = time.monotonic()
            result = job.execute_in_process(
                partition_key=day.isoformat(),
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": level}}}},
            )
            gold = GoldDay.of(day, result, time.monotonic() - started)
            for stats in instance.get_run_step_stats(result.run_id):
                took = (stats.end_time or 0) - (stats.start_time or 0)
                report.detail(f"  {stats.step_key:<58} {stats.status.value if stats.status else '?':<9} {took:6.1f}s")
            report.line(gold.line())
            if not gold.success or gold.failed_checks:
                gold.report_failure(report)
                raise StepFailed
            done.append(gold)
    return done


def print_sales_summary(settings: lake.LakeSettings) -> None:
    table = lake.iceberg_catalog(settings).load_table(schema.TABLES[schema.GOLD_SALES_SUMMARY].qualified)
    columns = (
        "date",
        "revenue",
        "orders",
        "units",
        "avg_order_value",
        "unique_buyers",
        "sessions",
        "session_conversion_rate",
        "orders_per_session",
    )
    rows = sorted(table.scan(selected_fields=columns).to_arrow().to_pylist(), key=lambda r: r["date"])
    print("\ngold_daily_sales_summary:")
    print("".join(f"{c:>20}" for c in columns))
    for row in rows:
        print("".join(f"{row[c]!s:>20}" for c in columns))


# -- the demo -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    report = Report(args.verbose, live=sys.stdout.isatty())
    if args.verbose:
        # Spark's warnings too (the known harmless ones stay out: shopstream/spark/log4j2.properties).
        os.environ.setdefault(settings.SPARK_LOG_LEVEL.variable, "WARN")
    try:
        demo(args, report)
    except StepFailed:
        return 1
    except SetupError as exc:
        report.error(str(exc))
        return 1
    return 0


def demo(args: argparse.Namespace, report: Report) -> None:
    started_demo = time.monotonic()
    root = settings.home()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    streaming_log = root / "logs" / "streaming.log"
    days = [args.start_date + dt.timedelta(days=i) for i in range(args.days)]
    report.line(
        f"Shopstream demo: {plural(args.days, 'simulated day')} from {args.start_date}, "
        f"~{args.events_per_day:,} events a day (seed {args.seed}); state in {root}"
    )
    timings: dict[str, float] = {}

    report.begin("broker", f"starting a local Kafka broker (state in {root / 'kafka'})")
    started = time.monotonic()
    broker = KafkaBroker(root / "kafka", port=free_port()).start()
    try:
        create_topics(broker.bootstrap_servers)
        timings["broker start"] = time.monotonic() - started
        report.line(
            f"broker: Kafka on {broker.bootstrap_servers} with topics {', '.join(schema.ALL_TOPICS)} "
            f"in {seconds(timings['broker start'])}"
        )

        report.begin(
            "generator",
            f"generating {args.days} day(s) of events from {args.start_date} "
            f"(~{args.events_per_day:,}/day, seed {args.seed})",
        )
        config = GeneratorConfig(
            seed=args.seed, start_date=args.start_date, days=args.days, events_per_day=args.events_per_day
        )
        shop = Shop(config)
        started = time.monotonic()
        summary = generator_cli.send(
            itertools.chain(shop.catalog(), shop.records()),
            broker.bootstrap_servers,
            progress_total=None,
            show_progress=args.verbose and sys.stderr.isatty(),
        )
        timings["generate"] = time.monotonic() - started
        sent = summary.as_dict()
        report.detail(summary.render(timings["generate"]))
        report.line(
            f"generator: sent {count(sent['events_sent'])} events for {days[0]}"
            + (f" to {days[-1]}" if len(days) > 1 else "")
            + f" ({count(sent['valid'])} valid, {count(sent['duplicates'])} duplicates, "
            f"{count(sent['malformed'])} malformed, {count(sent['late'])} late) "
            f"in {seconds(timings['generate'])}"
        )

        report.begin("streaming catch-up", "streaming catch-up: Kafka -> bronze and silver Iceberg tables")
        started = time.monotonic()
        run_streaming(report, broker.bootstrap_servers, streaming_log)
        timings["streaming"] = time.monotonic() - started
        counts = table_counts(lake.LakeSettings.from_env(), catalog.STREAMING.writes)
        report.detail(f"{'table':<34}{'rows':>12}\n" + "\n".join(f"{n:<34}{c:>12,}" for n, c in counts.items()))
        report.line(streaming_line(counts, timings["streaming"]))

        # The gold gate asks this broker whether the stream has read each day whole: the code
        # location, imported by materialize_gold, takes its address from the settings.
        os.environ[settings.KAFKA_BOOTSTRAP.variable] = broker.bootstrap_servers
        started = time.monotonic()
        gold = materialize_gold(report, days)
        timings["gold (Dagster)"] = time.monotonic() - started
    finally:
        if args.verbose:
            print("\n==> stopping the broker", flush=True)
        broker.stop()

    if args.verbose:
        print_sales_summary(lake.LakeSettings.from_env())
        print("\n==> done")
        for name, took in timings.items():
            print(f"  {name:<16} {took:7.1f}s")
        print()
    sales = [g.totals.get(schema.GOLD_SALES_SUMMARY, {}) for g in gold]
    revenue = sum(Decimal(str(s.get("revenue", 0))) for s in sales)
    orders = sum(int(s.get("orders", 0)) for s in sales)
    report.line(
        f"done in {seconds(time.monotonic() - started_demo)}: {plural(len(gold), 'day')} of gold, "
        f"every check passed; revenue {money(revenue)} from {count(orders)} orders"
    )
    report.line("The Dagster UI on the same data and runs: make ui (then http://127.0.0.1:3000; Ctrl-C stops it)")
    if not args.verbose:
        report.line(f"Logs: {streaming_log} and the Dagster runs; --verbose prints them as they come")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dagster_repo.dev.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--start-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 1))
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--events-per-day", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print every log line as it comes (Spark at WARN unless SHOPSTREAM_SPARK_LOG_LEVEL "
        "says otherwise, Dagster at DEBUG) and the per-table and per-step figures",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
