"""Gold metrics against values worked out by hand on a small silver day.

The day, 2026-11-02 (D), in UTC:
  u1  session s1 (desktop, search): home, product p1 twice, product p2, a cart add of p1;
      order o1: p1 x2 at 10.00 with 2.00 off (18.00) and p2 x1 at 5.00 (5.00).
      Bought before: o0 on 2026-10-20, 50.00.
  u2  session s2 (mobile, direct) with no page views at all, and two first-ever orders:
      o2, p1 x1 at 10.00 with 1.00 off (9.00), and o4, p3 x1 at 7.00.
  u3  session s3 (mobile, social): product p2, product p3 (its category missing); buys nothing.
      Bought before: o9 on 2026-09-01, 100.00. A session s10 on 2026-10-30, no order.
  u5  session s5 (tablet, email) from 23:50, and a first-ever order o5 across midnight: p2 x1 at
      20.00 at 23:59 on D, p1 x1 at 10.00 at 00:01 on D + 1. It counts once, on D: 30.00.
  u7  session s7 whose start event was lost (no device, referrer, country), and an order o6:
      p2 x2 at 5.00 at 22:00 on D, sent at 00:30 on D + 1: late, so silver left it out of the
      session (converted false there), but it is an order of D.
  u6  not active on D: order o7 across the previous midnight, p2 x1 at 15.00 at 23:58 on D - 1
      and p1 x1 at 12.00 at 00:00:30 on D (27.00, an order of D - 1), in session s6 of D - 1.
  u4  not active on D: o8 on D - 1 for 40.00, and o10 across midnight at the start of D - 8:
      p3 x1 at 3.00 at 23:59 on 2026-10-25 and again at 00:00:30 on 2026-10-26 (an order of
      D - 8, just outside the 7 days before D).
Catalog: p1 and p3 are books, p2 is toys.

Orders of D: o1, o2, o4, o5, o6 = 79.00 (23 + 9 + 7 + 30 + 10), 9 units; counting lines by their
own day instead would give 81.00 (o5's second line leaves, o7's second line comes in).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from shopstream import catalog, lake, schema
from shopstream.spark import iceberg
from shopstream.spark.batch import audit, gold, transforms
from shopstream.spark.batch.inputs import Inputs, MissingTable

pytestmark = pytest.mark.spark

UTC = dt.UTC
DAY = dt.date(2026, 11, 2)
DAY_BEFORE, DAY_AFTER = DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=1)
D = Decimal
CATEGORIES = {"p1": "books", "p2": "toys", "p3": "books"}


def at(day: dt.date, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute, second), UTC)


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
        "category": CATEGORIES.get(product) if event_type == schema.PAGE_VIEW else None,
        "quantity": quantity,
        "unit_price": price,
        "event_date": DAY,
    }


def purchase(n, user, session, order, product, qty, price, discount, t, sent=None, in_catalog=True):
    """An order line at `t` (UTC), sent at `sent` (default: at once); its dates follow from `t`."""
    return {
        "event_id": f"pu{n}",
        "event_type": schema.PURCHASE,
        "event_time": t,
        "ingest_time": sent or t,
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
        "category": CATEGORIES[product] if in_catalog else None,
        "list_price": D(price) if in_catalog else None,
        "event_date": t.date(),
    }


def session(sid, user, device, referrer, start, end, page_views=0, converted=False):
    return {
        "session_id": sid,
        "user_id": user,
        "session_start": start,
        "session_end": end,
        "duration_seconds": int((end - start).total_seconds()),
        "device": device,
        "referrer": referrer,
        "country": "US" if device else None,
        "page_views": page_views,
        "products_viewed": 0,
        "cart_adds": 0,
        "orders": int(converted),
        "revenue": D("0"),
        "converted": converted,
        "session_date": start.date(),
    }


PAGE_VIEWS = [
    page_view(1, "u1", "s1", 1, "home"),
    page_view(2, "u1", "s1", 2, "product", "p1"),
    page_view(3, "u1", "s1", 3, "product", "p1"),
    page_view(4, "u1", "s1", 4, "product", "p2"),
    page_view(5, "u1", "s1", 5, "product", "p1", schema.ADD_TO_CART, 2, D("10.00")),
    page_view(6, "u3", "s3", 6, "product", "p2"),
    {**page_view(7, "u3", "s3", 7, "product", "p3"), "category": None},
]
PURCHASES = [
    purchase(1, "u1", "s1", "o1", "p1", 2, "10.00", "2.00", at(DAY, 11, 1)),
    purchase(2, "u1", "s1", "o1", "p2", 1, "5.00", "0.00", at(DAY, 11, 2)),
    purchase(3, "u2", "s2", "o2", "p1", 1, "10.00", "1.00", at(DAY, 11, 3)),
    purchase(4, "u2", "s2", "o4", "p3", 1, "7.00", "0.00", at(DAY, 11, 4)),
    purchase(5, "u5", "s5", "o5", "p2", 1, "20.00", "0.00", at(DAY, 23, 59)),
    purchase(6, "u5", "s5", "o5", "p1", 1, "10.00", "0.00", at(DAY_AFTER, 0, 1)),
    purchase(7, "u7", "s7", "o6", "p2", 2, "5.00", "0.00", at(DAY, 22), sent=at(DAY_AFTER, 0, 30)),
    purchase(8, "u6", "s6", "o7", "p2", 1, "15.00", "0.00", at(DAY_BEFORE, 23, 58)),
    purchase(9, "u6", "s6", "o7", "p1", 1, "12.00", "0.00", at(DAY, 0, 0, 30)),
    purchase(10, "u4", "s8", "o8", "p2", 1, "40.00", "0.00", at(DAY_BEFORE, 11)),
    purchase(11, "u4", "s11", "o10", "p3", 1, "3.00", "0.00", at(dt.date(2026, 10, 25), 23, 59)),
    purchase(12, "u4", "s11", "o10", "p3", 1, "3.00", "0.00", at(dt.date(2026, 10, 26), 0, 0, 30)),
    purchase(13, "u1", "s0", "o0", "p3", 1, "50.00", "0.00", at(dt.date(2026, 10, 20), 11)),
    purchase(14, "u3", "s9", "o9", "p3", 1, "100.00", "0.00", at(dt.date(2026, 9, 1), 11)),
]
SESSIONS = [
    session("s1", "u1", "desktop", "search", at(DAY, 10), at(DAY, 11, 30), page_views=4, converted=True),
    session("s2", "u2", "mobile", "direct", at(DAY, 10, 20), at(DAY, 11, 40), converted=True),
    session("s3", "u3", "mobile", "social", at(DAY, 10, 5), at(DAY, 11, 10), page_views=2),
    session("s5", "u5", "tablet", "email", at(DAY, 23, 50), at(DAY_AFTER, 0, 2), converted=True),
    session("s7", "u7", None, None, at(DAY, 21, 50), at(DAY, 22, 10)),  # its late order line left out
    session("s6", "u6", "desktop", "ads", at(DAY_BEFORE, 23, 40), at(DAY, 0, 1), converted=True),
    session("s10", "u3", "mobile", "search", at(dt.date(2026, 10, 30), 12), at(dt.date(2026, 10, 30), 12, 10)),
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
    for p, c in CATEGORIES.items()
]


def frame(spark, table, rows):
    return spark.createDataFrame(rows, schema.spark_schema(table.columns))


@pytest.fixture(scope="module")
def silver(spark):
    """Every silver row above; `sessions_of_day` only those started on D."""
    sessions = frame(spark, schema.USER_SESSIONS, SESSIONS)
    return {
        "page_views": frame(spark, schema.PAGE_VIEWS, PAGE_VIEWS),
        "purchases": frame(spark, schema.PURCHASES, PURCHASES),
        "sessions": sessions,
        "sessions_of_day": sessions.where(f"session_date = '{DAY}'"),
        "products": frame(spark, schema.PRODUCTS, PRODUCTS),
    }


def by(rows, key):
    return {r[key]: r.asDict() for r in rows}


def test_customer_analytics(silver):
    rows = by(
        transforms.customer_analytics(
            DAY, silver["page_views"], silver["purchases"], silver["sessions_of_day"]
        ).collect(),
        "user_id",
    )
    # u6's order line after midnight belongs to its order of D - 1: it makes nobody active on D.
    assert set(rows) == {"u1", "u2", "u3", "u5", "u7"}, "only customers active that day"
    u1, u2, u3, u5, u7 = (rows[u] for u in ("u1", "u2", "u3", "u5", "u7"))
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
    # A session without page views, and two first-ever orders on one day.
    assert (u2["sessions"], u2["page_views"], u2["orders"], u2["units"], u2["revenue"]) == (1, 0, 2, 2, D("16.00"))
    assert (u2["avg_order_value"], u2["lifetime_orders"], u2["lifetime_revenue"]) == (D("8.00"), 2, D("16.00"))
    assert u2["segment"] == "new" and u2["days_since_previous_purchase"] is None
    assert u2["engagement_score"] == D("40.000000")  # 20 x 2
    # Views but no purchase, last order 62 days ago; the session of 2026-10-30 is not D's.
    assert (u3["sessions"], u3["orders"], u3["revenue"], u3["avg_order_value"], u3["converted"]) == (
        1,
        0,
        D("0.00"),
        None,
        False,
    )
    assert u3["days_since_previous_purchase"] == 62 and u3["segment"] == "at_risk"
    assert u3["engagement_score"] == D("6.000000")
    # The order across midnight counts whole on D, the day of its first line.
    assert (u5["orders"], u5["units"], u5["revenue"], u5["lifetime_orders"], u5["segment"]) == (
        1,
        2,
        D("30.00"),
        1,
        "new",
    )
    assert (u5["first_seen"], u5["last_seen"]) == (
        dt.datetime(2026, 11, 2, 23, 50),
        dt.datetime(2026, 11, 3, 0, 2),
    )
    # A late order line counts on the day it happened.
    assert (u7["orders"], u7["revenue"], u7["segment"]) == (1, D("10.00"), "new")


def test_an_order_across_midnight_counts_once_and_its_customer_is_new_once(silver):
    """On D + 1 the second line of o5 belongs to D's order: no order, no new customer, no
    activity; on D - 1, o7 counts whole, its line of D included."""
    next_day = transforms.customer_analytics(
        DAY_AFTER,
        silver["page_views"].where(f"event_date = '{DAY_AFTER}'"),
        silver["purchases"],
        silver["sessions"].where(f"session_date = '{DAY_AFTER}'"),
    )
    assert next_day.count() == 0
    assert transforms.sales_by_category(DAY_AFTER, silver["purchases"]).count() == 0
    rows = by(transforms.sales_by_category(DAY_BEFORE, silver["purchases"]).collect(), "category")
    assert {k: (v["revenue"], v["orders"], v["units"], v["unique_buyers"]) for k, v in rows.items()} == {
        "toys": (D("55.00"), 2, 2, 2),  # o8's 40.00 and o7's first line, 15.00
        "books": (D("12.00"), 1, 1, 1),  # o7's line of 00:00:30 on D
    }


def test_segment_rules_in_order(spark):
    history = [
        purchase(i, "big", f"h{i}", f"h{i}", "p1", 1, "600.00", "0", at(dt.date(2026, 10, 1 + i), 12)) for i in range(2)
    ]
    history += [
        purchase(10 + i, "regular", f"r{i}", f"r{i}", "p1", 1, "10.00", "0", at(dt.date(2026, 10, 1 + i), 12))
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
    (row,) = transforms.sales_summary(DAY, silver["page_views"], silver["purchases"], silver["sessions"]).collect()
    assert (row.revenue, row.orders, row.units, row.avg_order_value) == (D("79.00"), 5, 9, D("15.80"))
    assert (row.unique_buyers, row.unique_visitors, row.sessions) == (4, 5, 5)
    # s1, s2, s5 and s7 (its only order line late: silver's flag says not converted) have an
    # order, s3 has none; s2 has two, so there are as many orders as sessions.
    assert (row.converted_sessions, row.session_conversion_rate, row.orders_per_session) == (
        4,
        D("0.800000"),
        D("1.000000"),
    )
    assert row.buyers_per_visitor == D("0.800000")  # u1, u2, u5, u7 of u1, u2, u3, u5, u7
    # s7 has no device or referrer
    assert (row.sessions_desktop, row.sessions_mobile, row.sessions_tablet) == (1, 2, 1)
    assert (row.sessions_direct, row.sessions_search, row.sessions_social, row.sessions_email, row.sessions_ads) == (
        1,
        1,
        1,
        1,
        0,
    )
    # D - 1: o8 and o7, 67.00. The 7 days before (10-26 … 11-01) have history on two: 11-01 with
    # orders, 10-30 with a session and no order (revenue 0); o10, whose second line falls on
    # 10-26, is an order of 10-25 and stays out.
    assert row.revenue_change_vs_previous_day == D("0.179104")  # (79 - 67) / 67 = 0.1791044...
    assert (row.trailing_7d_days, row.trailing_7d_avg_revenue) == (2, D("33.50"))  # 67.00 / 2
    assert row.revenue_vs_trailing_7d_avg == D("2.358209")  # 79 / 33.5 = 2.3582089...


def test_trailing_mean_without_history_is_null(silver):
    (row,) = transforms.sales_summary(
        dt.date(2026, 9, 1),
        silver["page_views"].limit(0),
        silver["purchases"],
        silver["sessions"],
    ).collect()
    assert (row.revenue, row.orders, row.trailing_7d_days) == (D("100.00"), 1, 0)
    assert (row.trailing_7d_avg_revenue, row.revenue_vs_trailing_7d_avg, row.revenue_change_vs_previous_day) == (
        None,
        None,
        None,
    )
    assert (row.sessions, row.converted_sessions, row.session_conversion_rate, row.orders_per_session) == (
        0,
        0,
        None,
        None,
    )


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
    purchases = frame(
        spark,
        schema.PURCHASES,
        [
            purchase(1, "u1", "s1", "o1", "p1", 1, "0.01", "0.00", at(DAY_BEFORE, 12)),
            purchase(2, "u1", "s1", "o2", "p1", 1, "1000000.00", "0.00", at(DAY, 12)),
        ],
    )
    (row,) = transforms.sales_summary(DAY, silver["page_views"], purchases, silver["sessions"]).collect()
    assert (row.revenue, row.trailing_7d_days, row.trailing_7d_avg_revenue) == (D("1000000.00"), 2, D("0.01"))
    assert (row.revenue_change_vs_previous_day, row.revenue_vs_trailing_7d_avg) == (None, None)


def test_sales_by_category(silver):
    rows = by(transforms.sales_by_category(DAY, silver["purchases"]).collect(), "category")
    assert {k: (v["revenue"], v["orders"], v["units"], v["unique_buyers"]) for k, v in rows.items()} == {
        "books": (D("44.00"), 4, 5, 3),  # o1 18, o2 9, o4 7, o5's line after midnight 10
        "toys": (D("35.00"), 3, 4, 3),  # o1 5, o5 20, o6 10
    }


def test_product_analytics(silver):
    rows = by(
        transforms.product_analytics(
            DAY, silver["page_views"], silver["purchases"], silver["products"], together_min_baskets=2
        ).collect(),
        "product_id",
    )
    p1, p2, p3 = rows["p1"], rows["p2"], rows["p3"]
    # p1: o1 x2 (18.00), o2 x1 (9.00), o5's line after midnight x1 (10.00); not o7's line of D.
    assert (p1["views"], p1["unique_viewers"], p1["cart_adds"], p1["purchases"], p1["units"], p1["revenue"]) == (
        2,
        1,
        1,
        3,
        4,
        D("37.00"),
    )
    assert (p1["view_to_cart_rate"], p1["cart_to_purchase_rate"], p1["view_to_purchase_rate"]) == (D("1.000000"),) * 3
    assert (p1["revenue_rank"], p1["category_revenue_rank"], p1["category"]) == (1, 1, "books")
    # p2: o1 x1 (5.00), o5 x1 (20.00), o6 x2 (10.00)
    assert (p2["views"], p2["unique_viewers"], p2["cart_adds"], p2["purchases"], p2["units"], p2["revenue"]) == (
        2,
        2,
        0,
        3,
        4,
        D("35.00"),
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
        3,
    )
    # Viewed in s3, bought in s2 (o4).
    assert (p3["views"], p3["purchases"], p3["revenue"], p3["view_to_purchase_rate"]) == (
        1,
        1,
        D("7.00"),
        D("0.000000"),
    )
    assert (p3["revenue_rank"], p3["category_revenue_rank"]) == (3, 2)
    # Orders of D: o1 {p1, p2}, o2 {p1}, o4 {p3}, o5 {p2, p1}, o6 {p2}. p1 and p2 share two.
    assert json.loads(p1["bought_together"]) == [
        {"product_id": "p2", "baskets": 2, "support": 0.4, "confidence": 0.666667}  # 2 of 5; 2 of p1's 3
    ]
    assert json.loads(p2["bought_together"]) == [
        {"product_id": "p1", "baskets": 2, "support": 0.4, "confidence": 0.666667}  # 2 of p2's 3
    ]
    assert p3["bought_together"] == "[]"
    # Viewing sessions s1 {p1, p2} and s3 {p2, p3}: no pair shares two.
    assert {p: r["viewed_together"] for p, r in rows.items()} == {"p1": "[]", "p2": "[]", "p3": "[]"}


def test_a_single_shared_basket_is_enough_at_a_minimum_of_one(silver):
    rows = by(
        transforms.product_analytics(
            DAY, silver["page_views"], silver["purchases"], silver["products"], together_min_baskets=1
        ).collect(),
        "product_id",
    )
    assert json.loads(rows["p1"]["viewed_together"]) == [
        {"product_id": "p2", "baskets": 1, "support": 0.5, "confidence": 1.0}
    ]
    assert json.loads(rows["p2"]["viewed_together"]) == [
        {"product_id": "p1", "baskets": 1, "support": 0.5, "confidence": 0.5},
        {"product_id": "p3", "baskets": 1, "support": 0.5, "confidence": 0.5},
    ]
    assert json.loads(rows["p3"]["bought_together"]) == []  # o4 holds p3 alone


def quarantined(spark, records):
    """Quarantine rows of (reason, event type, event time, ingest time), all from raw-events."""
    return frame(
        spark,
        schema.QUARANTINE_TABLE,
        [
            {
                "reason": reason,
                "detail": None,
                "topic": schema.TOPIC_RAW_EVENTS,
                "kafka_partition": 0,
                "kafka_offset": i,
                "kafka_timestamp": sent,
                "kafka_key": None,
                "raw_value": "{}",
                "event_id": f"q{i}",
                "event_type": event_type,
                "event_time": happened,
                "ingest_time": sent,
                "partition_time": happened or sent,
            }
            for i, (reason, event_type, happened, sent) in enumerate(records)
        ],
    )


def test_data_quality(spark, silver):
    duplicate = dict(PAGE_VIEWS[0])
    # a discount larger than the line, on a product the catalog does not know
    broken = purchase(20, "u9", "s9", "o99", "p1", 1, "10.00", "12.00", at(DAY, 12), in_catalog=False)
    page_views = frame(spark, schema.PAGE_VIEWS, [*PAGE_VIEWS, duplicate])
    purchases = frame(spark, schema.PURCHASES, [p for p in PURCHASES if p["event_date"] == DAY] + [broken])
    quarantine = quarantined(
        spark,
        [
            (schema.REASON_BAD_TYPE, schema.PAGE_VIEW, None, at(DAY, 9)),
            (schema.REASON_LATE, schema.PAGE_VIEW, at(DAY, 9), at(DAY, 10)),
            (schema.REASON_LATE, schema.ADD_TO_CART, at(DAY, 9), at(DAY, 10)),
            (schema.REASON_OUT_OF_RANGE, schema.PURCHASE, at(DAY, 9), at(DAY, 9)),
            (schema.REASON_LATE, schema.PURCHASE, at(DAY, 22), at(DAY_AFTER, 0, 30)),  # o6's line
            (schema.REASON_BAD_JSON, None, None, at(DAY, 9)),  # no event type: no table's
        ],
    )
    silver_of_day = {
        schema.SILVER_PAGE_VIEWS: page_views,
        schema.SILVER_PURCHASES: purchases,
        schema.SILVER_USER_SESSIONS: silver["sessions_of_day"],
    }
    report = transforms.data_quality(DAY, silver_of_day, quarantine)
    rows = by(report.collect(), "table_name")
    pv, pu, us = rows[schema.SILVER_PAGE_VIEWS], rows[schema.SILVER_PURCHASES], rows[schema.SILVER_USER_SESSIONS]
    assert (pv["row_count"], pv["duplicate_count"], pv["out_of_range_count"], pv["late_event_count"]) == (8, 1, 0, 2)
    assert json.loads(pv["quarantine_by_reason"]) == {"bad_type": 1, "late_event": 2}
    # Optional columns over the rows that should carry them: the category of the 5 product
    # pages (p3's is missing), the product of the 6 product pages and cart adds, the page of the
    # 7 page views, quantity and price of the one cart add.
    assert json.loads(pv["null_rates"]) == {
        **{c: 0.0 for c in schema.PAGE_VIEWS.names},
        "category": 0.2,
    }
    # The newest view, 10:07, lies 13 h 53 min before the day's end.
    assert pv["freshness_lag_seconds"] == 24 * 3600 - (10 * 3600 + 7 * 60)
    # 8 lines of D: o1 x2, o2, o4, o5's first, o6 (late), o7's second, and the broken one, whose
    # product is unknown to the catalog (no category, no list price).
    assert (pu["row_count"], pu["duplicate_count"], pu["out_of_range_count"], pu["late_event_count"]) == (8, 0, 1, 1)
    assert json.loads(pu["null_rates"]) == {
        **{c: 0.0 for c in schema.PURCHASES.names},
        "category": 0.125,
        "list_price": 0.125,
    }
    assert json.loads(pu["quarantine_by_reason"]) == {"out_of_range": 1, "late_event": 1}
    assert pu["freshness_lag_seconds"] == 60  # o5's first line at 23:59
    # 5 sessions of D; s7's start event was lost.
    assert (us["row_count"], us["late_event_count"], us["quarantine_by_reason"]) == (5, 0, "{}")
    assert json.loads(us["null_rates"]) == {
        **{c: 0.0 for c in schema.USER_SESSIONS.names},
        "device": 0.2,
        "referrer": 0.2,
        "country": 0.2,
    }
    assert us["freshness_lag_seconds"] == 600  # s5 started at 23:50


def test_a_null_rate_with_no_row_to_have_a_value_is_null(spark, silver):
    """A day without cart adds: their quantity and price have no rate, rather than a rate of 0."""
    views = frame(spark, schema.PAGE_VIEWS, [r for r in PAGE_VIEWS if r["event_type"] == schema.PAGE_VIEW])
    no_purchases = frame(spark, schema.PURCHASES, [])
    report = transforms.data_quality(
        DAY,
        {
            schema.SILVER_PAGE_VIEWS: views,
            schema.SILVER_PURCHASES: no_purchases,
            schema.SILVER_USER_SESSIONS: silver["sessions_of_day"],
        },
        quarantined(spark, []),
    )
    rows = by(report.collect(), "table_name")
    null_rates = json.loads(rows[schema.SILVER_PAGE_VIEWS]["null_rates"])
    assert (null_rates["quantity"], null_rates["unit_price"], null_rates["product_id"]) == (None, None, 0.0)
    purchases = rows[schema.SILVER_PURCHASES]
    assert (purchases["row_count"], purchases["freshness_lag_seconds"]) == (0, None)
    assert set(json.loads(purchases["null_rates"]).values()) == {None}


# -- the checks, on the day above and on copies with one row damaged ------------------------------


# The days above have purchases nobody viewed (u2's session has no page views at all), which
# product_views_cover_purchases refuses; with these views (on D, and on D - 1 for o7 and o8) every
# product bought was viewed in each session that bought it, and every check passes.
VIEWS_OF_WHAT_WAS_BOUGHT = [
    page_view(8, "u2", "s2", 8, "product", "p1"),
    page_view(9, "u5", "s5", 9, "product", "p1"),
    page_view(10, "u5", "s5", 10, "product", "p2"),
    page_view(11, "u7", "s7", 11, "product", "p2"),
    *(
        {**page_view(n, user, session, 0, "product", p), "event_time": t, "ingest_time": t, "event_date": t.date()}
        for n, user, session, p, t in (
            (12, "u6", "s6", "p2", at(DAY_BEFORE, 23, 45)),
            (13, "u6", "s6", "p1", at(DAY_BEFORE, 23, 46)),
            (14, "u4", "s8", "p2", at(DAY_BEFORE, 10, 50)),
        )
    ),
]


@pytest.fixture(scope="module")
def evidence(spark, silver):
    """The hand-worked day's gold, as the job computes it, with the silver it came from."""
    more_views = frame(spark, schema.PAGE_VIEWS, VIEWS_OF_WHAT_WAS_BOUGHT).where(f"event_date = '{DAY}'")
    page_views = silver["page_views"].union(more_views)
    lines = silver["purchases"]
    around = lines.where(f"event_date between '{DAY_BEFORE}' and '{DAY_AFTER}'")
    sessions = silver["sessions_of_day"]
    gold_rows = {
        schema.GOLD_CUSTOMER_ANALYTICS: transforms.customer_analytics(DAY, page_views, lines, sessions),
        schema.GOLD_SALES_SUMMARY: transforms.sales_summary(DAY, page_views, lines, silver["sessions"]),
        schema.GOLD_SALES_BY_CATEGORY: transforms.sales_by_category(DAY, around),
        schema.GOLD_PRODUCT_ANALYTICS: transforms.product_analytics(DAY, page_views, around, silver["products"], 2),
    }
    return audit.Evidence(DAY, gold_rows, page_views, sessions, around, active=True)


