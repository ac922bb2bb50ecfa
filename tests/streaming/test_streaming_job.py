"""The streaming job end to end: a real broker, the real job in its own process (as spark-submit
would run it), real Iceberg tables read back through pyiceberg."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from shopstream import catalog, lake, schema
from shopstream.events.broker import KafkaBroker, create_topics, free_port
from shopstream.events.generator.cli import send
from shopstream.events.generator.shop import MALFORMED, VALID, GeneratorConfig, Record, Shop

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


def run_job(
    lake_dir: Path, bootstrap: str, *extra: str, kill_when=None, patience: float = 600
) -> subprocess.CompletedProcess | None:
    """Run `python -m shopstream streaming` in catch-up mode against its own lake. With
    `kill_when`, SIGKILL the whole process tree (driver JVM included) once it returns true, or
    after `patience` seconds."""
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
    deadline = time.monotonic() + patience
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


def contents(lake_dir: Path) -> dict[str, list[str]]:
    """Every row of every table the job writes, but the progress log of its own runs, in a stable order."""
    return {
        name: sorted(json.dumps(row, default=str, sort_keys=True) for row in read(lake_dir, name))
        for name in schema.TABLES
        if name in catalog.STREAMING.writes and name != schema.STREAMING_PROGRESS
    }


def test_catch_up_then_rerun_adds_nothing(topics, tmp_path):
    broker, records, summary = topics
    done = run_job(tmp_path, broker.bootstrap_servers)
    assert done.returncode == 0, done.stdout[-3000:]
    assert_exactly_once(tmp_path, records, summary)
    progress = read(tmp_path, schema.STREAMING_PROGRESS)
    # Every event once (from raw-events; its copy on the typed topic is not read) and every product.
    records_read = summary["events_sent"] + summary["products"]
    assert progress and sum(p["num_input_rows"] for p in progress) == records_read
    offsets = json.loads(max(progress, key=lambda p: p["batch_id"])["end_offsets"])
    assert set(offsets) == {schema.TOPIC_RAW_EVENTS, schema.TOPIC_PRODUCTS}  # raw-events carries every event
    # Late events inside the allowed delay were counted (some exist in this fixture).
    assert any(r.late and r.lateness_seconds <= ALLOWED_LATENESS for r in records if r.kind == VALID)

    again = run_job(tmp_path, broker.bootstrap_servers)
    assert again.returncode == 0
    assert_exactly_once(tmp_path, records, summary)

    # Without the checkpoint every offset is read again: the keys recognise every record, so no table changes.
    before = contents(tmp_path)
    shutil.rmtree(tmp_path / "checkpoints")
    replay = run_job(tmp_path, broker.bootstrap_servers, "--starting-offsets", "earliest")
    assert replay.returncode == 0, replay.stdout[-3000:]
    assert contents(tmp_path) == before


def test_sigkill_mid_run_then_restart_loses_and_duplicates_nothing(topics, tmp_path):
    broker, records, summary = topics
    commits = tmp_path / "checkpoints" / "events" / "commits"
    # Small micro-batches (about a quarter of the day's events each); killed right after the second
    # one committed, while the third is in flight.
    run_job(
        tmp_path,
        broker.bootstrap_servers,
        "--max-offsets-per-trigger",
        "1000",
        kill_when=lambda: commits.exists() and len([p for p in commits.iterdir() if p.name.isdigit()]) >= 2,
    )
    half = read(tmp_path, schema.SILVER_PAGE_VIEWS)
    assert 0 < len(half) < summary["valid_by_type"][schema.PAGE_VIEW] + summary["valid_by_type"][schema.ADD_TO_CART]
    done = run_job(tmp_path, broker.bootstrap_servers, "--max-offsets-per-trigger", "1000")
    assert done.returncode == 0, done.stdout[-3000:]
    assert_exactly_once(tmp_path, records, summary)


def test_a_paused_stream_records_the_progress_of_its_last_batch(topics, tmp_path):
    """Every record is read in the first batch and nothing follows: no next batch writes that
    batch's progress, so the job writes it while the query waits for data. The completeness gate
    and the health monitor read it."""
    broker, _, summary = topics
    subscribed = summary["events_sent"] + summary["products"]  # the raw-events and products topics

    def progressed() -> int:
        try:
            return sum(row["num_input_rows"] for row in read(tmp_path, schema.STREAMING_PROGRESS))
        except Exception:  # noqa: BLE001 - the table is made by the first batch
            return 0

    run_job(
        tmp_path,
        broker.bootstrap_servers,
        "--trigger",
        "2 seconds",
        kill_when=lambda: progressed() >= subscribed,
        patience=240,
    )
    assert progressed() == subscribed
    assert len(read(tmp_path, schema.BRONZE_EVENTS)) == summary["events_sent"]


def poison_stream() -> tuple[list[Record], Counter, dict]:
    """Valid events with every kind of poison between them: the records, the quarantine reasons
    expected, and the valid page views and purchases with their silver table."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    fields = {
        schema.SESSION_START: dict(device="desktop", referrer="direct", country="US"),
        schema.SESSION_END: {},
        schema.PAGE_VIEW: dict(page_type="product", page_url="/p/p1", product_id="p1"),
        schema.ADD_TO_CART: dict(product_id="p1", quantity=1, unit_price=10.5),
        schema.PURCHASE: dict(
            order_id="o1",
            product_id="p1",
            quantity=2,
            unit_price=10.5,
            discount=1,
            payment_method="card",
            currency="USD",
        ),
    }
    records, expected, valid = [], Counter(), {}

    def add(
        event_type: str, reason: str | None = None, value: bytes | str | None = "json", session: str = "s1", **changes
    ) -> None:
        n = len(records)
        at = start + dt.timedelta(seconds=n)
        if value == "json":
            event = {
                "event_id": f"e{n}",
                "event_type": event_type,
                "event_time": at.isoformat().replace("+00:00", "Z"),
                "ingest_time": (at + dt.timedelta(seconds=1)).isoformat().replace("+00:00", "Z"),
                "user_id": "u1",
                "session_id": session,
                **fields[event_type],
                **changes,
            }
            value = json.dumps(event).encode()
        topic = schema.EVENT_TOPIC[event_type]
        records.append(Record(topic, b"u1", value, MALFORMED if reason else VALID, event_type, at, at, reason))
        if reason:
            expected[reason] += 1
        elif topic != schema.TOPIC_USER_SESSIONS:  # session events land in silver_user_sessions only
            valid[f"e{n}"] = schema.SILVER_PURCHASES if topic == schema.TOPIC_PURCHASES else schema.SILVER_PAGE_VIEWS

    add(schema.SESSION_START)
    add(schema.PURCHASE, schema.REASON_OUT_OF_RANGE, quantity=2**31)  # past INT
    add(schema.PAGE_VIEW)
    add(schema.PURCHASE, schema.REASON_OUT_OF_RANGE, unit_price=1e10)  # past decimal(12,2)
    add(schema.PURCHASE, schema.REASON_OUT_OF_RANGE, quantity=1_000_000, unit_price=99999.99)  # revenue past it
    add(schema.PURCHASE, schema.REASON_OUT_OF_RANGE, discount="1e400")  # past a double
    add(schema.ADD_TO_CART, schema.REASON_OUT_OF_RANGE, quantity=-(2**40))
    add(schema.ADD_TO_CART)
    for when in (
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        (start + dt.timedelta(days=2)).isoformat().replace("+00:00", "Z"),
    ):
        add(schema.PAGE_VIEW, schema.REASON_IMPLAUSIBLE_TIME, event_time=when)
    add(schema.PURCHASE)
    for raw in (b"\xff\xfe{not utf-8", None, b"", b"[]"):
        add(schema.PAGE_VIEW, schema.REASON_BAD_JSON, value=raw)
    add(schema.PURCHASE, schema.REASON_BAD_TYPE, unit_price="NaN")
    add(schema.PURCHASE, schema.REASON_BAD_TYPE, quantity=1.5)
    add(schema.SESSION_START, schema.REASON_UNKNOWN_VALUE, session="s2", device="fridge")
    # Two valid lines whose sum does not fit decimal(12,2): the session's revenue, not the stream, gives way.
    add(schema.PURCHASE, session="s-big", order_id="o2", quantity=1, unit_price=6e9, discount=0)
    add(schema.PURCHASE, session="s-big", order_id="o3", quantity=1, unit_price=6e9, discount=0)
    add(schema.SESSION_END)
    product = {
        "product_id": "p1",
        "name": "p",
        "category": "books",
        "brand": "b",
        "price": 10.5,
        "currency": "USD",
        "updated_at": start.isoformat().replace("+00:00", "Z"),
    }
    records[:0] = [
        Record(
            schema.TOPIC_PRODUCTS, f"p{n}".encode(), json.dumps({**product, **change}).encode(), VALID, "", start, start
        )
        for n, change in ((1, {}), (2, {"product_id": "p2", "price": 1e20}))
    ]
    return records, expected, valid


