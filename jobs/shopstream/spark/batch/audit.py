"""The gold job's blocking checks, computed by Spark where the data lives: each rule reads a few
numbers aggregated from the gold rows of the audit branch and the silver rows they came from, and
returns a `Verdict` with the offending counts (zero for every failure count when it passes).

At a small day's volume every Spark query costs far more than its data, so the rules share their
aggregates (`shared`): each gold table's figures come from one query, the day's orders' from one,
computed once per `Evidence` whichever rules read them.

The rules are named in `catalog.GOLD_CHECKS` (Dagster knows them from there without pyspark);
`RULES` maps each name to its function here.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from shopstream import catalog, schema
from shopstream.rules import SCORE_CAP
from shopstream.spark.batch import transforms

CENT = Decimal("0.01")
EXAMPLES = 5  # offending keys listed in a verdict


@dataclass(frozen=True)
class Evidence:
    """What the checks of one day read: the gold rows of the day as written to the audit branch, and
    the silver rows they were computed from."""

    day: dt.date
    gold: Mapping[str, DataFrame]  # gold table -> its rows of the day
    page_views: DataFrame  # the page views and cart adds of the day
    sessions: DataFrame  # the sessions started on the day
    order_lines: DataFrame  # the order lines of the day and ORDER_SPAN_DAYS either side
    active: bool  # silver has a page view, a session or an order line on the day: gold has a summary row
    figures: dict[str, dict] = field(default_factory=dict, compare=False, repr=False)  # see `shared`

    def orders(self) -> DataFrame:
        """The lines of the orders placed on the day (an order's day is its first line's)."""
        return transforms.orders_of(self.day, self.order_lines)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    summary: str
    counts: dict = field(default_factory=dict)  # failure counts (all 0 when passed) and figures for context

    def as_dict(self) -> dict:
        return asdict(self)


def judge(passed_text: str, failed_text: str, failures: dict[str, int], info: dict) -> Verdict:
    """Passed when every failure count is zero; the counts carry both kinds of numbers."""
    passed = not any(failures.values())
    summary = passed_text if passed else failed_text + ": " + ", ".join(f"{k} {v}" for k, v in failures.items() if v)
    return Verdict(passed, summary, {**info, **failures})


def shared(aggregate: Callable[[Evidence], dict]) -> Callable[[Evidence], dict]:
    """`aggregate`, computed on first use and kept in the Evidence for every later reader."""

    @functools.wraps(aggregate)
    def once(e: Evidence) -> dict:
        if aggregate.__name__ not in e.figures:
            e.figures[aggregate.__name__] = aggregate(e)
        return e.figures[aggregate.__name__]

    return once


def _one(df: DataFrame, *columns: Column) -> Row:
    """One aggregate row of `df`."""
    row = df.agg(*columns).first()
    assert row is not None  # a global aggregate has exactly one row
    return row


def _cents(a: Decimal, b: Decimal) -> int:
    return int(abs(a - b) / CENT)


def _money_sum(column: str) -> Column:
    return F.coalesce(F.sum(column), F.lit(Decimal(0))).alias(column)


def _total(column: str) -> Column:
    return F.coalesce(F.sum(column), F.lit(0)).alias(column)


def _not_one_of(column: str, values: tuple[str, ...]) -> Column:
    return ~F.coalesce(F.col(column).isin(*values), F.lit(False))


def _examples(df: DataFrame, key: str, where: Column, found: int) -> list:
    """Up to EXAMPLES keys of the rows matching `where`, of which there are `found` (none: no query)."""
    if not found:
        return []
    return [row[0] for row in df.where(where).select(key).orderBy(key).limit(EXAMPLES).collect()]


@shared
def silver_orders(e: Evidence) -> dict:
    """The revenue and number of the orders of the day."""
    return _one(e.orders(), _money_sum("revenue"), F.count_distinct("order_id").alias("orders")).asDict()


# -- gold_daily_customer_analytics ---------------------------------------------------------------


def _wrong_segment() -> Column:
    return ~F.col("segment").eqNullSafe(transforms.segment_of())


@shared
def customer_figures(e: Evidence) -> dict:
    """The customer rows' count, revenue and broken segment rules, and the rows of each segment."""
    score_out_of_range = ~F.coalesce(F.col("engagement_score").between(0, SCORE_CAP), F.lit(False))
    # Per segment first, then over all: the segments' histogram comes with the totals.
    by_segment = (
        e.gold[schema.GOLD_CUSTOMER_ANALYTICS]
        .groupBy("segment")
        .agg(
            F.count("*").alias("rows"),
            F.sum("revenue").alias("revenue"),
            F.count(F.when(_wrong_segment(), 1)).alias("wrong_segment"),
            F.count(F.when(score_out_of_range, 1)).alias("engagement_score_out_of_range"),
        )
    )
    row = _one(
        by_segment,
        _total("rows"),
        _money_sum("revenue"),
        _total("wrong_segment"),
        F.coalesce(F.sum(F.when(_not_one_of("segment", schema.SEGMENTS), F.col("rows"))), F.lit(0)).alias(
            "unknown_segment_name"
        ),
        _total("engagement_score_out_of_range"),
        F.collect_list(F.struct("segment", "rows")).alias("segments"),
    ).asDict()
    return {**row, "segments": dict(row["segments"])}


