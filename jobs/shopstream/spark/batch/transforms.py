"""Pure transforms of the daily batch jobs: silver DataFrames and a date in, a gold DataFrame out.

Formulas are written down once, in docs/metrics.md; the code below is their only implementation.
"""

from __future__ import annotations

import datetime as dt
import operator
from dataclasses import dataclass, field
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shopstream import schema
from shopstream.rules import (
    AT_RISK_DAYS,
    HIGH_VALUE_LIFETIME_REVENUE,
    LOYAL_LIFETIME_ORDERS,
    RECOMMENDATIONS,
    SCORE_CAP,
    SCORE_WEIGHTS,
    TRAILING_DAYS,
)

MONEY_TYPE = schema.spark_type(schema.MONEY)
RATE_TYPE = schema.spark_type(schema.RATE)


def project(df: DataFrame, table: schema.Table) -> DataFrame:
    """The table's columns, in order, cast to their types."""
    return df.select(*[F.col(c.name).cast(schema.spark_type(c.type)).alias(c.name) for c in table.columns])


def ratio(numerator: str | Column, denominator: str) -> Column:
    """numerator / denominator as a rate, null when the denominator is 0 or null, and null when the
    quotient does not fit a rate (decimal(12,6): 1,000,000 or more), so no ratio can fail a job."""
    num = F.col(numerator) if isinstance(numerator, str) else numerator
    den = F.col(denominator)
    return F.when(den > 0, F.try_divide(num.cast("decimal(38,6)"), den).try_cast(RATE_TYPE))


def _product_views(page_views: DataFrame) -> DataFrame:
    return page_views.where((F.col("event_type") == schema.PAGE_VIEW) & (F.col("page_type") == "product"))


def _cart_adds(page_views: DataFrame) -> DataFrame:
    return page_views.where(F.col("event_type") == schema.ADD_TO_CART)


def with_order_date(purchases: DataFrame) -> DataFrame:
    """Order lines with `order_date`: the day of the order's first line, on which every line of the
    order counts, so an order whose lines straddle midnight counts once."""
    return purchases.withColumn("order_date", F.min("event_date").over(Window.partitionBy("order_id")))


def orders_of(day: dt.date, purchases: DataFrame) -> DataFrame:
    """The lines of the orders placed on `day`, whatever day each line itself falls on."""
    return with_order_date(purchases).where(F.col("order_date") == F.lit(day))


# -- customers --------------------------------------------------------------------------------


def customer_analytics(day: dt.date, page_views: DataFrame, purchases: DataFrame, sessions: DataFrame) -> DataFrame:
    """One row per customer active on `day`. `page_views` and `sessions` hold that day's rows,
    `purchases` every order line up to the day after (for lifetime figures and orders that
    straddle midnight)."""
    date = F.lit(day)
    lines = with_order_date(purchases)
    clicks = page_views.groupBy("user_id").agg(
        F.count(F.when(F.col("event_type") == schema.PAGE_VIEW, 1)).alias("page_views"),
        F.count_distinct(
            F.when((F.col("event_type") == schema.PAGE_VIEW) & (F.col("page_type") == "product"), F.col("product_id"))
        ).alias("products_viewed"),
        F.count(F.when(F.col("event_type") == schema.ADD_TO_CART, 1)).alias("cart_adds"),
        F.min("event_time").alias("clicks_first"),
        F.max("event_time").alias("clicks_last"),
    )
    today = lines.where(F.col("order_date") == date)
    bought = today.groupBy("user_id").agg(
        F.count_distinct("order_id").alias("orders"),
        F.sum("quantity").alias("units"),
        F.sum("revenue").alias("revenue"),
        F.min("event_time").alias("orders_first"),
        F.max("event_time").alias("orders_last"),
    )
    visits = sessions.groupBy("user_id").agg(
        F.count("*").alias("sessions"),
        F.min("session_start").alias("sessions_first"),
        F.max("session_end").alias("sessions_last"),
    )
    lifetime = (
        lines.where(F.col("order_date") <= date)
        .groupBy("user_id")
        .agg(
            F.sum("revenue").alias("lifetime_revenue"),
            F.count_distinct("order_id").alias("lifetime_orders"),
            F.max(F.when(F.col("order_date") < date, F.col("order_date"))).alias("previous_purchase_date"),
        )
    )
    users = clicks.select("user_id").union(bought.select("user_id")).union(visits.select("user_id")).distinct()
    rows = (
        users.join(clicks, "user_id", "left")
        .join(bought, "user_id", "left")
        .join(visits, "user_id", "left")
        .join(lifetime, "user_id", "left")
    )
    zero = F.lit(0)
    rows = rows.select(
        date.alias("date"),
        "user_id",
        F.coalesce("sessions", zero).alias("sessions"),
        F.coalesce("page_views", zero).alias("page_views"),
        F.coalesce("products_viewed", zero).alias("products_viewed"),
        F.coalesce("cart_adds", zero).alias("cart_adds"),
        F.coalesce("orders", zero).alias("orders"),
        F.coalesce("units", zero).alias("units"),
        F.coalesce("revenue", F.lit(0).cast(MONEY_TYPE)).alias("revenue"),
        F.least("clicks_first", "orders_first", "sessions_first").alias("first_seen"),
        F.greatest("clicks_last", "orders_last", "sessions_last").alias("last_seen"),
        F.coalesce("lifetime_revenue", F.lit(0).cast(MONEY_TYPE)).alias("lifetime_revenue"),
        F.coalesce("lifetime_orders", zero).alias("lifetime_orders"),
        F.date_diff(date, "previous_purchase_date").alias("days_since_previous_purchase"),
    )
    score = reduce(operator.add, [F.col(name) * weight for name, weight in SCORE_WEIGHTS.items()])
    rows = rows.withColumns(
        {
            "avg_order_value": F.when(F.col("orders") > 0, (F.col("revenue") / F.col("orders")).cast(MONEY_TYPE)),
            "converted": F.col("orders") > 0,
            "engagement_score": F.least(score, F.lit(SCORE_CAP)).cast(RATE_TYPE),
        }
    )
    return project(rows.withColumn("segment", segment_of()), schema.CUSTOMER_ANALYTICS)


