"""The streaming job end to end: a real broker, the real job in its own process (as spark-submit
would run it), real Iceberg tables read back through pyiceberg."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from shopstream import lake, schema
from shopstream.events.broker import KafkaBroker, create_topics, free_port
from shopstream.events.generator.cli import send
from shopstream.events.generator.shop import VALID, GeneratorConfig, Shop

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

ALLOWED_LATENESS = 1800
CONFIG = GeneratorConfig(
    seed=2024, events_per_day=4000, late_fraction=0.05, duplicate_fraction=0.04, malformed_fraction=0.03
)


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    """A broker of this module's own, holding one generated day (so expectations are exact)."""
    broker = KafkaBroker(tmp_path_factory.mktemp("stream-kafka"), port=free_port()).start()
    try:
        create_topics(broker.bootstrap_servers)
        shop = Shop(CONFIG)
        records = list(itertools.chain(shop.catalog(), shop.records()))
        summary = send(records, broker.bootstrap_servers, show_progress=False)
        yield broker, records, summary.as_dict()
    finally:
        broker.stop()


def expected_sessions(records) -> dict[str, dict]:
    """Sessions as the job must build them, computed straight from what the generator sent."""
    sessions: dict[str, dict] = defaultdict(
        lambda: {
            "page_views": 0,
            "products": set(),
            "cart_adds": 0,
            "orders": set(),
            "revenue": Decimal("0"),
            "times": [],
        }
    )
    for r in records:
        if r.kind != VALID or r.topic == schema.TOPIC_PRODUCTS or r.lateness_seconds > ALLOWED_LATENESS:
            continue
        e = json.loads(r.value, parse_float=Decimal)
        s = sessions[e["session_id"]]
        s["times"].append(r.event_time)
        if e["event_type"] == schema.PAGE_VIEW:
            s["page_views"] += 1
            if e["page_type"] == "product":
                s["products"].add(e["product_id"])
        elif e["event_type"] == schema.ADD_TO_CART:
            s["cart_adds"] += 1
        elif e["event_type"] == schema.PURCHASE:
            s["orders"].add(e["order_id"])
            s["revenue"] += e["quantity"] * e["unit_price"] - e["discount"]
    return sessions