def customer_completeness(e: Evidence) -> Verdict:
    gold = e.gold[schema.GOLD_CUSTOMER_ANALYTICS]
    active = (
        e.page_views.select("user_id")
        .union(e.orders().select("user_id"))
        .union(e.sessions.select("user_id"))
        .distinct()
        .withColumn("active", F.lit(True))
    )
    per_user = gold.groupBy("user_id").agg(
        F.count("*").alias("rows"),
        F.count(F.when(F.col("user_id").isNull() | F.col("segment").isNull(), 1)).alias("nulls"),
    )
    row = _one(
        per_user.join(active, "user_id", "full_outer"),
        F.count(F.when(F.col("rows").isNull(), 1)).alias("missing_customers"),
        F.count(F.when(F.col("active").isNull(), 1)).alias("unexpected_customers"),
        F.coalesce(F.sum(F.col("rows") - 1), F.lit(0)).alias("duplicate_rows"),
        F.coalesce(F.sum("nulls"), F.lit(0)).alias("null_keys_or_segments"),
        F.coalesce(F.sum("rows"), F.lit(0)).alias("gold_rows"),
        F.count("active").alias("active_customers_in_silver"),
    ).asDict()
    info = {k: row.pop(k) for k in ("gold_rows", "active_customers_in_silver")}
    return judge("every active customer has one row", "customer analytics incomplete", row, info)


def customer_revenue_consistency(e: Evidence) -> Verdict:
    gold, silver = customer_figures(e)["revenue"], silver_orders(e)["revenue"]
    return judge(
        "customer revenue equals silver revenue",
        "customer revenue differs from silver",
        {"difference_cents": _cents(gold, silver)},
        {"gold_revenue": str(gold), "silver_revenue": str(silver)},
    )


def customer_segment_logic(e: Evidence) -> Verdict:
    figures = customer_figures(e)
    failures = {k: figures[k] for k in ("wrong_segment", "unknown_segment_name", "engagement_score_out_of_range")}
    examples = _examples(e.gold[schema.GOLD_CUSTOMER_ANALYTICS], "user_id", _wrong_segment(), figures["wrong_segment"])
    return judge(
        "every segment follows the rules",
        "segments do not follow the rules",
        failures,
        {"rows": figures["rows"], "segments": figures["segments"], "examples": examples},
    )


# -- gold_daily_sales_summary ---------------------------------------------------------------------


@shared
def sales_figures(e: Evidence) -> dict:
    """The summary rows' count and totals, and how many break buyers <= orders <= units."""
    return _one(
        e.gold[schema.GOLD_SALES_SUMMARY],
        F.count("*").alias("summary_rows"),
        _money_sum("revenue"),
        F.sum("avg_order_value").alias("avg_order_value"),
        *[
            _total(c)
            for c in (
                "orders",
                "converted_sessions",
                "sessions",
                *(f"sessions_{d}" for d in schema.DEVICES),
                *(f"sessions_{r}" for r in schema.REFERRERS),
            )
        ],
        F.count(F.when(~((F.col("unique_buyers") <= F.col("orders")) & (F.col("orders") <= F.col("units"))), 1)).alias(
            "out_of_order"
        ),
    ).asDict()


def sales_revenue_arithmetic(e: Evidence) -> Verdict:
    summary = sales_figures(e)
    categories = _one(e.gold[schema.GOLD_SALES_BY_CATEGORY], _money_sum("revenue"))["revenue"]
    silver = silver_orders(e)["revenue"]
    revenue, orders, aov = summary["revenue"], summary["orders"], summary["avg_order_value"]
    expected_aov = (revenue / orders).quantize(CENT) if orders else None
    failures = {
        "summary_rows_off_by": abs(summary["summary_rows"] - int(e.active)),
        "difference_from_silver_cents": _cents(revenue, silver),
        "difference_from_categories_cents": _cents(revenue, categories),
        "wrong_avg_order_value": int(expected_aov is not None and (aov is None or abs(aov - expected_aov) > CENT)),
    }
    return judge(
        "revenue arithmetic holds",
        "revenue arithmetic broken",
        failures,
        {"summary_rows": summary["summary_rows"], "revenue": str(revenue), "silver_revenue": str(silver)},
    )