def damaged(e: audit.Evidence, table: str, where: str, **changes) -> audit.Evidence:
    """`e` with the gold rows of `table` matching `where` changed (column -> SQL expression)."""
    rows = e.gold[table]
    rows = rows.withColumns({c: F.when(F.expr(where), F.expr(v)).otherwise(F.col(c)) for c, v in changes.items()})
    return audit.Evidence(e.day, {**e.gold, table: rows}, e.page_views, e.sessions, e.order_lines, e.active)


def with_rows(e: audit.Evidence, table: str, rows) -> audit.Evidence:
    return audit.Evidence(e.day, {**e.gold, table: rows}, e.page_views, e.sessions, e.order_lines, e.active)


def test_every_check_passes_on_the_days_gold_with_its_figures(evidence):
    assert set(audit.RULES) == {check.name for check in catalog.GOLD_CHECKS}
    verdicts = {name: rule(evidence) for name, rule in audit.RULES.items()}
    assert {name: v.passed for name, v in verdicts.items()} == dict.fromkeys(audit.RULES, True)
    completeness = verdicts["customer_completeness"].counts
    assert (completeness["gold_rows"], completeness["active_customers_in_silver"]) == (5, 5)
    assert verdicts["customer_revenue_consistency"].counts["silver_revenue"] == "79.00"
    orders = verdicts["sales_order_consistency"].counts
    # o1, o2, o4, o5, o6; s1, s2, s5 and s7 (its late line), not s3; s7 has no device or referrer.
    assert (orders["silver_orders"], orders["silver_converted_sessions"]) == (5, 4)
    assert (orders["sessions_without_device"], orders["sessions_without_referrer"]) == (1, 1)
    assert verdicts["customer_segment_logic"].counts["segments"] == {"active": 1, "new": 3, "at_risk": 1}
    assert verdicts["product_rates_in_range"].counts["products"] == 3


