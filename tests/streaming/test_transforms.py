"""The streaming job's pure transforms on small hand-built Kafka batches."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from pyspark.sql import types as T

from shopstream import schema
from shopstream.spark.streaming import transforms

pytestmark = pytest.mark.spark

UTC = dt.UTC
KAFKA_SCHEMA = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
    ]
)
T0 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def event(event_type: str, seconds: float = 0, sent_after: float = 1, **fields) -> dict:
    when = T0 + dt.timedelta(seconds=seconds)
    body = {
        "event_id": fields.pop("event_id", f"e-{event_type}-{seconds}"),
        "event_type": event_type,
        "event_time": when.isoformat().replace("+00:00", "Z"),
        "ingest_time": (when + dt.timedelta(seconds=sent_after)).isoformat().replace("+00:00", "Z"),
        "user_id": "u1",
        "session_id": "s1",
    }
    body.update(fields)
    return body


def kafka_batch(spark, items):
    """items: (topic, payload) with payload a dict (sent as JSON), raw text or raw bytes."""
    rows = [
        (
            b"u1",
            p if isinstance(p, bytes) else (json.dumps(p) if isinstance(p, dict) else p).encode(),
            topic,
            0,
            offset,
            T0.replace(tzinfo=None),
        )
        for offset, (topic, p) in enumerate(items)
    ]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


def verdicts(spark, items):
    out = transforms.parse_and_validate(kafka_batch(spark, items)).orderBy("kafka_offset").collect()
    return [(r.reason, r.detail) for r in out], out


RAW = schema.TOPIC_RAW_EVENTS
PURCHASE = dict(
    order_id="o1", product_id="p1", quantity=2, unit_price=10.5, discount=1.0, payment_method="card", currency="USD"
)


def test_every_reason_code_is_assigned(spark):
    items = [
        (RAW, event("page_view", page_type="home", page_url="/")),  # valid
        (RAW, '{"event_id": "x", "event_type": "page_view"'),  # truncated JSON
        (RAW, "[1, 2]"),  # JSON, not an object
        (RAW, {k: v for k, v in event("page_view", page_type="home", page_url="/").items() if k != "user_id"}),
        (RAW, event("purchase", **{**PURCHASE, "quantity": "three"})),
        (RAW, event("purchase", **{**PURCHASE, "unit_price": -10.5})),
        (RAW, event("purchase", **{**PURCHASE, "quantity": 0})),
        (RAW, event("refund", **PURCHASE)),  # no such event type
        (RAW, event("page_view", page_type="basement", page_url="/x")),
        (RAW, event("session_start", device="fridge", referrer="direct", country="US")),
        (RAW, event("page_view", page_type="home", page_url="/", event_time="yesterday afternoon")),
        (RAW, {k: v for k, v in event("page_view", page_type="home", page_url="/").items() if k != "event_type"}),
        (RAW, event("purchase", **{**PURCHASE, "discount": 0})),  # a zero discount is fine
        (RAW, json.dumps(event("page_view", page_type="home", page_url="/")).encode().replace(b"u1", b"u\xff")),
    ]
    got, rows = verdicts(spark, items)
    assert got == [
        (None, None),
        (schema.REASON_BAD_JSON, "payload is not a JSON object"),
        (schema.REASON_BAD_JSON, "payload is not a JSON object"),
        (schema.REASON_MISSING_FIELD, "user_id"),
        (schema.REASON_BAD_TYPE, "quantity"),
        (schema.REASON_OUT_OF_RANGE, "unit_price"),
        (schema.REASON_OUT_OF_RANGE, "quantity"),
        (schema.REASON_UNKNOWN_TYPE, "event_type refund"),
        (schema.REASON_UNKNOWN_VALUE, "page_type"),
        (schema.REASON_UNKNOWN_VALUE, "device"),
        (schema.REASON_BAD_TYPE, "event_time"),
        (schema.REASON_MISSING_FIELD, "event_type"),
        (None, None),
        (schema.REASON_BAD_JSON, "payload is not UTF-8"),
    ]
    assert {reason for reason, _ in got if reason} <= set(schema.QUARANTINE_REASONS)
    assert rows[-1].raw_value.startswith('{"event_id"') and '"u\ufffd"' in rows[-1].raw_value
    valid = rows[-2]
    assert valid.quantity == 2 and valid.unit_price == Decimal("10.50") and valid.discount == Decimal("0.00")
    assert valid.event_time == dt.datetime(2026, 11, 1, 10, 0)  # session time zone is UTC
    assert rows[1].raw_value.startswith('{"event_id": "x"') and rows[1].kafka_offset == 1


def test_values_are_checked_against_their_column_types_before_the_cast(spark):
    """Each value that would make a cast fail (Spark's ANSI mode) is out_of_range, revenue included;
    the largest values that fit are valid and land exactly."""
    top_money = str(schema.VALUE_RANGES[schema.MONEY][1])  # 9999999999.99
    items = [
        (RAW, event("purchase", **{**PURCHASE, "quantity": 2**31})),  # one past INT
        (RAW, event("purchase", **{**PURCHASE, "unit_price": 1e10})),  # one cent past MONEY
        (RAW, event("purchase", **{**PURCHASE, "unit_price": "9999999999.995"})),  # rounds past MONEY
        (RAW, event("purchase", **{**PURCHASE, "discount": 1e40})),  # past any decimal
        (RAW, event("add_to_cart", product_id="p1", quantity=1, unit_price="1e400")),  # past a double
        (RAW, event("purchase", **{**PURCHASE, "quantity": 1_000_000, "unit_price": 99999.99, "discount": 0})),
        (RAW, event("purchase", **{**PURCHASE, "quantity": 2**31, "unit_price": -1})),  # one name per field
        (RAW, event("purchase", **{**PURCHASE, "unit_price": "NaN"})),  # not a number at all
        (RAW, event("purchase", **{**PURCHASE, "quantity": 1, "unit_price": top_money, "discount": 0})),
        (RAW, event("purchase", **{**PURCHASE, "quantity": 2**31 - 1, "unit_price": 1, "discount": 0})),
    ]
    got, _ = verdicts(spark, items)
    assert got == [
        (schema.REASON_OUT_OF_RANGE, "quantity"),
        (schema.REASON_OUT_OF_RANGE, "unit_price"),
        (schema.REASON_OUT_OF_RANGE, "unit_price"),
        (schema.REASON_OUT_OF_RANGE, "discount"),
        (schema.REASON_OUT_OF_RANGE, "unit_price"),
        (schema.REASON_OUT_OF_RANGE, "revenue"),
        (schema.REASON_OUT_OF_RANGE, "quantity,unit_price"),
        (schema.REASON_BAD_TYPE, "unit_price"),
        (None, None),
        (None, None),
    ]
    valid = transforms.parse_and_validate(kafka_batch(spark, items)).where("reason IS NULL")
    lines = transforms.to_purchases(valid, spark.createDataFrame([], schema.spark_schema(schema.PRODUCT_COLUMNS)))
    assert sorted(r.revenue for r in lines.collect()) == [Decimal(2**31 - 1), Decimal(top_money)]


def test_implausible_event_times_have_their_own_reason(spark):
    """The window is measured from each record's Kafka time (T0 here), so a replay decides the same."""

    def at(when: dt.datetime) -> dict:
        return event(
            "page_view",
            page_type="home",
            page_url="/",
            event_id=f"e-{when.isoformat()}",
            event_time=when.isoformat().replace("+00:00", "Z"),
        )

    items = [
        (RAW, at(when))
        for when in (
            dt.datetime(1, 1, 1, tzinfo=UTC),
            dt.datetime(1970, 1, 1, tzinfo=UTC),
            dt.datetime(9999, 12, 31, tzinfo=UTC),
            T0 + dt.timedelta(seconds=3601),
            T0 + dt.timedelta(seconds=3600),
            T0 - dt.timedelta(days=365),
        )
    ]

    def reasons(window=None):
        # Python's datetime cannot hold year 1 in every time zone: only the verdicts come back.
        window = window or transforms.TimeWindow()
        out = transforms.parse_and_validate(kafka_batch(spark, items), window).orderBy("kafka_offset")
        return [(r.reason, r.detail) for r in out.select("reason", "detail").collect()]

    got = reasons()
    assert [reason for reason, _ in got] == [schema.REASON_IMPLAUSIBLE_TIME] * 4 + [None, None]
    assert got[3][1] == (
        "event_time 2026-11-01 11:00:01 is more than 365 days before or 3600 seconds after its "
        "Kafka time 2026-11-01 10:00:00"
    )
    assert [reason for reason, _ in reasons(transforms.TimeWindow(30, 0))][-2:] == [schema.REASON_IMPLAUSIBLE_TIME] * 2


def test_a_session_whose_revenue_does_not_fit_money_has_none(spark):
    """Two valid lines can sum past decimal(12,2): the session keeps its counts, its revenue is null."""
    big = {**PURCHASE, "quantity": 1, "unit_price": 6_000_000_000, "discount": 0}
    items = [
        (RAW, event("purchase", 1, **big)),
        (RAW, event("purchase", 2, **{**big, "order_id": "o2"})),
        (RAW, event("purchase", 3, **{**big, "session_id": "s2"})),
    ]
    valid = transforms.parse_and_validate(kafka_batch(spark, items))
    catalog = spark.createDataFrame([], schema.spark_schema(schema.PRODUCT_COLUMNS))
    sessions = transforms.session_rows(transforms.to_page_views(valid), transforms.to_purchases(valid, catalog), valid)
    rows = {r.session_id: r for r in sessions.collect()}
    assert (rows["s1"].orders, rows["s1"].revenue, rows["s1"].converted) == (2, None, True)
    assert rows["s2"].revenue == Decimal("6000000000.00")


def test_purchases_revenue_discount_and_enrichment(spark):
    batch = kafka_batch(
        spark,
        [
            (RAW, event("purchase", **PURCHASE)),
            (RAW, event("purchase", 5, **{**PURCHASE, "product_id": "p-unknown", "discount": 0})),
        ],
    )
    valid = transforms.parse_and_validate(batch)
    catalog = spark.createDataFrame(
        [("p1", "n", "books", "b", Decimal("11.00"), "USD", T0)], schema.spark_schema(schema.PRODUCT_COLUMNS)
    )
    rows = {r.product_id: r for r in transforms.to_purchases(valid, catalog).collect()}
    assert rows["p1"].revenue == Decimal("20.00")  # 2 x 10.50 - 1.00
    assert (rows["p1"].category, rows["p1"].list_price) == ("books", Decimal("11.00"))
    assert rows["p-unknown"].revenue == Decimal("21.00") and rows["p-unknown"].category is None
    assert rows["p1"].event_date == dt.date(2026, 11, 1)


def test_page_views_derive_product_and_date(spark):
    batch = kafka_batch(
        spark,
        [
            (RAW, event("page_view", page_type="product", page_url="/p/p42", category="books")),
            (RAW, event("add_to_cart", 3, product_id="p42", quantity=1, unit_price=4.0)),
            (RAW, event("page_view", 6, page_type="home", page_url="/")),
        ],
    )
    rows = transforms.to_page_views(transforms.parse_and_validate(batch)).orderBy("event_time").collect()
    assert [(r.event_type, r.page_type, r.product_id) for r in rows] == [
        ("page_view", "product", "p42"),
        ("add_to_cart", "product", "p42"),
        ("page_view", "home", None),
    ]
    assert rows[1].quantity == 1 and rows[1].unit_price == Decimal("4.00")
    assert {r.event_date for r in rows} == {dt.date(2026, 11, 1)}


def test_lateness_is_decided_per_record(spark):
    batch = kafka_batch(
        spark,
        [
            (RAW, event("page_view", 0, sent_after=1799, page_type="home", page_url="/")),
            (RAW, event("page_view", 1, sent_after=1801, page_type="home", page_url="/")),
        ],
    )
    valid = transforms.parse_and_validate(batch)
    late = transforms.late_records(valid, 1800).collect()
    assert [r.event_id for r in late] == ["e-page_view-1"]
    assert late[0].reason == schema.REASON_LATE and "sent 1801s after" in late[0].detail


def test_sessions_from_silver_rows_and_session_events(spark):
    items = [
        (RAW, event("session_start", 0, device="mobile", referrer="search", country="DE")),
        (RAW, event("page_view", 10, page_type="product", page_url="/p/p1", product_id="p1")),
        (RAW, event("page_view", 20, page_type="product", page_url="/p/p1", product_id="p1")),
        (RAW, event("page_view", 30, page_type="product", page_url="/p/p2", product_id="p2")),
        (RAW, event("add_to_cart", 40, product_id="p1", quantity=2, unit_price=10.5)),
        (RAW, event("purchase", 50, **PURCHASE)),
        (RAW, event("purchase", 51, **{**PURCHASE, "product_id": "p2", "quantity": 1, "discount": 0})),
        (RAW, event("session_end", 90)),
        # A session with no page views at all: only its start and end.
        (RAW, event("session_start", 0, session_id="s2", device="desktop", referrer="direct", country="US")),
        (RAW, event("session_end", 5, session_id="s2")),
    ]
    valid = transforms.parse_and_validate(kafka_batch(spark, items))
    catalog = spark.createDataFrame([], schema.spark_schema(schema.PRODUCT_COLUMNS))
    sessions = transforms.session_rows(transforms.to_page_views(valid), transforms.to_purchases(valid, catalog), valid)
    rows = {r.session_id: r for r in sessions.collect()}
    s1 = rows["s1"]
    assert (s1.page_views, s1.products_viewed, s1.cart_adds, s1.orders) == (3, 2, 1, 1)
    assert s1.revenue == Decimal("30.50") and s1.converted is True  # 20.00 + 10.50
    assert s1.duration_seconds == 90 and (s1.device, s1.referrer, s1.country) == ("mobile", "search", "DE")
    s2 = rows["s2"]
    assert (s2.page_views, s2.orders, s2.revenue, s2.converted) == (0, 0, Decimal("0.00"), False)
    assert s2.duration_seconds == 5 and s2.session_date == dt.date(2026, 11, 1)


def test_bronze_keeps_raw_and_parses_what_it_can(spark):
    batch = kafka_batch(
        spark,
        [
            (schema.TOPIC_RAW_EVENTS, event("page_view", page_type="home", page_url="/")),
            (schema.TOPIC_RAW_EVENTS, "not json"),
            (schema.TOPIC_RAW_EVENTS, b"\xff{"),
        ],
    )
    rows = transforms.to_bronze(transforms.parse_and_validate(batch)).orderBy("kafka_offset").collect()
    assert rows[0].event_type == "page_view" and rows[0].event_time == dt.datetime(2026, 11, 1, 10, 0)
    assert rows[1].raw_value == "not json" and rows[1].event_type is None
    assert rows[2].raw_value == "\ufffd{"  # a string column holds UTF-8 only, or no reader can read the table
    assert rows[1].partition_time == dt.datetime(2026, 11, 1, 10, 0)  # falls back to the Kafka time


def test_latest_product_version_wins(spark):
    old = {
        "product_id": "p1",
        "name": "a",
        "category": "books",
        "brand": "b",
        "price": 5.0,
        "currency": "USD",
        "updated_at": "2026-11-01T00:00:00Z",
    }
    new = {**old, "price": 6.0, "updated_at": "2026-11-02T00:00:00Z"}
    batch = kafka_batch(
        spark, [(schema.TOPIC_PRODUCTS, new), (schema.TOPIC_PRODUCTS, old), (schema.TOPIC_PRODUCTS, "garbage")]
    )
    rows = transforms.latest_products(batch).collect()
    assert [(r.product_id, r.price) for r in rows] == [("p1", Decimal("6.00"))]