def run_job(lake_dir: Path, bootstrap: str, *extra: str, kill_when=None) -> subprocess.CompletedProcess | None:
    """Run `python -m shopstream streaming` in catch-up mode against its own lake. With
    `kill_when`, SIGKILL the whole process tree (driver JVM included) once it returns true."""
    args = [
        sys.executable,
        "-m",
        "shopstream",
        "streaming",
        "--bootstrap-servers",
        bootstrap,
        "--catalog-uri",
        f"jdbc:sqlite:{lake_dir / 'catalog.db'}",
        "--warehouse",
        f"file://{lake_dir / 'warehouse'}",
        "--checkpoint-dir",
        str(lake_dir / "checkpoints"),
        "--allowed-lateness",
        str(ALLOWED_LATENESS),
        *extra,
    ]
    env = {
        **os.environ,
        "SHOPSTREAM_HOME": str(lake_dir),
        "SHOPSTREAM_SPARK_MASTER": "local[2]",
        "SHOPSTREAM_SHUFFLE_PARTITIONS": "2",
    }
    (lake_dir / "warehouse").mkdir(parents=True, exist_ok=True)
    log = open(lake_dir / "job.log", "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    if kill_when is None:
        proc.wait(timeout=900)
        return subprocess.CompletedProcess(args, proc.returncode, (lake_dir / "job.log").read_text(), "")
    deadline = time.monotonic() + 600
    while not kill_when() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the job ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return None


def read(lake_dir: Path, table: str):
    catalog = lake.iceberg_catalog(
        lake.LakeSettings(f"jdbc:sqlite:{lake_dir / 'catalog.db'}", f"file://{lake_dir / 'warehouse'}")
    )
    return catalog.load_table(f"{schema.NAMESPACE}.{table}").scan().to_arrow().to_pylist()


def assert_exactly_once(lake_dir: Path, records, summary) -> None:
    """Every valid event in silver once; every rejected record in quarantine once, with its reason."""
    page_views = read(lake_dir, schema.SILVER_PAGE_VIEWS)
    purchases = read(lake_dir, schema.SILVER_PURCHASES)
    by_type = Counter(r["event_type"] for r in page_views) + Counter(r["event_type"] for r in purchases)
    valid = summary["valid_by_type"]
    assert by_type == Counter({t: valid[t] for t in (schema.PAGE_VIEW, schema.ADD_TO_CART, schema.PURCHASE)})
    assert len({r["event_id"] for r in page_views}) == len(page_views)
    assert len({r["event_id"] for r in purchases}) == len(purchases)
    sent_revenue = sum(
        (lambda e: e["quantity"] * e["unit_price"] - e["discount"])(json.loads(r.value, parse_float=Decimal))
        for r in records
        if r.kind == VALID and r.event_type == schema.PURCHASE
    )
    assert sum(r["revenue"] for r in purchases) == sent_revenue
    assert all(r["category"] is not None and r["list_price"] == r["unit_price"] for r in purchases)

    quarantine = read(lake_dir, schema.QUARANTINE)
    rejected = Counter(r["reason"] for r in quarantine if r["reason"] != schema.REASON_LATE)
    assert rejected == Counter(summary["malformed_by_reason"])
    too_late = {
        json.loads(r.value)["event_id"]
        for r in records
        if r.kind == VALID and r.topic != schema.TOPIC_PRODUCTS and r.lateness_seconds > ALLOWED_LATENESS
    }
    assert too_late, "the fixture must contain events later than the allowed delay"
    assert sorted(r["event_id"] for r in quarantine if r["reason"] == schema.REASON_LATE) == sorted(too_late)

    sessions = {r["session_id"]: r for r in read(lake_dir, schema.SILVER_USER_SESSIONS)}
    expected = expected_sessions(records)
    assert sessions.keys() == expected.keys()
    for session_id, want in expected.items():
        got = sessions[session_id]
        assert (got["page_views"], got["products_viewed"], got["cart_adds"], got["orders"], got["revenue"]) == (
            want["page_views"],
            len(want["products"]),
            want["cart_adds"],
            len(want["orders"]),
            want["revenue"],
        ), session_id
        assert got["session_start"] == min(want["times"]) and got["session_end"] == max(want["times"])
        assert got["converted"] == bool(want["orders"])

    assert len(read(lake_dir, schema.BRONZE_EVENTS)) == summary["events_sent"]
    assert len(read(lake_dir, schema.SILVER_PRODUCTS)) == summary["products"]


def test_catch_up_then_rerun_adds_nothing(topics, tmp_path):
    broker, records, summary = topics
    done = run_job(tmp_path, broker.bootstrap_servers)
    assert done.returncode == 0, done.stdout[-3000:]
    assert_exactly_once(tmp_path, records, summary)
    progress = read(tmp_path, schema.STREAMING_PROGRESS)
    assert progress and sum(p["num_input_rows"] for p in progress) == summary["messages_sent"]
    offsets = json.loads(max(progress, key=lambda p: p["batch_id"])["end_offsets"])
    assert set(offsets) == set(schema.ALL_TOPICS)
    # Late events inside the allowed delay were counted (some exist in this fixture).
    assert any(r.late and r.lateness_seconds <= ALLOWED_LATENESS for r in records if r.kind == VALID)

    again = run_job(tmp_path, broker.bootstrap_servers)
    assert again.returncode == 0
    assert_exactly_once(tmp_path, records, summary)


def test_sigkill_mid_run_then_restart_loses_and_duplicates_nothing(topics, tmp_path):
    broker, records, summary = topics
    commits = tmp_path / "checkpoints" / "events" / "commits"
    # Small micro-batches; killed right after the second one committed, while the third is in flight.
    run_job(
        tmp_path,
        broker.bootstrap_servers,
        "--max-offsets-per-trigger",
        "2500",
        kill_when=lambda: commits.exists() and len([p for p in commits.iterdir() if p.name.isdigit()]) >= 2,
    )
    half = read(tmp_path, schema.SILVER_PAGE_VIEWS)
    assert 0 < len(half) < summary["valid_by_type"][schema.PAGE_VIEW] + summary["valid_by_type"][schema.ADD_TO_CART]
    done = run_job(tmp_path, broker.bootstrap_servers, "--max-offsets-per-trigger", "2500")
    assert done.returncode == 0, done.stdout[-3000:]
    assert_exactly_once(tmp_path, records, summary)


def test_a_failing_query_exits_non_zero(topics, tmp_path):
    broker, _, _ = topics
    # A products table of the wrong shape makes the first write fail.
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, StringType

    catalog = lake.iceberg_catalog(
        lake.LakeSettings(f"jdbc:sqlite:{tmp_path / 'catalog.db'}", f"file://{tmp_path / 'warehouse'}")
    )
    catalog.create_namespace_if_not_exists(schema.NAMESPACE)
    catalog.create_table(f"{schema.NAMESPACE}.{schema.SILVER_PRODUCTS}", Schema(NestedField(1, "sku", StringType())))
    done = run_job(tmp_path, broker.bootstrap_servers)
    assert done.returncode == 1
    assert "error: streaming query failed" in done.stdout


def test_help_documents_every_setting():
    out = subprocess.run([sys.executable, "-m", "shopstream", "streaming", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag, env in (
        ("--bootstrap-servers", "SHOPSTREAM_KAFKA_BOOTSTRAP"),
        ("--checkpoint-dir", "SHOPSTREAM_CHECKPOINT_DIR"),
        ("--trigger", "SHOPSTREAM_TRIGGER"),
        ("--max-offsets-per-trigger", "SHOPSTREAM_MAX_OFFSETS_PER_TRIGGER"),
        ("--starting-offsets", "SHOPSTREAM_STARTING_OFFSETS"),
        ("--catalog-uri", "SHOPSTREAM_CATALOG_URI"),
        ("--warehouse", "SHOPSTREAM_WAREHOUSE"),
    ):
        assert flag in out.stdout and env in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "shopstream", "streaming", "--trigger", "often"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "use 'catch-up' or an interval" in bad.stderr


def test_trigger_settings():
    from shopstream.spark.streaming.job import parse_trigger

    assert parse_trigger("catch-up") is None
    assert [parse_trigger(t) for t in ("10s", "10 seconds", "2m", "1 minute")] == [
        "10 seconds",
        "10 seconds",
        "2 minutes",
        "1 minutes",
    ]
    for bad in ("0s", "soon", "10 hours"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_trigger(bad)