@pytest.mark.parametrize(
    ("check", "table", "where", "changes", "counts"),
    [
        (
            "customer_revenue_consistency",
            schema.GOLD_CUSTOMER_ANALYTICS,
            "user_id = 'u1'",
            {"revenue": "revenue + 1"},
            {"difference_cents": 100, "gold_revenue": "80.00"},
        ),
        (
            "customer_segment_logic",
            schema.GOLD_CUSTOMER_ANALYTICS,
            "user_id = 'u3'",
            {"segment": "'loyal'"},
            {"wrong_segment": 1, "unknown_segment_name": 0, "examples": ["u3"]},
        ),
        (
            "customer_segment_logic",
            schema.GOLD_CUSTOMER_ANALYTICS,
            "user_id in ('u1', 'u2')",
            {"engagement_score": "101", "segment": "'vip'"},
            {"wrong_segment": 2, "unknown_segment_name": 2, "engagement_score_out_of_range": 2},
        ),
        (
            "customer_completeness",
            schema.GOLD_CUSTOMER_ANALYTICS,
            "user_id = 'u7'",
            {"user_id": "'u9'"},
            {"missing_customers": 1, "unexpected_customers": 1, "duplicate_rows": 0, "null_keys_or_segments": 0},
        ),
        (
            "customer_completeness",
            schema.GOLD_CUSTOMER_ANALYTICS,
            "user_id = 'u5'",
            {"segment": "null"},
            {"missing_customers": 0, "null_keys_or_segments": 1},
        ),
        (
            "sales_revenue_arithmetic",
            schema.GOLD_SALES_SUMMARY,
            "true",
            {"revenue": "revenue + 0.50"},
            # 79.50 / 5 orders = 15.90, against the 15.80 written
            {"difference_from_silver_cents": 50, "difference_from_categories_cents": 50, "wrong_avg_order_value": 1},
        ),
        (
            "sales_revenue_arithmetic",
            schema.GOLD_SALES_BY_CATEGORY,
            "category = 'toys'",
            {"revenue": "revenue - 2"},
            {"difference_from_silver_cents": 0, "difference_from_categories_cents": 200},
        ),
        (
            "sales_order_consistency",
            schema.GOLD_SALES_SUMMARY,
            "true",
            {"orders": "orders + 1", "sessions_mobile": "sessions_mobile + 2"},
            {
                "difference_from_silver_orders": 1,
                "sessions_by_device_difference": 2,
                "sessions_by_referrer_difference": 0,
                "buyers_orders_units_out_of_order": 0,
            },
        ),
        (
            "sales_order_consistency",
            schema.GOLD_SALES_SUMMARY,
            "true",
            {"unique_buyers": "orders + 1", "converted_sessions": "0"},
            {"buyers_orders_units_out_of_order": 1, "difference_from_silver_converted_sessions": 4},
        ),
        (
            "product_rates_in_range",
            schema.GOLD_PRODUCT_ANALYTICS,
            "product_id = 'p1'",
            {"view_to_cart_rate": "1.5"},
            {"products_with_rate_out_of_range": 1, "examples": ["p1"]},
        ),
        (
            "product_views_cover_purchases",
            schema.GOLD_PRODUCT_ANALYTICS,
            "product_id in ('p2', 'p3')",
            {"views": "0"},
            {"products_with_views_below_sessions": 2, "examples": ["p2", "p3"]},
        ),
    ],
)
def test_a_damaged_row_fails_its_check_with_the_exact_count(evidence, check, table, where, changes, counts):
    verdict = audit.RULES[check](damaged(evidence, table, where, **changes))
    assert not verdict.passed
    assert {k: verdict.counts[k] for k in counts} == counts, verdict.counts