def segment_of() -> Column:
    """A customer row's segment from its own figures: the first rule of docs/metrics.md that matches
    (the job computes it with this, and the audit recomputes it from the rows written)."""
    return (
        F.when((F.col("orders") > 0) & (F.col("lifetime_orders") == F.col("orders")), "new")
        .when(F.col("lifetime_revenue") >= F.lit(HIGH_VALUE_LIFETIME_REVENUE), "high_value")
        .when(F.col("lifetime_orders") >= LOYAL_LIFETIME_ORDERS, "loyal")
        .when((F.col("orders") == 0) & (F.col("days_since_previous_purchase") > AT_RISK_DAYS), "at_risk")
        .when((F.col("orders") > 0) | (F.col("lifetime_orders") > 0), "active")
        .otherwise("browser")
    )


# -- sales ------------------------------------------------------------------------------------


def sales_summary(day: dt.date, page_views: DataFrame, purchases: DataFrame, sessions: DataFrame) -> DataFrame:
    """One row for `day`. `purchases` holds the order lines of the day and of the TRAILING_DAYS
    before it, one day more either side (for orders that straddle midnight); `sessions` holds the
    day and the TRAILING_DAYS before it (a day with sessions but no orders has history: a
    revenue of 0); `page_views` holds the day."""
    date = F.lit(day)
    lines = with_order_date(purchases)
    today = lines.where(F.col("order_date") == date)
    totals = today.agg(
        F.coalesce(F.sum("revenue"), F.lit(0)).cast(MONEY_TYPE).alias("revenue"),
        F.count_distinct("order_id").alias("orders"),
        F.coalesce(F.sum("quantity"), F.lit(0)).alias("units"),
        F.count_distinct("user_id").alias("unique_buyers"),
    )
    first_trailing_day = F.date_sub(date, TRAILING_DAYS)
    earlier = lines.where((F.col("order_date") < date) & (F.col("order_date") >= first_trailing_day))
    history = earlier.agg(
        F.sum(F.when(F.col("order_date") == F.date_sub(date, 1), F.col("revenue"))).alias("previous_day_revenue"),
        F.coalesce(F.sum("revenue"), F.lit(0)).alias("trailing_revenue"),
    )
    earlier_visits = sessions.where((F.col("session_date") < date) & (F.col("session_date") >= first_trailing_day))
    history_days = (
        earlier.select(F.col("order_date").alias("day"))
        .union(earlier_visits.select(F.col("session_date").alias("day")))
        .agg(F.count_distinct("day").alias("trailing_7d_days"))
    )
    visits = sessions.where(F.col("session_date") == date)
    visitors = (
        page_views.select("user_id")
        .union(visits.select("user_id"))
        .agg(F.count_distinct("user_id").alias("unique_visitors"))
    )
    # A session converts with any order line, late ones included (silver's own `converted` flag
    # leaves out events too late for sessionization); its order may count on the next day.
    converted = visits.join(purchases.select("session_id").distinct(), "session_id", "left_semi")
    traffic = visits.agg(
        F.count("*").alias("sessions"),
        *[F.count(F.when(F.col("device") == d, 1)).alias(f"sessions_{d}") for d in schema.DEVICES],
        *[F.count(F.when(F.col("referrer") == r, 1)).alias(f"sessions_{r}") for r in schema.REFERRERS],
    ).crossJoin(converted.agg(F.count("*").alias("converted_sessions")))
    row = totals.crossJoin(history).crossJoin(history_days).crossJoin(visitors).crossJoin(traffic)
    # The mean of the days of history only: a shop two days old is compared with two days, not seven.
    trailing_mean = F.when(F.col("trailing_7d_days") > 0, F.col("trailing_revenue") / F.col("trailing_7d_days"))
    row = row.withColumns(
        {
            "date": date,
            "avg_order_value": F.when(F.col("orders") > 0, (F.col("revenue") / F.col("orders")).cast(MONEY_TYPE)),
            "orders_per_session": ratio("orders", "sessions"),
            "session_conversion_rate": ratio("converted_sessions", "sessions"),
            "buyers_per_visitor": ratio("unique_buyers", "unique_visitors"),
            "revenue_change_vs_previous_day": ratio(
                F.col("revenue") - F.col("previous_day_revenue"), "previous_day_revenue"
            ),
            "trailing_7d_avg_revenue": trailing_mean.cast(MONEY_TYPE),
            # revenue / (trailing revenue / days), without rounding the mean first
            "revenue_vs_trailing_7d_avg": F.when(
                F.col("trailing_7d_days") > 0,
                ratio(F.col("revenue") * F.col("trailing_7d_days"), "trailing_revenue"),
            ),
        }
    )
    return project(row, schema.SALES_SUMMARY)


