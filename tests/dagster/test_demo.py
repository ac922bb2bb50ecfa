"""`make demo`'s output: one line per step with what it produced and its time, no Spark or log4j
warning among them; a failed step prints its error and the last lines of its log."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from dagster_repo.dev import demo
from shopstream import lake, schema

REPO_ROOT = Path(__file__).resolve().parents[2]
WARNING = re.compile(r" WARN |WARNING")
NUMBER = r"[\d,]+"
SECONDS = r"(\d+\.\d s|\d+ min \d+ s)"


def test_a_failed_streaming_step_prints_its_error_and_the_end_of_its_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHOPSTREAM_ALLOWED_LATENESS", "-1")  # the job refuses it before Spark starts
    log = tmp_path / "logs" / "streaming.log"
    with pytest.raises(demo.StepFailed):
        demo.run_streaming(demo.Report(verbose=False, live=False), "127.0.0.1:9", log)
    refused = "error: --max-offsets-per-trigger must be positive and --allowed-lateness not negative"
    assert capsys.readouterr().err.splitlines() == [
        f"error: the streaming catch-up failed with exit code 2: {refused}",
        f"the last line of {log}:",
        f"  {refused}",
    ]
    assert log.read_text().strip() == refused


def test_a_failed_gold_step_prints_its_error_and_the_end_of_its_log(capsys):
    """A gold step fails the way the local launcher fails it: dg.Failure with the job's log tail."""
    tail = [f"line {i}" for i in range(30)] + ["error: silver table lake.shopstream.silver_purchases does not exist"]

    @dg.op(name=schema.GOLD_SALES_SUMMARY)
    def failing():
        raise dg.Failure(
            description=f"{schema.GOLD_SALES_SUMMARY} failed with exit code 1: {tail[-1]}",
            metadata={"log_tail": dg.MetadataValue.text("\n".join(tail)), "exit_code": 1},
        )

    @dg.job(name="silver_to_gold_processing")
    def gold_job():
        failing()

    silent = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    result = gold_job.execute_in_process(raise_on_error=False, run_config=silent)
    gold = demo.GoldDay.of(dt.date(2026, 11, 1), result, 3.0)
    assert gold.line() == f"gold 2026-11-01: failed in {schema.GOLD_SALES_SUMMARY} after 3.0 s"
    gold.report_failure(demo.Report(verbose=False, live=False))
    assert capsys.readouterr().err.splitlines() == [
        f"error: gold 2026-11-01, step {schema.GOLD_SALES_SUMMARY}: "
        f"{schema.GOLD_SALES_SUMMARY} failed with exit code 1: {tail[-1]}",
        f"the last {demo.TAIL_LINES} lines of {schema.GOLD_SALES_SUMMARY}'s log:",
        *[f"  {line}" for line in tail[-demo.TAIL_LINES :]],
        f"error: the gold run for 2026-11-01 failed; all of its log: `make ui`, run {result.run_id}",
    ]


@pytest.mark.kafka
@pytest.mark.spark
def test_the_demo_prints_one_line_per_step_with_its_figures_and_no_warning(tmp_path):
    """The whole demo, as `make demo` runs it, on one small day."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_") and k != "DAGSTER_HOME"}
    env.update(SHOPSTREAM_HOME=str(home), SHOPSTREAM_SHUFFLE_PARTITIONS="2")
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "dagster_repo.dev.demo", "--days", "1", "--events-per-day", "1500", "--seed", "5"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
    )
    took = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr == ""
    lines = run.stdout.splitlines()
    assert not [line for line in lines if WARNING.search(line)]
    expected = [
        rf"Shopstream demo: 1 simulated day from 2026-11-01, ~1,500 events a day \(seed 5\); "
        rf"state in {re.escape(str(home))}",
        rf"broker: Kafka on 127\.0\.0\.1:\d+ with topics {', '.join(schema.ALL_TOPICS)} in {SECONDS}",
        rf"generator: sent (?P<sent>{NUMBER}) events for 2026-11-01 \({NUMBER} valid, {NUMBER} duplicates, "
        rf"{NUMBER} malformed, {NUMBER} late\) in {SECONDS}",
        rf"streaming catch-up: (?P<bronze>{NUMBER}) rows into bronze, (?P<silver>{NUMBER}) into silver, "
        rf"(?P<quarantined>{NUMBER}) quarantined in {SECONDS}",
        rf"gold 2026-11-01: (?P<customers>{NUMBER}) active customers, (?P<orders>{NUMBER}) orders, "
        rf"revenue (?P<revenue>[\d,.]+), (?P<products>{NUMBER}) products; 7 of 7 checks passed in {SECONDS}",
        rf"done in {SECONDS}: 1 day of gold, every check passed; "
        rf"revenue (?P<total>[\d,.]+) from {NUMBER} orders",
        r"The Dagster UI on the same data and runs: make ui \(then http://127\.0\.0\.1:3000; Ctrl-C stops it\)",
        rf"Logs: {re.escape(str(home / 'logs' / 'streaming.log'))} and the Dagster runs; "
        r"--verbose prints them as they come",
    ]
    assert len(lines) == len(expected), run.stdout
    figures = {}
    for line, pattern in zip(lines, expected, strict=True):
        found = re.fullmatch(pattern, line)
        assert found, (line, pattern)
        figures.update({k: v.replace(",", "") for k, v in found.groupdict().items()})

    # The figures are the tables'.
    catalog = lake.iceberg_catalog(lake.LakeSettings.local(home))
    rows = {
        name: catalog.load_table(schema.TABLES[name].qualified).scan().to_arrow().to_pylist()
        for name in (
            schema.BRONZE_EVENTS,
            *demo.SILVER_TABLES,
            schema.QUARANTINE,
            schema.GOLD_SALES_SUMMARY,
            schema.GOLD_CUSTOMER_ANALYTICS,
            schema.GOLD_PRODUCT_ANALYTICS,
        )
    }
    assert int(figures["bronze"]) == len(rows[schema.BRONZE_EVENTS]) == int(figures["sent"])
    assert int(figures["silver"]) == sum(len(rows[name]) for name in demo.SILVER_TABLES) > 0
    assert int(figures["quarantined"]) == len(rows[schema.QUARANTINE])
    [sales] = [r for r in rows[schema.GOLD_SALES_SUMMARY] if r["date"] == dt.date(2026, 11, 1)]
    assert Decimal(figures["revenue"]) == Decimal(figures["total"]) == sales["revenue"]
    assert int(figures["orders"]) == sales["orders"]
    for table, figure in ((schema.GOLD_CUSTOMER_ANALYTICS, "customers"), (schema.GOLD_PRODUCT_ANALYTICS, "products")):
        assert int(figures[figure]) == len([r for r in rows[table] if r["date"] == dt.date(2026, 11, 1)]) > 0, table

    # Spark's own log is at ERROR from the JVM's start: no default-profile banner, no WARN line.
    log = (home / "logs" / "streaming.log").read_text()
    assert "[events] batch 0" in log
    assert "log4j" not in log and "Setting default log level" not in log
    assert not [line for line in log.splitlines() if " WARN " in line]
    print(f"demo: {len(lines)} lines in {took:.0f} s")