def test_summary_rows_must_be_one_on_a_day_with_activity_and_none_without(spark, evidence):
    summary = evidence.gold[schema.GOLD_SALES_SUMMARY]
    twice = audit.sales_revenue_arithmetic(with_rows(evidence, schema.GOLD_SALES_SUMMARY, summary.union(summary)))
    assert (twice.passed, twice.counts["summary_rows_off_by"]) == (False, 1)
    missing = audit.sales_revenue_arithmetic(with_rows(evidence, schema.GOLD_SALES_SUMMARY, summary.limit(0)))
    assert (missing.passed, missing.counts["summary_rows_off_by"]) == (False, 1)
    empty = {name: rows.limit(0) for name, rows in evidence.gold.items()}
    quiet = audit.Evidence(
        DAY, empty, evidence.page_views.limit(0), evidence.sessions.limit(0), evidence.order_lines.limit(0), False
    )
    assert all(rule(quiet).passed for rule in audit.RULES.values())


# -- the gold job against the lake ------------------------------------------------------------


def write_silver(spark, page_views=(*PAGE_VIEWS, *VIEWS_OF_WHAT_WAS_BOUGHT), purchases=PURCHASES, sessions=SESSIONS):
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
        (schema.PRODUCTS, PRODUCTS),
    ):
        frame(spark, table, list(rows)).writeTo(lake.table_ref(table.name)).append()