def sales_by_category(day: dt.date, purchases: DataFrame) -> DataFrame:
    """Revenue, orders, units and buyers of the orders of `day` per product category; `purchases`
    holds the order lines of the day, one day more either side."""
    today = orders_of(day, purchases)
    rows = today.groupBy(F.coalesce("category", F.lit("unknown")).alias("category")).agg(
        F.sum("revenue").alias("revenue"),
        F.count_distinct("order_id").alias("orders"),
        F.sum("quantity").alias("units"),
        F.count_distinct("user_id").alias("unique_buyers"),
    )
    return project(rows.withColumn("date", F.lit(day)), schema.SALES_BY_CATEGORY)


# -- products ---------------------------------------------------------------------------------


def _together(baskets: DataFrame, basket: str, min_baskets: int) -> DataFrame:
    """For each product: the products most often in the same basket, as a JSON list with the
    baskets they share, support (baskets with both / all baskets) and confidence (baskets with
    both / baskets with the product). A pair sharing fewer than `min_baskets` baskets is left
    out: one shared basket would otherwise give a confidence of 1.0 to a coincidence."""
    pairs = (
        baskets.alias("a")
        .join(baskets.alias("b"), basket)
        .where(F.col("a.product_id") != F.col("b.product_id"))
        .groupBy(F.col("a.product_id").alias("product_id"), F.col("b.product_id").alias("other"))
        .agg(F.count("*").alias("both"))
        .where(F.col("both") >= min_baskets)
    )
    per_product = baskets.groupBy("product_id").agg(F.count("*").alias("with_product"))
    total = baskets.agg(F.count_distinct(basket).alias("baskets"))
    scored = (
        pairs.join(per_product, "product_id")
        .crossJoin(total)
        .select(
            "product_id",
            "other",
            "both",
            F.round(F.col("both") / F.col("baskets"), 6).alias("support"),
            F.round(F.col("both") / F.col("with_product"), 6).alias("confidence"),
        )
    )
    best = Window.partitionBy("product_id").orderBy(F.desc("confidence"), F.desc("support"), "other")
    top = scored.withColumn("n", F.row_number().over(best)).where(F.col("n") <= RECOMMENDATIONS)
    return top.groupBy("product_id").agg(
        F.to_json(
            F.transform(
                F.array_sort(
                    F.collect_list(F.struct("n", F.col("other").alias("product_id"), "both", "support", "confidence"))
                ),
                lambda item: F.struct(
                    item["product_id"].alias("product_id"),
                    item["both"].alias("baskets"),
                    item["support"].alias("support"),
                    item["confidence"].alias("confidence"),
                ),
            )
        ).alias("together")
    )


