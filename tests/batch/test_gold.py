"""Gold metrics against values worked out by hand on a small silver day.

The day, 2026-11-02:
  u1  session s1 (desktop, search): home, product p1 twice, product p2, a cart add of p1;
      order o1: p1 x2 at 10.00 with 2.00 off (18.00) and p2 x1 at 5.00 (5.00).
      Bought before: o0 on 2026-10-20, 50.00.
  u2  session s2 (mobile, direct) with no page views at all, and a first-ever order o2:
      p1 x1 at 10.00 with 1.00 off (9.00).
  u3  session s3 (mobile, social): product p2, product p3; buys nothing.
      Bought before: o9 on 2026-09-01, 100.00.
  u4  not active that day; bought o8 on 2026-11-01 for 40.00.
Catalog: p1 and p3 are books, p2 is toys.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from shopstream import lake, schema
from shopstream.spark import iceberg
from shopstream.spark.batch import transforms
from shopstream.spark.batch.customer_analytics import JOB as CUSTOMER_JOB
from shopstream.spark.batch.data_quality import JOB as QUALITY_JOB
from shopstream.spark.batch.product_analytics import JOB as PRODUCT_JOB
from shopstream.spark.batch.runner import Inputs, MissingTable
from shopstream.spark.batch.sales_summary import JOB as SALES_JOB

pytestmark = pytest.mark.spark

UTC = dt.UTC
DAY = dt.date(2026, 11, 2)
D = Decimal


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), UTC)


def page_view(
    n, user, session, minute, page_type, product=None, event_type=schema.PAGE_VIEW, quantity=None, price=None
):
    t = at(DAY, 10, minute)
    return {
        "event_id": f"pv{n}",
        "event_type": event_type,
        "event_time": t,
        "ingest_time": t,
        "user_id": user,
        "session_id": session,
        "page_type": page_type,
        "page_url": f"/p/{product}" if product else "/",
        "product_id": product,
        "category": None,
        "quantity": quantity,
        "unit_price": price,
        "event_date": DAY,
    }


def purchase(n, user, session, order, product, qty, price, discount, day=DAY, category=None):
    t = at(day, 11, n)
    return {
        "event_id": f"pu{n}",
        "event_type": schema.PURCHASE,
        "event_time": t,
        "ingest_time": t,
        "user_id": user,
        "session_id": session,
        "order_id": order,
        "product_id": product,
        "quantity": qty,
        "unit_price": D(price),
        "discount": D(discount),
        "payment_method": "card",
        "currency": "USD",
        "revenue": D(price) * qty - D(discount),
        "category": category,
        "list_price": D(price),
        "event_date": day,
    }


def session(sid, user, device, referrer, start_minute, end_minute, **counts):
    return {
        "session_id": sid,
        "user_id": user,
        "session_start": at(DAY, 10, start_minute),
        "session_end": at(DAY, 11, end_minute),
        "duration_seconds": 0,
        "device": device,
        "referrer": referrer,
        "country": "US",
        "page_views": counts.get("pv", 0),
        "products_viewed": 0,
        "cart_adds": 0,
        "orders": 0,
        "revenue": D("0"),
        "converted": False,
        "session_date": DAY,
    }


PAGE_VIEWS = [
    page_view(1, "u1", "s1", 1, "home"),
    page_view(2, "u1", "s1", 2, "product", "p1"),
    page_view(3, "u1", "s1", 3, "product", "p1"),
    page_view(4, "u1", "s1", 4, "product", "p2"),
    page_view(5, "u1", "s1", 5, "product", "p1", schema.ADD_TO_CART, 2, D("10.00")),
    page_view(6, "u3", "s3", 6, "product", "p2"),
    page_view(7, "u3", "s3", 7, "product", "p3"),
]
PURCHASES = [
    purchase(1, "u1", "s1", "o1", "p1", 2, "10.00", "2.00", category="books"),
    purchase(2, "u1", "s1", "o1", "p2", 1, "5.00", "0.00", category="toys"),
    purchase(3, "u2", "s2", "o2", "p1", 1, "10.00", "1.00", category="books"),
    purchase(4, "u1", "s0", "o0", "p3", 1, "50.00", "0.00", day=dt.date(2026, 10, 20), category="books"),
    purchase(5, "u3", "s9", "o9", "p3", 1, "100.00", "0.00", day=dt.date(2026, 9, 1), category="books"),
    purchase(6, "u4", "s8", "o8", "p2", 1, "40.00", "0.00", day=dt.date(2026, 11, 1), category="toys"),
]
SESSIONS = [
    session("s1", "u1", "desktop", "search", 0, 30, pv=4),
    session("s2", "u2", "mobile", "direct", 20, 40),
    session("s3", "u3", "mobile", "social", 5, 10, pv=2),
]
PRODUCTS = [
    {
        "product_id": p,
        "name": p,
        "category": c,
        "brand": "b",
        "price": D("1.00"),
        "currency": "USD",
        "updated_at": at(DAY, 0),
    }
    for p, c in (("p1", "books"), ("p2", "toys"), ("p3", "books"))
]


def frame(spark, table, rows):
    return spark.createDataFrame(rows, schema.spark_schema(table.columns))


@pytest.fixture(scope="module")
def silver(spark):
    return {
        "page_views": frame(spark, schema.PAGE_VIEWS, PAGE_VIEWS),
        "purchases": frame(spark, schema.PURCHASES, PURCHASES),
        "sessions": frame(spark, schema.USER_SESSIONS, SESSIONS),
        "products": frame(spark, schema.PRODUCTS, PRODUCTS),
    }


def by(rows, key):
    return {r[key]: r.asDict() for r in rows}


def test_customer_analytics(silver):
    rows = by(
        transforms.customer_analytics(DAY, silver["page_views"], silver["purchases"], silver["sessions"]).collect(),
        "user_id",
    )
    assert set(rows) == {"u1", "u2", "u3"}, "only customers active that day"
    u1, u2, u3 = rows["u1"], rows["u2"], rows["u3"]
    assert (u1["sessions"], u1["page_views"], u1["products_viewed"], u1["cart_adds"], u1["orders"], u1["units"]) == (
        1,
        4,
        2,
        1,
        1,
        3,
    )
    assert (u1["revenue"], u1["avg_order_value"], u1["lifetime_revenue"], u1["lifetime_orders"]) == (
        D("23.00"),
        D("23.00"),
        D("73.00"),
        2,
    )
    assert u1["days_since_previous_purchase"] == 13 and u1["converted"] is True
    assert u1["engagement_score"] == D("33.000000")  # 4 + 2x2 + 5x1 + 20x1
    assert u1["segment"] == "active"
    assert (u1["first_seen"], u1["last_seen"]) == (
        dt.datetime(2026, 11, 2, 10, 0),
        dt.datetime(2026, 11, 2, 11, 30),
    )  # UTC
    # A session without page views, and a customer's first purchase.
    assert (u2["sessions"], u2["page_views"], u2["orders"], u2["revenue"]) == (1, 0, 1, D("9.00"))
    assert (
        u2["segment"] == "new"
        and u2["days_since_previous_purchase"] is None
        and u2["engagement_score"] == D("20.000000")
    )
    # Views but no purchase, last order 62 days ago.
    assert (u3["orders"], u3["revenue"], u3["avg_order_value"], u3["converted"]) == (0, D("0.00"), None, False)
    assert u3["days_since_previous_purchase"] == 62 and u3["segment"] == "at_risk"
    assert u3["engagement_score"] == D("6.000000")


def test_segment_rules_in_order(spark):
    history = [
        purchase(i, "big", f"h{i}", f"h{i}", "p1", 1, "600.00", "0", day=dt.date(2026, 10, 1 + i)) for i in range(2)
    ]
    history += [
        purchase(10 + i, "regular", f"r{i}", f"r{i}", "p1", 1, "10.00", "0", day=dt.date(2026, 10, 1 + i))
        for i in range(3)
    ]
    views = [
        page_view(20, "big", "x1", 1, "home"),
        page_view(21, "regular", "x2", 2, "home"),
        page_view(22, "visitor", "x3", 3, "home"),
    ]
    rows = by(
        transforms.customer_analytics(
            DAY,
            frame(spark, schema.PAGE_VIEWS, views),
            frame(spark, schema.PURCHASES, history),
            frame(spark, schema.USER_SESSIONS, []),
        ).collect(),
        "user_id",
    )
    assert rows["big"]["segment"] == "high_value" and rows["big"]["lifetime_revenue"] == D("1200.00")
    assert rows["regular"]["segment"] == "loyal"
    assert rows["visitor"]["segment"] == "browser" and rows["visitor"]["lifetime_orders"] == 0
    assert {r["segment"] for r in rows.values()} <= set(schema.SEGMENTS)


def test_sales_summary(silver):
    (row,) = transforms.sales_summary(
        DAY, silver["page_views"], silver["purchases"].where("event_date >= '2026-10-26'"), silver["sessions"]
    ).collect()
    assert (row.revenue, row.orders, row.units, row.avg_order_value) == (D("32.00"), 2, 4, D("16.00"))
    assert (row.unique_buyers, row.unique_visitors, row.sessions) == (2, 3, 3)
    assert row.orders_per_session == D("0.666667") and row.buyers_per_visitor == D("0.666667")
    assert (row.sessions_desktop, row.sessions_mobile, row.sessions_tablet) == (1, 2, 0)
    assert (row.sessions_direct, row.sessions_search, row.sessions_social, row.sessions_email, row.sessions_ads) == (
        1,
        1,
        1,
        0,
        0,
    )
    assert row.revenue_change_vs_previous_day == D("-0.200000")  # (32 - 40) / 40
    assert row.revenue_vs_trailing_7d_avg == D("5.600000")  # 32 / (40 / 7)


def test_a_ratio_that_does_not_fit_a_rate_is_null(spark, silver):
    values = spark.createDataFrame(
        [(D("999999.9999994"), 1), (D("999999.9999995"), 1), (D("-2000000"), 1), (D("5"), 0)],
        "num decimal(24,7), den long",
    )
    assert [r.rate for r in values.select(transforms.ratio("num", "den").alias("rate")).collect()] == [
        D("999999.999999"),
        None,
        None,
        None,
    ]
    # A cent of revenue the day before, a million today: both comparisons are past a rate's range.
    day_before = DAY - dt.timedelta(days=1)
    purchases = frame(
        spark,
        schema.PURCHASES,
        [
            purchase(1, "u1", "s1", "o1", "p1", 1, "0.01", "0.00", day=day_before),
            purchase(2, "u1", "s1", "o2", "p1", 1, "1000000.00", "0.00"),
        ],
    )
    (row,) = transforms.sales_summary(DAY, silver["page_views"], purchases, silver["sessions"]).collect()
    assert row.revenue == D("1000000.00")
    assert (row.revenue_change_vs_previous_day, row.revenue_vs_trailing_7d_avg) == (None, None)


def test_sales_by_category(silver):
    rows = by(transforms.sales_by_category(DAY, silver["purchases"]).collect(), "category")
    assert {k: (v["revenue"], v["orders"], v["units"], v["unique_buyers"]) for k, v in rows.items()} == {
        "books": (D("27.00"), 2, 3, 2),
        "toys": (D("5.00"), 1, 1, 1),
    }


def test_product_analytics(silver):
    today = silver["purchases"].where(f"event_date = '{DAY}'")
    rows = by(
        transforms.product_analytics(DAY, silver["page_views"], today, silver["products"]).collect(), "product_id"
    )
    p1, p2, p3 = rows["p1"], rows["p2"], rows["p3"]
    assert (p1["views"], p1["unique_viewers"], p1["cart_adds"], p1["purchases"], p1["units"], p1["revenue"]) == (
        2,
        1,
        1,
        2,
        3,
        D("27.00"),
    )
    assert (p1["view_to_cart_rate"], p1["cart_to_purchase_rate"], p1["view_to_purchase_rate"]) == (D("1.000000"),) * 3
    assert (p1["revenue_rank"], p1["category_revenue_rank"], p1["category"]) == (1, 1, "books")
    assert (p2["views"], p2["unique_viewers"], p2["cart_adds"], p2["purchases"], p2["revenue"]) == (
        2,
        2,
        0,
        1,
        D("5.00"),
    )
    assert (p2["view_to_cart_rate"], p2["cart_to_purchase_rate"], p2["view_to_purchase_rate"]) == (
        D("0.000000"),
        None,
        D("0.500000"),
    )
    assert (p2["revenue_rank"], p2["category_revenue_rank"], p2["viewing_sessions"], p2["purchasing_sessions"]) == (
        2,
        1,
        2,
        1,
    )
    # Views but no purchases.
    assert (p3["views"], p3["purchases"], p3["revenue"], p3["view_to_purchase_rate"]) == (
        1,
        0,
        D("0.00"),
        D("0.000000"),
    )
    assert (p3["revenue_rank"], p3["category_revenue_rank"], p3["bought_together"]) == (3, 2, "[]")
    assert json.loads(p1["bought_together"]) == [{"product_id": "p2", "support": 0.5, "confidence": 0.5}]
    assert json.loads(p2["bought_together"]) == [{"product_id": "p1", "support": 0.5, "confidence": 1.0}]
    assert json.loads(p1["viewed_together"]) == [{"product_id": "p2", "support": 0.5, "confidence": 1.0}]
    assert json.loads(p2["viewed_together"]) == [
        {"product_id": "p1", "support": 0.5, "confidence": 0.5},
        {"product_id": "p3", "support": 0.5, "confidence": 0.5},
    ]


def test_data_quality(spark, silver):
    duplicate = dict(PAGE_VIEWS[0])
    broken = purchase(7, "u5", "s5", "o5", "p1", 1, "10.00", "12.00")  # a discount larger than the line
    page_views = frame(spark, schema.PAGE_VIEWS, [*PAGE_VIEWS, duplicate])
    purchases = frame(spark, schema.PURCHASES, [p for p in PURCHASES if p["event_date"] == DAY] + [broken])
    quarantine = frame(
        spark,
        schema.QUARANTINE_TABLE,
        [
            {
                "reason": r,
                "detail": None,
                "topic": schema.TOPIC_RAW_EVENTS,
                "kafka_partition": 0,
                "kafka_offset": i,
                "kafka_timestamp": at(DAY, 9),
                "kafka_key": None,
                "raw_value": "{}",
                "event_id": f"q{i}",
                "event_type": event_type,
                "event_time": at(DAY, 9),
                "ingest_time": at(DAY, 9),
                "partition_time": at(DAY, 9),
            }
            # A record is the table's by its event type; one without a type is no table's.
            for i, (r, event_type) in enumerate(
                [
                    (schema.REASON_BAD_TYPE, schema.PAGE_VIEW),
                    (schema.REASON_LATE, schema.ADD_TO_CART),
                    (schema.REASON_LATE, schema.PAGE_VIEW),
                    (schema.REASON_OUT_OF_RANGE, schema.PURCHASE),
                    (schema.REASON_BAD_JSON, None),
                ]
            )
        ],
    )
    report_time = at(DAY, 12)
    rows = by(
        transforms.data_quality(
            DAY,
            {
                schema.SILVER_PAGE_VIEWS: page_views,
                schema.SILVER_PURCHASES: purchases,
                schema.SILVER_USER_SESSIONS: silver["sessions"],
            },
            quarantine,
            report_time,
        ).collect(),
        "table_name",
    )
    pv, pu, us = rows[schema.SILVER_PAGE_VIEWS], rows[schema.SILVER_PURCHASES], rows[schema.SILVER_USER_SESSIONS]
    assert (pv["row_count"], pv["duplicate_count"], pv["out_of_range_count"], pv["late_event_count"]) == (8, 1, 0, 2)
    assert json.loads(pv["quarantine_by_reason"]) == {"bad_type": 1, "late_event": 2}
    assert pv["freshness_lag_seconds"] == 2 * 3600 - 7 * 60  # 12:00 minus the newest view at 10:07
    assert json.loads(pv["null_rates"])["event_id"] == 0.0
    assert (pu["row_count"], pu["duplicate_count"], pu["out_of_range_count"]) == (4, 0, 1)
    assert json.loads(pu["quarantine_by_reason"]) == {"out_of_range": 1}
    assert (us["row_count"], us["late_event_count"], us["quarantine_by_reason"]) == (3, 0, "{}")


# -- the jobs against the lake ----------------------------------------------------------------


def write_silver(spark, page_views=PAGE_VIEWS, purchases=PURCHASES, sessions=SESSIONS, products=PRODUCTS):
    iceberg.ensure_tables(
        spark,
        [
            schema.SILVER_PAGE_VIEWS,
            schema.SILVER_PURCHASES,
            schema.SILVER_USER_SESSIONS,
            schema.SILVER_PRODUCTS,
            schema.QUARANTINE,
        ],
    )
    for table, rows in (
        (schema.PAGE_VIEWS, page_views),
        (schema.PURCHASES, purchases),
        (schema.USER_SESSIONS, sessions),
        (schema.PRODUCTS, products),
    ):
        frame(spark, table, rows).writeTo(lake.table_ref(table.name)).append()


def gold(spark, name):
    return spark.table(lake.table_ref(name)).orderBy(*schema.TABLES[name].identifier).collect()


def test_jobs_are_idempotent_and_touch_only_their_date(empty_lake):
    spark = empty_lake
    write_silver(spark)
    other_day = dt.date(2026, 11, 1)
    first = {job.name: job.run(spark, DAY) for job in (CUSTOMER_JOB, SALES_JOB, PRODUCT_JOB, QUALITY_JOB)}
    other = SALES_JOB.run(spark, other_day)
    assert first[CUSTOMER_JOB.name]["rows_written"] == {schema.GOLD_CUSTOMER_ANALYTICS: 3}
    assert first[SALES_JOB.name]["totals"] == {"revenue": "32.00", "orders": 2}
    assert first[PRODUCT_JOB.name]["rows_written"] == {schema.GOLD_PRODUCT_ANALYTICS: 3}
    assert other["totals"]["revenue"] == "40.00"
    before = {
        name: gold(spark, name)
        for name in (
            schema.GOLD_CUSTOMER_ANALYTICS,
            schema.GOLD_SALES_SUMMARY,
            schema.GOLD_SALES_BY_CATEGORY,
            schema.GOLD_PRODUCT_ANALYTICS,
        )
    }
    for job in (CUSTOMER_JOB, SALES_JOB, PRODUCT_JOB):
        job.run(spark, DAY)
    after = {name: gold(spark, name) for name in before}
    assert after == before, "a rerun replaces the date's partition with identical rows"
    assert [r.date for r in after[schema.GOLD_SALES_SUMMARY]] == [other_day, DAY], "the other date is untouched"
    # Cross-check: gold revenue of the day equals silver revenue of the day, three ways.
    silver_revenue = (
        spark.table(lake.table_ref(schema.SILVER_PURCHASES))
        .where(f"event_date = '{DAY}'")
        .agg({"revenue": "sum"})
        .first()[0]
    )
    for name in (schema.GOLD_CUSTOMER_ANALYTICS, schema.GOLD_SALES_BY_CATEGORY, schema.GOLD_PRODUCT_ANALYTICS):
        assert sum(r.revenue for r in after[name] if r.date == DAY) == silver_revenue == D("32.00")


def test_empty_date_writes_nothing(empty_lake):
    write_silver(empty_lake)
    result = SALES_JOB.run(empty_lake, dt.date(2026, 12, 25))
    assert result["rows_written"] == {schema.GOLD_SALES_SUMMARY: 0, schema.GOLD_SALES_BY_CATEGORY: 0}
    assert not iceberg.table_exists(empty_lake, schema.GOLD_SALES_SUMMARY)


def test_missing_silver_table_fails_fast_with_its_name(empty_lake):
    with pytest.raises(MissingTable, match=r"lake\.shopstream\.silver_page_views does not exist"):
        CUSTOMER_JOB.run(empty_lake, DAY)
    assert not iceberg.table_exists(empty_lake, schema.GOLD_CUSTOMER_ANALYTICS)


def test_cli_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        SALES_JOB.parser().parse_args(["--date", "2026-02-30"])
    assert exc.value.code == 2 and "is not a date" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        SALES_JOB.parser().parse_args([])
    assert exc.value.code == 2


def test_inputs_read_the_right_days(empty_lake):
    write_silver(empty_lake)
    inputs = Inputs(empty_lake, DAY)
    assert inputs.purchases().count() == 3
    assert inputs.purchases(days_before=1).count() == 4
    assert inputs.purchases(days_before=None).count() == 6
    assert inputs.page_views().count() == 7 and inputs.sessions().count() == 3


def test_cli_run_writes_its_result_file(empty_lake, lake_settings, tmp_path):
    """The entry point as a launcher runs it: its own process, catalog settings as arguments."""
    write_silver(empty_lake)
    result_file = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shopstream",
            schema.GOLD_SALES_SUMMARY,
            "--date",
            str(DAY),
            "--result-file",
            str(result_file),
            "--catalog-uri",
            lake_settings.catalog_uri,
            "--warehouse",
            lake_settings.warehouse,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SHOPSTREAM_SPARK_MASTER": "local[1]"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(result_file.read_text())
    assert result["job"] == schema.GOLD_SALES_SUMMARY and result["date"] == "2026-11-02"
    assert result["rows_written"] == {schema.GOLD_SALES_SUMMARY: 1, schema.GOLD_SALES_BY_CATEGORY: 2}
    assert result["totals"] == {"revenue": "32.00", "orders": 2} and result["duration_seconds"] > 0
    assert "wrote gold_daily_sales_summary 1" in done.stdout