def gold_rows(spark, name):
    return spark.table(lake.table_ref(name)).orderBy(*schema.TABLES[name].identifier).collect()


def refs(spark, name):
    return sorted((r.name, r.snapshot_id) for r in spark.table(f"{lake.table_ref(name)}.refs").collect())


def test_the_gold_job_is_idempotent_and_touches_only_its_date(empty_lake):
    spark = empty_lake
    write_silver(spark)
    first = gold.run(spark, DAY)
    other = gold.run(spark, DAY_BEFORE)
    assert first["rows_written"] == {
        schema.GOLD_CUSTOMER_ANALYTICS: 5,
        schema.GOLD_SALES_SUMMARY: 1,
        schema.GOLD_SALES_BY_CATEGORY: 2,
        schema.GOLD_PRODUCT_ANALYTICS: 3,
        schema.SILVER_DATA_QUALITY_REPORT: 3,
    }
    assert first["totals"][schema.GOLD_SALES_SUMMARY] == {"revenue": "79.00", "orders": 5}
    assert first["totals"][schema.GOLD_CUSTOMER_ANALYTICS] == {"customers": 5, "revenue": "79.00"}
    assert other["totals"][schema.GOLD_SALES_SUMMARY] == {"revenue": "67.00", "orders": 2}  # o8 and o7
    assert other["published"]
    # Every check ran on the audit branch and passed, so the day was published; the branch is gone.
    assert first["published"] and list(first["checks"]) == [check.name for check in catalog.GOLD_CHECKS]
    assert all(check["passed"] for check in first["checks"].values())
    assert first["checks"]["sales_order_consistency"]["counts"]["silver_converted_sessions"] == 4
    assert first["checks"]["customer_revenue_consistency"]["counts"]["silver_revenue"] == "79.00"
    assert first["audit_branch"].startswith("audit_20261102_at_")
    assert iceberg.AUDIT_BRANCH.match(first["audit_branch"])
    assert [name for name, _ in refs(spark, schema.GOLD_CUSTOMER_ANALYTICS)] == ["main"]
    # The silver read is the snapshot each table was at; silver_products and quarantine too.
    assert first["silver_snapshots"] == iceberg.snapshot_ids(spark, gold.JOB.reads)
    assert first["silver_snapshots"][schema.QUARANTINE] is None, "never written"
    before = {name: gold_rows(spark, name) for name in gold.JOB.writes}
    gold.run(spark, DAY)
    after = {name: gold_rows(spark, name) for name in before}
    assert after == before, "a rerun replaces the date's partition with identical rows, the quality report's too"
    assert [r.date for r in after[schema.GOLD_SALES_SUMMARY]] == [DAY_BEFORE, DAY], "the other date is untouched"
    # Gold revenue of the day is the revenue of its orders, three ways, read from the lake: their
    # lines of D + 1 in, the line of D that belongs to an order of D - 1 out.
    lines_of_day = (
        spark.table(lake.table_ref(schema.SILVER_PURCHASES))
        .where(f"event_date = '{DAY}'")
        .agg({"revenue": "sum"})
        .first()[0]
    )
    assert lines_of_day == D("81.00")
    for name in (schema.GOLD_CUSTOMER_ANALYTICS, schema.GOLD_SALES_BY_CATEGORY, schema.GOLD_PRODUCT_ANALYTICS):
        assert sum(r.revenue for r in after[name] if r.date == DAY) == D("79.00"), name
    (summary,) = (r for r in after[schema.GOLD_SALES_SUMMARY] if r.date == DAY)
    assert (summary.trailing_7d_days, summary.trailing_7d_avg_revenue) == (2, D("33.50"))