def product_analytics(
    day: dt.date, page_views: DataFrame, purchases: DataFrame, products: DataFrame, together_min_baskets: int
) -> DataFrame:
    """One row per product viewed or carted on `day`, or bought in an order of `day`. `page_views`
    holds the day, `purchases` the order lines of the day, one day more either side;
    `together_min_baskets` is the fewest baskets two products must share to be listed together."""
    bought = orders_of(day, purchases)
    views = _product_views(page_views)
    carts = _cart_adds(page_views)
    viewing = views.select("product_id", "session_id").distinct()
    carting = carts.select("product_id", "session_id").distinct()
    buying = bought.select("product_id", "session_id").distinct()
    view_stats = views.groupBy("product_id").agg(
        F.count("*").alias("views"),
        F.count_distinct("user_id").alias("unique_viewers"),
        F.count_distinct("session_id").alias("viewing_sessions"),
    )
    cart_stats = carts.groupBy("product_id").agg(
        F.count("*").alias("cart_adds"), F.count_distinct("session_id").alias("carting_sessions")
    )
    buy_stats = bought.groupBy("product_id").agg(
        F.count("*").alias("purchases"),
        F.sum("quantity").alias("units"),
        F.sum("revenue").alias("revenue"),
        F.count_distinct("session_id").alias("purchasing_sessions"),
    )

    def overlap(a: DataFrame, b: DataFrame, name: str) -> DataFrame:
        return a.join(b, ["product_id", "session_id"]).groupBy("product_id").agg(F.count("*").alias(name))

    orders = bought.select("order_id", "product_id").distinct()
    bought_with = _together(orders, "order_id", together_min_baskets).withColumnRenamed("together", "bought_together")
    viewed_with = _together(viewing, "session_id", together_min_baskets).withColumnRenamed(
        "together", "viewed_together"
    )

    ids = (
        view_stats.select("product_id")
        .union(cart_stats.select("product_id"))
        .union(buy_stats.select("product_id"))
        .distinct()
    )
    rows = ids
    for part in (
        view_stats,
        cart_stats,
        buy_stats,
        overlap(viewing, carting, "view_and_cart"),
        overlap(carting, buying, "cart_and_purchase"),
        overlap(viewing, buying, "view_and_purchase"),
        products.select("product_id", "category"),
        bought_with,
        viewed_with,
    ):
        rows = rows.join(part, "product_id", "left")
    counts = (
        "views",
        "unique_viewers",
        "viewing_sessions",
        "cart_adds",
        "carting_sessions",
        "purchases",
        "units",
        "purchasing_sessions",
        "view_and_cart",
        "cart_and_purchase",
        "view_and_purchase",
    )
    rows = rows.fillna(0, subset=list(counts)).withColumns(
        {
            "revenue": F.coalesce("revenue", F.lit(0).cast(MONEY_TYPE)),
            "bought_together": F.coalesce("bought_together", F.lit("[]")),
            "viewed_together": F.coalesce("viewed_together", F.lit("[]")),
        }
    )
    rows = rows.withColumns(
        {
            "view_to_cart_rate": ratio("view_and_cart", "viewing_sessions"),
            "cart_to_purchase_rate": ratio("cart_and_purchase", "carting_sessions"),
            "view_to_purchase_rate": ratio("view_and_purchase", "viewing_sessions"),
            "revenue_rank": F.dense_rank().over(Window.orderBy(F.desc("revenue"))),
            "category_revenue_rank": F.dense_rank().over(Window.partitionBy("category").orderBy(F.desc("revenue"))),
            "date": F.lit(day),
        }
    )
    return project(rows, schema.PRODUCT_ANALYTICS)