def test_poison_between_valid_records_is_quarantined_and_the_stream_goes_on(tmp_path_factory, tmp_path):
    records, expected, valid = poison_stream()
    broker = KafkaBroker(tmp_path_factory.mktemp("poison-kafka"), port=free_port()).start()
    try:
        create_topics(broker.bootstrap_servers)
        send(records, broker.bootstrap_servers, show_progress=False)
        done = run_job(tmp_path, broker.bootstrap_servers)
        assert done.returncode == 0, done.stdout[-3000:]
        for table in (schema.SILVER_PAGE_VIEWS, schema.SILVER_PURCHASES):
            assert sorted(r["event_id"] for r in read(tmp_path, table)) == sorted(
                e for e, t in valid.items() if t == table
            )
        assert Counter(r["reason"] for r in read(tmp_path, schema.QUARANTINE)) == expected
        assert len(read(tmp_path, schema.BRONZE_EVENTS)) == len(records) - 2  # every event, the products aside
        sessions = {r["session_id"]: r for r in read(tmp_path, schema.SILVER_USER_SESSIONS)}
        assert sessions["s1"]["revenue"] == Decimal("20.00") and sessions["s-big"]["revenue"] is None
        assert [r["product_id"] for r in read(tmp_path, schema.SILVER_PRODUCTS)] == ["p1"]

        before = contents(tmp_path)
        shutil.rmtree(tmp_path / "checkpoints")
        again = run_job(tmp_path, broker.bootstrap_servers, "--starting-offsets", "earliest")
        assert again.returncode == 0, again.stdout[-3000:]
        assert contents(tmp_path) == before
    finally:
        broker.stop()


