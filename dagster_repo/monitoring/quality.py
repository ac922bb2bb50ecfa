"""Data-quality rules for the gold tables, as plain functions over the rows of one date.

Each rule reads the gold rows it checks (and the silver rows it compares with) through pyiceberg
and returns a `Verdict`: passed or not, with the offending counts as metadata. `checks.py` turns
them into Dagster asset checks; keeping them here keeps them testable and free of Dagster.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from shopstream import lake, rules, schema
from shopstream.lake import LakeSettings

CENT = Decimal("0.01")


@dataclass
class Verdict:
    passed: bool
    summary: str
    counts: dict = field(default_factory=dict)


class Lake:
    """Rows of one date from the lake, read through pyiceberg (no Spark in the Dagster process)."""

    def __init__(self, settings: LakeSettings):
        self.catalog = lake.iceberg_catalog(settings)

    def rows(
        self, table: str, day: dt.date, day_column: str, columns: tuple[str, ...] = (), through: dt.date | None = None
    ) -> list[dict]:
        """The rows whose `day_column` is `day`, or from `day` through `through`."""
        loaded = self.catalog.load_table(schema.TABLES[table].qualified)
        days = f"{day_column} >= '{day.isoformat()}' and {day_column} <= '{(through or day).isoformat()}'"
        scan = loaded.scan(row_filter=days, selected_fields=columns or ("*",))
        return scan.to_arrow().to_pylist()

    def gold(self, table: str, day: dt.date, columns: tuple[str, ...] = ()) -> list[dict]:
        return self.rows(table, day, "date", columns)

    def order_lines(self, day: dt.date, columns: tuple[str, ...] = ()) -> list[dict]:
        """The silver lines of the orders placed on `day` (the day of each order's first line),
        read from the days around it where their lines may lie."""
        span = dt.timedelta(days=rules.ORDER_SPAN_DAYS)
        lines = self.rows(
            schema.SILVER_PURCHASES,
            day - span,
            "event_date",
            tuple(dict.fromkeys(("order_id", "event_date", *columns))),
            through=day + span,
        )
        placed = rules.order_dates((r["order_id"], r["event_date"]) for r in lines)
        return [r for r in lines if placed[r["order_id"]] == day]


def judge(passed_text: str, failed_text: str, failures: dict[str, int], info: dict) -> Verdict:
    """Passed when every failure count is zero; the metadata carries both kinds of counts."""
    passed = not any(failures.values())
    summary = passed_text if passed else failed_text + ": " + ", ".join(f"{k} {v}" for k, v in failures.items() if v)
    return Verdict(passed, summary, {**info, **failures})


def _sum(rows, column) -> Decimal:
    return sum((r[column] for r in rows if r[column] is not None), Decimal(0))


# -- gold_daily_customer_analytics ---------------------------------------------------------------


def customer_completeness(data: Lake, day: dt.date) -> Verdict:
    """Every customer active in silver on the date (a page view, a cart add or a session that day,
    or an order placed that day) has exactly one row, and no row is invented."""
    gold = data.gold(schema.GOLD_CUSTOMER_ANALYTICS, day, ("user_id", "segment"))
    active = {r["user_id"] for r in data.rows(schema.SILVER_PAGE_VIEWS, day, "event_date", ("user_id",))}
    active |= {r["user_id"] for r in data.order_lines(day, ("user_id",))}
    active |= {r["user_id"] for r in data.rows(schema.SILVER_USER_SESSIONS, day, "session_date", ("user_id",))}
    per_user = Counter(r["user_id"] for r in gold)
    failures = {
        "missing_customers": len(active - per_user.keys()),
        "unexpected_customers": len(per_user.keys() - active),
        "duplicate_rows": sum(n - 1 for n in per_user.values() if n > 1),
        "null_keys_or_segments": sum(1 for r in gold if r["user_id"] is None or r["segment"] is None),
    }
    return judge(
        "every active customer has one row",
        "customer analytics incomplete",
        failures,
        {"gold_rows": len(gold), "active_customers_in_silver": len(active)},
    )


def customer_revenue_consistency(data: Lake, day: dt.date) -> Verdict:
    """Customer revenue adds up to the revenue of the date's orders in silver."""
    gold = _sum(data.gold(schema.GOLD_CUSTOMER_ANALYTICS, day, ("revenue",)), "revenue")
    silver = _sum(data.order_lines(day, ("revenue",)), "revenue")
    return judge(
        "customer revenue equals silver revenue",
        "customer revenue differs from silver",
        {"difference_cents": int(abs(gold - silver) / CENT)},
        {"gold_revenue": str(gold), "silver_revenue": str(silver)},
    )


def expected_segment(row: dict) -> str:
    """The segment rules of docs/metrics.md, in order; the first that matches wins."""
    orders, lifetime_orders = row["orders"], row["lifetime_orders"]
    if orders > 0 and lifetime_orders == orders:
        return "new"
    if row["lifetime_revenue"] >= rules.HIGH_VALUE_LIFETIME_REVENUE:
        return "high_value"
    if lifetime_orders >= rules.LOYAL_LIFETIME_ORDERS:
        return "loyal"
    if orders == 0 and (row["days_since_previous_purchase"] or 0) > rules.AT_RISK_DAYS:
        return "at_risk"
    if orders > 0 or lifetime_orders > 0:
        return "active"
    return "browser"


def customer_segment_logic(data: Lake, day: dt.date) -> Verdict:
    """Each segment follows from the row's own figures; the score stays within 0..100."""
    gold = data.gold(
        schema.GOLD_CUSTOMER_ANALYTICS,
        day,
        (
            "user_id",
            "orders",
            "lifetime_orders",
            "lifetime_revenue",
            "days_since_previous_purchase",
            "engagement_score",
            "segment",
        ),
    )
    wrong = [r for r in gold if r["segment"] != expected_segment(r)]
    failures = {
        "wrong_segment": len(wrong),
        "unknown_segment_name": sum(1 for r in gold if r["segment"] not in schema.SEGMENTS),
        "engagement_score_out_of_range": sum(1 for r in gold if not 0 <= r["engagement_score"] <= rules.SCORE_CAP),
    }
    return judge(
        "every segment follows the rules",
        "segments do not follow the rules",
        failures,
        {
            "rows": len(gold),
            "segments": dict(Counter(r["segment"] for r in gold)),
            "examples": [f"{r['user_id']}: {r['segment']} (expected {expected_segment(r)})" for r in wrong[:5]],
        },
    )


# -- gold_daily_sales_summary ---------------------------------------------------------------------


def sales_revenue_arithmetic(data: Lake, day: dt.date) -> Verdict:
    """Revenue equals that of the date's orders in silver and the per-category breakdown's sum;
    average order value equals revenue / orders."""
    summary = data.gold(schema.GOLD_SALES_SUMMARY, day)
    categories = data.gold(schema.GOLD_SALES_BY_CATEGORY, day, ("revenue",))
    silver = _sum(data.order_lines(day, ("revenue",)), "revenue")
    if len(summary) != 1:
        return Verdict(
            False, f"expected one summary row for {day}, found {len(summary)}", {"summary_rows": len(summary)}
        )
    row = summary[0]
    aov = (row["revenue"] / row["orders"]).quantize(CENT) if row["orders"] else None
    failures = {
        "difference_from_silver_cents": int(abs(row["revenue"] - silver) / CENT),
        "difference_from_categories_cents": int(abs(row["revenue"] - _sum(categories, "revenue")) / CENT),
        "wrong_avg_order_value": int(
            aov is not None and (row["avg_order_value"] is None or abs(row["avg_order_value"] - aov) > CENT)
        ),
    }
    return judge(
        "revenue arithmetic holds",
        "revenue arithmetic broken",
        failures,
        {"revenue": str(row["revenue"]), "silver_revenue": str(silver)},
    )


def sales_order_consistency(data: Lake, day: dt.date) -> Verdict:
    """Orders equal silver's distinct orders of the date; converted sessions equal the date's
    silver sessions with an order line; buyers ≤ orders ≤ units; device and referrer breakdowns
    add up to the sessions, less those silver has no device or referrer for (a session whose
    start event was quarantined)."""
    summary = data.gold(schema.GOLD_SALES_SUMMARY, day)
    if len(summary) != 1:
        return Verdict(
            False, f"expected one summary row for {day}, found {len(summary)}", {"summary_rows": len(summary)}
        )
    row = summary[0]
    orders = {r["order_id"] for r in data.order_lines(day)}
    sessions = data.rows(schema.SILVER_USER_SESSIONS, day, "session_date", ("session_id", "device", "referrer"))
    no_device = sum(1 for r in sessions if r["device"] not in schema.DEVICES)
    no_referrer = sum(1 for r in sessions if r["referrer"] not in schema.REFERRERS)
    # A session lasts minutes: its order lines lie within a day of its start.
    a_day = dt.timedelta(days=1)
    ordering = data.rows(schema.SILVER_PURCHASES, day - a_day, "event_date", ("session_id",), through=day + a_day)
    converted = {r["session_id"] for r in sessions} & {r["session_id"] for r in ordering}
    failures = {
        "difference_from_silver_orders": abs(row["orders"] - len(orders)),
        "difference_from_silver_converted_sessions": abs(row["converted_sessions"] - len(converted)),
        "buyers_orders_units_out_of_order": int(not row["unique_buyers"] <= row["orders"] <= row["units"]),
        "sessions_by_device_difference": abs(
            row["sessions"] - no_device - sum(row[f"sessions_{d}"] for d in schema.DEVICES)
        ),
        "sessions_by_referrer_difference": abs(
            row["sessions"] - no_referrer - sum(row[f"sessions_{r}"] for r in schema.REFERRERS)
        ),
    }
    return judge(
        "orders are consistent",
        "orders inconsistent",
        failures,
        {
            "orders": row["orders"],
            "silver_orders": len(orders),
            "converted_sessions": row["converted_sessions"],
            "silver_converted_sessions": len(converted),
            "sessions_without_device": no_device,
            "sessions_without_referrer": no_referrer,
        },
    )


# -- gold_product_analytics -----------------------------------------------------------------------

RATES = ("view_to_cart_rate", "cart_to_purchase_rate", "view_to_purchase_rate")


def product_rates_in_range(data: Lake, day: dt.date) -> Verdict:
    """Every conversion rate lies in [0, 1] (or is null for a zero denominator)."""
    rows = data.gold(schema.GOLD_PRODUCT_ANALYTICS, day, ("product_id", *RATES))
    bad = [r for r in rows if any(r[c] is not None and not 0 <= r[c] <= 1 for c in RATES)]
    return judge(
        "every rate is within [0, 1]",
        "conversion rates out of [0, 1]",
        {"products_with_rate_out_of_range": len(bad)},
        {"products": len(rows), "examples": [r["product_id"] for r in bad[:5]]},
    )


def product_views_cover_purchases(data: Lake, day: dt.date) -> Verdict:
    """A product is viewed in at least as many sessions as it is bought in, and its views are at
    least its viewing sessions."""
    rows = data.gold(
        schema.GOLD_PRODUCT_ANALYTICS, day, ("product_id", "views", "viewing_sessions", "purchasing_sessions")
    )
    bad = [r for r in rows if r["views"] < r["purchasing_sessions"] or r["views"] < r["viewing_sessions"]]
    return judge(
        "views cover purchasing sessions",
        "views below purchasing sessions",
        {"products_with_views_below_sessions": len(bad)},
        {"products": len(rows), "examples": [r["product_id"] for r in bad[:5]]},
    )