def test_a_failing_check_publishes_nothing_and_names_its_counts(empty_lake, monkeypatch):
    """The second run computes one customer's revenue a cent too high: its checks see that on the
    branch, main keeps the first run's rows of every table, and the branch is dropped."""
    spark = empty_lake
    write_silver(spark)
    gold.run(spark, DAY)
    published = {name: (gold_rows(spark, name), refs(spark, name)) for name in gold.JOB.writes}
    customer_analytics = transforms.customer_analytics

    def a_cent_too_much(*args):
        rows = customer_analytics(*args)
        more = (F.col("revenue") + F.lit(D("0.01"))).cast(transforms.MONEY_TYPE)
        return rows.withColumn("revenue", F.when(F.col("user_id") == "u2", more).otherwise(F.col("revenue")))

    monkeypatch.setattr(transforms, "customer_analytics", a_cent_too_much)
    result = gold.run(spark, DAY)
    assert not result["published"]
    failed = {name: check["counts"] for name, check in result["checks"].items() if not check["passed"]}
    assert failed == {
        "customer_revenue_consistency": {"difference_cents": 1, "gold_revenue": "79.01", "silver_revenue": "79.00"}
    }
    assert {name: (gold_rows(spark, name), refs(spark, name)) for name in gold.JOB.writes} == published
    assert gold.failed_checks_line(result) == (
        "gold 2026-11-02: audit failed, nothing published: customer_revenue_consistency "
        "(customer revenue differs from silver: difference_cents 1)"
    )