# -- data quality -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityRule:
    """How the data-quality report reads one silver table."""

    key: str  # the event (or session) key
    time_column: str  # the newest value measures freshness
    # The typed topic of the table's events. Every record comes from raw-events: a quarantined one
    # counts for the table when its event type is one this topic carries.
    topic: str
    # Rows breaking a range rule: the streaming job rejects these, so a non-zero count means trouble upstream.
    out_of_range: str
    # Optional columns that only some rows carry: the rows where a value is expected. Every other
    # column's null rate is over all rows.
    expected_where: dict[str, str] = field(default_factory=dict)


QUALITY_RULES = {
    schema.SILVER_PAGE_VIEWS: QualityRule(
        "event_id",
        "event_time",
        schema.TOPIC_PAGE_VIEWS,
        "(quantity IS NOT NULL AND quantity <= 0) OR (unit_price IS NOT NULL AND unit_price <= 0)",
        {
            "page_url": f"event_type = '{schema.PAGE_VIEW}'",
            "product_id": "page_type = 'product'",  # product pages and cart adds
            "category": f"event_type = '{schema.PAGE_VIEW}' AND page_type IN ('category', 'product')",
            "quantity": f"event_type = '{schema.ADD_TO_CART}'",
            "unit_price": f"event_type = '{schema.ADD_TO_CART}'",
        },
    ),
    schema.SILVER_PURCHASES: QualityRule(
        "event_id",
        "event_time",
        schema.TOPIC_PURCHASES,
        "quantity <= 0 OR unit_price <= 0 OR discount < 0 OR revenue < 0",
    ),
    schema.SILVER_USER_SESSIONS: QualityRule(
        "session_id",
        "session_start",
        schema.TOPIC_USER_SESSIONS,
        "duration_seconds < 0 OR page_views < 0 OR revenue < 0",
    ),
}


def _null_rate(column: str, expected_where: str | None) -> Column:
    """Share of the rows expecting a value in `column` that have none; null when no row expects one."""
    expected = F.expr(expected_where) if expected_where else F.lit(True)
    missing = F.count(F.when(expected & F.col(column).isNull(), 1))
    return F.round(F.try_divide(missing, F.count(F.when(expected, 1))), 6)


def data_quality(day: dt.date, silver: dict[str, DataFrame], quarantine: DataFrame) -> DataFrame:
    """One row per silver table for `day`: volume, null rates of every column, duplicates,
    out-of-range rows, late events and quarantined records by reason, and how far the newest
    event lies before the day's end (from the data alone, so a rerun gives the same row)."""
    day_end = F.lit(int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()))
    rows: list[DataFrame] = []
    for name, rule in QUALITY_RULES.items():
        df = silver[name]
        columns = schema.TABLES[name].names
        stats = df.agg(
            F.count("*").alias("row_count"),
            (F.count("*") - F.count_distinct(rule.key)).alias("duplicate_count"),
            F.count(F.when(F.expr(rule.out_of_range), 1)).alias("out_of_range_count"),
            F.max(rule.time_column).alias("newest"),
            F.to_json(
                F.create_map(*[x for c in columns for x in (F.lit(c), _null_rate(c, rule.expected_where.get(c)))])
            ).alias("null_rates"),
        )
        types = [event_type for event_type, typed_topic in schema.EVENT_TOPIC.items() if typed_topic == rule.topic]
        rejected = quarantine.where(F.col("event_type").isin(*types))
        by_reason = (
            rejected.groupBy("reason")
            .count()
            .agg(
                F.to_json(F.map_from_entries(F.collect_list(F.struct("reason", "count")))).alias(
                    "quarantine_by_reason"
                ),
                F.coalesce(F.sum(F.when(F.col("reason") == schema.REASON_LATE, F.col("count"))), F.lit(0)).alias(
                    "late_event_count"
                ),
            )
        )
        row = stats.crossJoin(by_reason).select(
            F.lit(day).alias("date"),
            F.lit(name).alias("table_name"),
            "row_count",
            "null_rates",
            "duplicate_count",
            "out_of_range_count",
            "late_event_count",
            F.coalesce("quarantine_by_reason", F.lit("{}")).alias("quarantine_by_reason"),
            (day_end - F.unix_seconds("newest")).alias("freshness_lag_seconds"),
        )
        rows.append(row)
    return project(reduce(DataFrame.unionByName, rows), schema.DATA_QUALITY)