def recreate_topics(bootstrap: str) -> None:
    """Delete every project topic and create it again, empty, as a rebuilt Kafka cluster would have it."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics(list(schema.ALL_TOPICS))
        deadline = time.monotonic() + 60
        while set(schema.ALL_TOPICS) & set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        admin.close()
    create_topics(bootstrap)


def test_recreated_topic_stops_the_job_then_replay_from_earliest_adds_the_new_records(tmp_path_factory, tmp_path):
    """A recreated topic reuses offsets: with the old checkpoint the job stops naming the data loss;
    without it, a replay from earliest keeps the first incarnation's records and adds the second's."""
    broker = KafkaBroker(tmp_path_factory.mktemp("recreated-kafka"), port=free_port()).start()
    try:
        create_topics(broker.bootstrap_servers)
        sent = []
        first = Shop(GeneratorConfig(seed=7, events_per_day=1500, malformed_fraction=0.03))
        sent.append(send([*first.catalog(), *first.records()], broker.bootstrap_servers, show_progress=False))
        assert run_job(tmp_path, broker.bootstrap_servers).returncode == 0

        recreate_topics(broker.bootstrap_servers)
        # The second incarnation holds fewer records than were read from the first: a loss Spark can see.
        second = Shop(
            GeneratorConfig(seed=8, start_date=dt.date(2026, 11, 2), events_per_day=500, malformed_fraction=0.03)
        )
        sent.append(send([*second.catalog(), *second.records()], broker.bootstrap_servers, show_progress=False))
        stopped = run_job(tmp_path, broker.bootstrap_servers)
        assert stopped.returncode == 1
        (line,) = [text for text in stopped.stdout.splitlines() if text.startswith("error: streaming query failed")]
        assert "delete the checkpoint and rerun with --starting-offsets earliest" in line

        shutil.rmtree(tmp_path / "checkpoints")
        recovered = run_job(tmp_path, broker.bootstrap_servers, "--starting-offsets", "earliest")
        assert recovered.returncode == 0, recovered.stdout[-3000:]
    finally:
        broker.stop()
    totals = [summary.as_dict() for summary in sent]
    bronze = read(tmp_path, schema.BRONZE_EVENTS)
    assert len(bronze) == sum(t["events_sent"] for t in totals)
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in bronze}) < len(bronze), "offsets were reused"
    valid = sum((Counter(t["valid_by_type"]) for t in totals), Counter())
    silver = read(tmp_path, schema.SILVER_PAGE_VIEWS) + read(tmp_path, schema.SILVER_PURCHASES)
    assert Counter(r["event_type"] for r in silver) == Counter(
        {t: valid[t] for t in (schema.PAGE_VIEW, schema.ADD_TO_CART, schema.PURCHASE)}
    )
    rejected = Counter(r["reason"] for r in read(tmp_path, schema.QUARANTINE) if r["reason"] != schema.REASON_LATE)
    assert rejected == sum((Counter(t["malformed_by_reason"]) for t in totals), Counter())


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
    (line,) = [text for text in done.stdout.splitlines() if text.startswith("error: streaming query failed")]
    assert "batch 0, step products: [UNRESOLVED_COLUMN" in line and "product_id" in line  # not Spark's wrapper


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
        ("--max-event-age-days", "SHOPSTREAM_MAX_EVENT_AGE_DAYS"),
        ("--max-event-lead-seconds", "SHOPSTREAM_MAX_EVENT_LEAD_SECONDS"),
        ("--fail-on-data-loss", "SHOPSTREAM_FAIL_ON_DATA_LOSS"),
    ):
        assert flag in out.stdout and env in out.stdout
    assert "Recovery for a recreated topic" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "shopstream", "streaming", "--trigger", "often"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "use 'catch-up' or an interval" in bad.stderr


def test_event_time_window_settings_are_checked(capsys):
    from shopstream.spark.streaming.job import main

    for bad in (["--max-event-age-days", "0"], ["--max-event-age-days", "36501"], ["--max-event-lead-seconds", "-1"]):
        assert main(bad) == 2
        assert "--max-event-age-days must be between 1 and 36500" in capsys.readouterr().err


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