def test_empty_date_writes_nothing(empty_lake):
    write_silver(empty_lake)
    result = gold.run(empty_lake, dt.date(2026, 12, 25))
    assert result["rows_written"] == dict.fromkeys(gold.JOB.writes, 0) and result["totals"] == {}
    assert result["published"] and all(check["passed"] for check in result["checks"].values())
    assert not iceberg.table_exists(empty_lake, schema.GOLD_SALES_SUMMARY)


def test_missing_silver_table_fails_fast_with_its_name(empty_lake):
    with pytest.raises(MissingTable, match=r"lake\.shopstream\.silver_page_views does not exist"):
        gold.run(empty_lake, DAY)
    assert not iceberg.table_exists(empty_lake, schema.GOLD_CUSTOMER_ANALYTICS)


def test_cli_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        gold.parser().parse_args(["--date", "2026-02-30"])
    assert exc.value.code == 2 and "is not a date" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        gold.parser().parse_args([])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        gold.parser().parse_args(["--date", str(DAY), "--together-min-baskets", "0"])
    assert exc.value.code == 2 and "not a whole number of at least 1" in capsys.readouterr().err


def test_the_minimum_of_shared_baskets_is_a_setting(monkeypatch):
    assert gold.parser().parse_args(["--date", str(DAY)]).together_min_baskets == 2
    monkeypatch.setenv("SHOPSTREAM_TOGETHER_MIN_BASKETS", "5")
    assert gold.parser().parse_args(["--date", str(DAY)]).together_min_baskets == 5
    monkeypatch.setenv("SHOPSTREAM_TOGETHER_MIN_BASKETS", "none")
    with pytest.raises(SystemExit, match="SHOPSTREAM_TOGETHER_MIN_BASKETS"):
        gold.parser()