def sales_order_consistency(e: Evidence) -> Verdict:
    gold = sales_figures(e)
    silver = silver_orders(e)["orders"]
    # A session lasts minutes: its order lines lie within a day of its start, in `order_lines`.
    bought = e.order_lines.select("session_id").distinct().withColumn("bought", F.lit(True))
    sessions = _one(
        e.sessions.join(bought, "session_id", "left"),
        F.count(F.when(_not_one_of("device", schema.DEVICES), 1)).alias("no_device"),
        F.count(F.when(_not_one_of("referrer", schema.REFERRERS), 1)).alias("no_referrer"),
        F.count("bought").alias("converted"),
    )
    failures = {
        "difference_from_silver_orders": abs(gold["orders"] - silver),
        "difference_from_silver_converted_sessions": abs(gold["converted_sessions"] - sessions["converted"]),
        "buyers_orders_units_out_of_order": gold["out_of_order"],
        "sessions_by_device_difference": abs(
            gold["sessions"] - sessions["no_device"] - sum(gold[f"sessions_{d}"] for d in schema.DEVICES)
        ),
        "sessions_by_referrer_difference": abs(
            gold["sessions"] - sessions["no_referrer"] - sum(gold[f"sessions_{r}"] for r in schema.REFERRERS)
        ),
    }
    return judge(
        "orders are consistent",
        "orders inconsistent",
        failures,
        {
            "orders": gold["orders"],
            "silver_orders": silver,
            "converted_sessions": gold["converted_sessions"],
            "silver_converted_sessions": sessions["converted"],
            "sessions_without_device": sessions["no_device"],
            "sessions_without_referrer": sessions["no_referrer"],
        },
    )


# -- gold_product_analytics -----------------------------------------------------------------------

RATES = ("view_to_cart_rate", "cart_to_purchase_rate", "view_to_purchase_rate")


def _rate_out_of_range() -> Column:
    out_of_range = [F.col(c).isNotNull() & ~F.col(c).between(0, 1) for c in RATES]
    return out_of_range[0] | out_of_range[1] | out_of_range[2]


def _views_below_sessions() -> Column:
    return (F.col("views") < F.col("purchasing_sessions")) | (F.col("views") < F.col("viewing_sessions"))


@shared
def product_figures(e: Evidence) -> dict:
    """The product rows' count and revenue, and how many break each product rule."""
    return _one(
        e.gold[schema.GOLD_PRODUCT_ANALYTICS],
        F.count("*").alias("products"),
        _money_sum("revenue"),
        F.count(F.when(_rate_out_of_range(), 1)).alias("products_with_rate_out_of_range"),
        F.count(F.when(_views_below_sessions(), 1)).alias("products_with_views_below_sessions"),
    ).asDict()


def _product_rule(e: Evidence, bad: Column, count_name: str, passed_text: str, failed_text: str) -> Verdict:
    figures = product_figures(e)
    examples = _examples(e.gold[schema.GOLD_PRODUCT_ANALYTICS], "product_id", bad, figures[count_name])
    return judge(
        passed_text,
        failed_text,
        {count_name: figures[count_name]},
        {"products": figures["products"], "examples": examples},
    )


def product_rates_in_range(e: Evidence) -> Verdict:
    return _product_rule(
        e,
        _rate_out_of_range(),
        "products_with_rate_out_of_range",
        "every rate is within [0, 1]",
        "conversion rates out of [0, 1]",
    )


def product_views_cover_purchases(e: Evidence) -> Verdict:
    return _product_rule(
        e,
        _views_below_sessions(),
        "products_with_views_below_sessions",
        "views cover purchasing sessions",
        "views below purchasing sessions",
    )


RULES: dict[str, Callable[[Evidence], Verdict]] = {
    rule.__name__: rule
    for rule in (
        customer_completeness,
        customer_revenue_consistency,
        customer_segment_logic,
        sales_revenue_arithmetic,
        sales_order_consistency,
        product_rates_in_range,
        product_views_cover_purchases,
    )
}


def run_checks(evidence: Evidence) -> dict[str, dict]:
    """Every check of the gold job, by name: its table, verdict and counts."""
    return {
        check.name: {"table": check.table, **RULES[check.name](evidence).as_dict()} for check in catalog.GOLD_CHECKS
    }