def test_inputs_read_the_right_days(empty_lake):
    write_silver(empty_lake)
    inputs = Inputs(empty_lake, DAY)
    assert inputs.purchases().count() == 7, "the lines of D"
    assert inputs.order_lines().count() == 10, "and of D - 1 (o7, o8) and D + 1 (o5's second line)"
    assert inputs.order_lines(days_before=7).count() == 12, "from D - 8 (o10) on"
    assert inputs.order_lines(days_before=None).count() == 14
    assert inputs.page_views().count() == 11 and inputs.sessions().count() == 5
    assert inputs.sessions(days_before=7).count() == 7
    inputs.release()


def test_inputs_read_silver_at_the_snapshot_they_are_given(empty_lake):
    write_silver(empty_lake)
    pinned = iceberg.snapshot_ids(empty_lake, [schema.SILVER_PAGE_VIEWS])
    frame(empty_lake, schema.PAGE_VIEWS, [page_view(99, "u8", "s99", 30, "home")]).writeTo(
        lake.table_ref(schema.SILVER_PAGE_VIEWS)
    ).append()
    assert Inputs(empty_lake, DAY, snapshots=pinned).page_views().count() == 11, "not the row appended later"
    assert Inputs(empty_lake, DAY).page_views().count() == 12


def test_cli_run_writes_its_result_file(empty_lake, lake_settings, tmp_path):
    """The entry point as a launcher runs it: its own process, catalog settings as arguments."""
    write_silver(empty_lake)
    result_file = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shopstream",
            "gold",
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
    assert result["job"] == "gold" and result["date"] == "2026-11-02" and result["published"]
    assert result["rows_written"][schema.GOLD_SALES_BY_CATEGORY] == 2
    assert result["totals"][schema.GOLD_SALES_SUMMARY] == {"revenue": "79.00", "orders": 5}
    assert result["duration_seconds"] > 0 and len(result["checks"]) == 7
    assert "gold 2026-11-02: wrote gold_daily_customer_analytics 5" in done.stdout
    assert "7 checks passed; published" in done.stdout
