"""The one definition of Shopstream's names and schemas.

Topics, tables, event types and every column live here once. The generator's JSON, the Spark
schemas, and the pyarrow / pyiceberg schemas are all derived from the `Column` lists below, so a
field added here reaches every layer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# --------------------------------------------------------------------------------------------
# Column types. One small vocabulary, mapped once to each engine.

STRING = "string"
INT = "int"
LONG = "long"
DOUBLE = "double"
BOOLEAN = "boolean"
TIMESTAMP = "timestamp"  # UTC instant, microsecond precision
DATE = "date"
MONEY = "money"  # decimal(12, 2): sums of money must be exact
RATE = "rate"  # decimal(12, 6): ratios and scores

MONEY_PRECISION, MONEY_SCALE = 12, 2
RATE_PRECISION, RATE_SCALE = 12, 6
TYPES = (STRING, INT, LONG, DOUBLE, BOOLEAN, TIMESTAMP, DATE, MONEY, RATE)


def _decimal_limit(precision: int, scale: int) -> Decimal:
    return Decimal(10) ** (precision - scale) - Decimal(10) ** -scale


# The lowest and highest value of each bounded numeric type. A value outside makes the cast to
# the type fail (Spark's ANSI mode), so values are checked against these first.
VALUE_RANGES: dict[str, tuple[Decimal, Decimal]] = {
    INT: (Decimal(-(2**31)), Decimal(2**31 - 1)),
    LONG: (Decimal(-(2**63)), Decimal(2**63 - 1)),
    MONEY: (-_decimal_limit(MONEY_PRECISION, MONEY_SCALE), _decimal_limit(MONEY_PRECISION, MONEY_SCALE)),
    RATE: (-_decimal_limit(RATE_PRECISION, RATE_SCALE), _decimal_limit(RATE_PRECISION, RATE_SCALE)),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = True
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"column {self.name!r}: unknown type {self.type!r}")


def col(name: str, type_: str, doc: str = "") -> Column:
    return Column(name, type_, True, doc)


def opt(name: str, type_: str, doc: str = "") -> Column:
    return Column(name, type_, False, doc)


# --------------------------------------------------------------------------------------------
# Kafka topics.

TOPIC_RAW_EVENTS = "raw-events"
TOPIC_PAGE_VIEWS = "page-views"
TOPIC_PURCHASES = "purchases"
TOPIC_USER_SESSIONS = "user-sessions"
TOPIC_PRODUCTS = "products"  # compacted: latest catalog record per product id

EVENT_TOPICS = (TOPIC_RAW_EVENTS, TOPIC_PAGE_VIEWS, TOPIC_PURCHASES, TOPIC_USER_SESSIONS)
ALL_TOPICS = (*EVENT_TOPICS, TOPIC_PRODUCTS)
COMPACTED_TOPICS = frozenset({TOPIC_PRODUCTS})
# What the streaming job reads. raw-events carries every event: the one source of bronze and silver, so
# each event is read and parsed once; the typed topics carry the same events again for other consumers.
SUBSCRIBED_TOPICS = (TOPIC_RAW_EVENTS, TOPIC_PRODUCTS)

# --------------------------------------------------------------------------------------------
# Events. Every event is one flat JSON object: the common columns plus its type's columns.

PAGE_VIEW = "page_view"
ADD_TO_CART = "add_to_cart"
PURCHASE = "purchase"
SESSION_START = "session_start"
SESSION_END = "session_end"

PAGE_TYPES = ("home", "category", "product", "cart", "checkout")
DEVICES = ("desktop", "mobile", "tablet")
REFERRERS = ("direct", "search", "social", "email", "ads")
PAYMENT_METHODS = ("card", "paypal", "apple_pay", "bank_transfer", "gift_card")
CURRENCIES = ("USD",)

COMMON_EVENT_COLUMNS = (
    col("event_id", STRING, "unique id of the event; duplicates share it"),
    col("event_type", STRING, "one of EVENT_TYPES"),
    col("event_time", TIMESTAMP, "when it happened, in shop time"),
    col("ingest_time", TIMESTAMP, "when the generator sent it"),
    col("user_id", STRING, "the customer; also the Kafka key"),
    col("session_id", STRING, "the browsing session"),
)

EVENT_COLUMNS: dict[str, tuple[Column, ...]] = {
    SESSION_START: (
        col("device", STRING, "one of DEVICES"),
        col("referrer", STRING, "one of REFERRERS"),
        col("country", STRING, "ISO 3166-1 alpha-2"),
    ),
    SESSION_END: (),
    PAGE_VIEW: (
        col("page_type", STRING, "one of PAGE_TYPES"),
        col("page_url", STRING, "path of the page"),
        opt("product_id", STRING, "set on product pages"),
        opt("category", STRING, "set on category pages"),
    ),
    ADD_TO_CART: (
        col("product_id", STRING),
        col("quantity", INT, "units added, > 0"),
        col("unit_price", MONEY, "price per unit, > 0"),
    ),
    PURCHASE: (
        col("order_id", STRING, "one order has one purchase event per line"),
        col("product_id", STRING),
        col("quantity", INT, "units bought, > 0"),
        col("unit_price", MONEY, "price per unit, > 0"),
        col("discount", MONEY, "amount taken off this line, >= 0"),
        col("payment_method", STRING, "one of PAYMENT_METHODS"),
        col("currency", STRING, "ISO 4217"),
    ),
}
EVENT_TYPES = tuple(EVENT_COLUMNS)

# Which typed topic carries each event type (every event also goes to raw-events). Cart adds are
# part of the clickstream, so they travel with page views.
EVENT_TOPIC = {
    PAGE_VIEW: TOPIC_PAGE_VIEWS,
    ADD_TO_CART: TOPIC_PAGE_VIEWS,
    PURCHASE: TOPIC_PURCHASES,
    SESSION_START: TOPIC_USER_SESSIONS,
    SESSION_END: TOPIC_USER_SESSIONS,
}

PRODUCT_COLUMNS = (
    col("product_id", STRING, "catalog id; the Kafka key of the products topic"),
    col("name", STRING),
    col("category", STRING),
    col("brand", STRING),
    col("price", MONEY, "list price"),
    col("currency", STRING),
    col("updated_at", TIMESTAMP, "version of the record; the newest wins"),
)


def event_columns(event_type: str) -> tuple[Column, ...]:
    return COMMON_EVENT_COLUMNS + EVENT_COLUMNS[event_type]


def topic_columns(topic: str) -> tuple[Column, ...]:
    """Union of the columns of every event a topic carries; a column required by only some of
    its event types becomes optional."""
    if topic == TOPIC_PRODUCTS:
        return PRODUCT_COLUMNS
    types = [t for t, tp in EVENT_TOPIC.items() if topic in (tp, TOPIC_RAW_EVENTS)]
    if not types:
        raise KeyError(f"unknown topic {topic!r}")
    merged: dict[str, Column] = {c.name: c for c in COMMON_EVENT_COLUMNS}
    for t in types:
        for c in EVENT_COLUMNS[t]:
            if c.name in merged and merged[c.name].type != c.type:
                raise TypeError(f"column {c.name} has two types across event types")
            merged.setdefault(c.name, c)
    return tuple(
        c
        if c.name in {x.name for x in COMMON_EVENT_COLUMNS}
        or all(c.name in {x.name for x in EVENT_COLUMNS[t] if x.required} for t in types)
        else Column(c.name, c.type, False, c.doc)
        for c in merged.values()
    )


# --------------------------------------------------------------------------------------------
# Iceberg tables. All live in one namespace of the configured catalog.

NAMESPACE = "shopstream"

BRONZE_EVENTS = "bronze_events"
SILVER_PAGE_VIEWS = "silver_page_views"
SILVER_PURCHASES = "silver_purchases"
SILVER_USER_SESSIONS = "silver_user_sessions"
SILVER_PRODUCTS = "silver_products"
QUARANTINE = "quarantine_events"
STREAMING_PROGRESS = "ops_streaming_progress"
GOLD_CUSTOMER_ANALYTICS = "gold_daily_customer_analytics"
GOLD_SALES_SUMMARY = "gold_daily_sales_summary"
GOLD_PRODUCT_ANALYTICS = "gold_product_analytics"
SILVER_DATA_QUALITY_REPORT = "silver_data_quality_report"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    partition_day_of: str | None = None  # partitioned by the day of this column (a date is its own day)
    identifier: tuple[str, ...] = ()  # columns that identify a row (documentation and checks)

    @property
    def qualified(self) -> str:
        return f"{NAMESPACE}.{self.name}"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


TABLES: dict[str, Table] = {}


def _table(name: str, columns: Iterable[Column], partition_day_of: str | None, identifier=()) -> Table:
    table = Table(name, tuple(columns), partition_day_of, tuple(identifier))
    if partition_day_of is not None:
        table.column(partition_day_of)
    TABLES[name] = table
    return table


BRONZE = _table(
    BRONZE_EVENTS,
    (
        opt("kafka_key", STRING, "record key as UTF-8"),
        opt("raw_value", STRING, "record value as UTF-8, untouched but for bytes that are not UTF-8 (U+FFFD)"),
        col("topic", STRING),
        col("kafka_partition", INT),
        col("kafka_offset", LONG),
        col("kafka_timestamp", TIMESTAMP, "broker append time"),
        col("ingest_time", TIMESTAMP, "when the streaming job read it"),
        opt("event_id", STRING, "parsed where the payload allows"),
        opt("event_type", STRING, "parsed where the payload allows"),
        opt("event_time", TIMESTAMP, "parsed where the payload allows"),
        col("partition_time", TIMESTAMP, "event time, or Kafka time when unparseable"),
    ),
    "partition_time",
    # The Kafka time tells two incarnations of a topic apart: a recreated topic reuses offsets.
    ("topic", "kafka_partition", "kafka_offset", "kafka_timestamp"),
)

PAGE_VIEWS = _table(
    SILVER_PAGE_VIEWS,
    (
        *COMMON_EVENT_COLUMNS,
        col("page_type", STRING, "page type; 'product' for cart adds"),
        opt("page_url", STRING),
        opt("product_id", STRING),
        opt("category", STRING, "page category, or the product's category"),
        opt("quantity", INT, "cart adds only"),
        opt("unit_price", MONEY, "cart adds only"),
        col("event_date", DATE, "UTC date of event_time"),
    ),
    "event_time",
    ("event_id",),
)

PURCHASES = _table(
    SILVER_PURCHASES,
    (
        *COMMON_EVENT_COLUMNS,
        *EVENT_COLUMNS[PURCHASE],
        col("revenue", MONEY, "quantity * unit_price - discount"),
        opt("category", STRING, "from the product catalog"),
        opt("list_price", MONEY, "catalog price when the order was placed"),
        col("event_date", DATE, "UTC date of event_time"),
    ),
    "event_time",
    ("event_id",),
)

USER_SESSIONS = _table(
    SILVER_USER_SESSIONS,
    (
        col("session_id", STRING),
        col("user_id", STRING),
        col("session_start", TIMESTAMP, "first event of the session"),
        col("session_end", TIMESTAMP, "last event of the session"),
        col("duration_seconds", LONG),
        opt("device", STRING),
        opt("referrer", STRING),
        opt("country", STRING),
        col("page_views", LONG),
        col("products_viewed", LONG, "distinct products whose page was viewed"),
        col("cart_adds", LONG),
        col("orders", LONG, "distinct order ids"),
        opt("revenue", MONEY, "null when the sum does not fit decimal(12, 2)"),
        col("converted", BOOLEAN, "placed at least one order"),
        col("session_date", DATE, "UTC date of session_start"),
    ),
    "session_start",
    ("session_id",),
)

PRODUCTS = _table(SILVER_PRODUCTS, PRODUCT_COLUMNS, None, ("product_id",))

QUARANTINE_TABLE = _table(
    QUARANTINE,
    (
        col("reason", STRING, "one of QUARANTINE_REASONS"),
        opt("detail", STRING, "what exactly failed"),
        col("topic", STRING),
        col("kafka_partition", INT),
        col("kafka_offset", LONG),
        col("kafka_timestamp", TIMESTAMP, "broker append time"),
        opt("kafka_key", STRING),
        opt("raw_value", STRING),
        opt("event_id", STRING),
        opt("event_type", STRING),
        opt("event_time", TIMESTAMP),
        col("ingest_time", TIMESTAMP, "when the streaming job read it"),
        col("partition_time", TIMESTAMP, "event time, or Kafka time when unparseable"),
    ),
    "partition_time",
    # A late event is one row whatever its duplicates' offsets: its key is (event_id, event_time, reason).
    ("topic", "kafka_partition", "kafka_offset", "kafka_timestamp", "reason"),
)

# Reason codes for quarantined records.
REASON_BAD_JSON = "bad_json"
REASON_MISSING_FIELD = "missing_required_field"
REASON_BAD_TYPE = "bad_type"
REASON_OUT_OF_RANGE = "out_of_range"
REASON_UNKNOWN_TYPE = "unknown_event_type"
REASON_UNKNOWN_VALUE = "unknown_value"
REASON_LATE = "late_event"
REASON_IMPLAUSIBLE_TIME = "implausible_event_time"  # too far from the record's Kafka time to be believed
REASON_WRITE_FAILED = "write_failed"  # passed validation, but writing it failed on its data
QUARANTINE_REASONS = (
    REASON_BAD_JSON,
    REASON_MISSING_FIELD,
    REASON_BAD_TYPE,
    REASON_OUT_OF_RANGE,
    REASON_UNKNOWN_TYPE,
    REASON_UNKNOWN_VALUE,
    REASON_LATE,
    REASON_IMPLAUSIBLE_TIME,
    REASON_WRITE_FAILED,
)

PROGRESS = _table(
    STREAMING_PROGRESS,
    (
        col("query_name", STRING),
        col("run_id", STRING),
        col("batch_id", LONG),
        col("progress_time", TIMESTAMP, "when the micro-batch finished"),
        col("num_input_rows", LONG),
        opt("input_rows_per_second", DOUBLE),
        opt("processed_rows_per_second", DOUBLE),
        opt("batch_duration_ms", LONG),
        opt("watermark", TIMESTAMP),
        opt("end_offsets", STRING, "JSON: topic -> partition -> offset"),
    ),
    "progress_time",
    ("query_name", "run_id", "batch_id"),
)


# Gold tables: one partition per date, rewritten whole by each run for that date.
# docs/metrics.md defines every column in one sentence and one formula.

SEGMENTS = ("new", "high_value", "loyal", "at_risk", "active", "browser")  # first rule that matches wins

CUSTOMER_ANALYTICS = _table(
    GOLD_CUSTOMER_ANALYTICS,
    (
        col("date", DATE),
        col("user_id", STRING),
        col("sessions", LONG),
        col("page_views", LONG),
        col("products_viewed", LONG),
        col("cart_adds", LONG),
        col("orders", LONG, "orders placed that day (the day of an order's first line)"),
        col("units", LONG),
        col("revenue", MONEY),
        opt("avg_order_value", MONEY, "null without orders"),
        col("converted", BOOLEAN),
        col("first_seen", TIMESTAMP),
        col("last_seen", TIMESTAMP),
        col("lifetime_revenue", MONEY, "up to and including the date"),
        col("lifetime_orders", LONG, "up to and including the date"),
        opt("days_since_previous_purchase", INT, "null before a first purchase"),
        col("engagement_score", RATE),
        col("segment", STRING, "one of SEGMENTS"),
    ),
    "date",
    ("date", "user_id"),
)

SALES_SUMMARY = _table(
    GOLD_SALES_SUMMARY,
    (
        col("date", DATE),
        col("revenue", MONEY),
        col("orders", LONG, "orders placed that day (the day of an order's first line)"),
        col("units", LONG),
        opt("avg_order_value", MONEY),
        col("unique_buyers", LONG),
        col("unique_visitors", LONG),
        col("sessions", LONG),
        col("converted_sessions", LONG, "sessions with an order"),
        opt("session_conversion_rate", RATE, "converted_sessions / sessions"),
        opt("orders_per_session", RATE, "orders / sessions; not a conversion rate, may exceed 1"),
        opt("buyers_per_visitor", RATE),
        *[col(f"sessions_{device}", LONG) for device in DEVICES],
        *[col(f"sessions_{referrer}", LONG) for referrer in REFERRERS],
        opt("revenue_change_vs_previous_day", RATE, "relative change; null without a previous day"),
        col("trailing_7d_days", LONG, "days of the 7 before with a session or an order"),
        opt("trailing_7d_avg_revenue", MONEY, "mean revenue of those days; null without any"),
        opt("revenue_vs_trailing_7d_avg", RATE, "revenue / trailing_7d_avg_revenue"),
    ),
    "date",
    ("date",),
)

GOLD_SALES_BY_CATEGORY = "gold_daily_sales_by_category"
SALES_BY_CATEGORY = _table(
    GOLD_SALES_BY_CATEGORY,
    (
        col("date", DATE),
        col("category", STRING, "'unknown' when the product is not in the catalog"),
        col("revenue", MONEY),
        col("orders", LONG),
        col("units", LONG),
        col("unique_buyers", LONG),
    ),
    "date",
    ("date", "category"),
)

PRODUCT_ANALYTICS = _table(
    GOLD_PRODUCT_ANALYTICS,
    (
        col("date", DATE),
        col("product_id", STRING),
        opt("category", STRING),
        col("views", LONG),
        col("unique_viewers", LONG),
        col("cart_adds", LONG),
        col("purchases", LONG, "order lines"),
        col("units", LONG),
        col("revenue", MONEY),
        col("viewing_sessions", LONG),
        col("purchasing_sessions", LONG),
        opt("view_to_cart_rate", RATE),
        opt("cart_to_purchase_rate", RATE),
        opt("view_to_purchase_rate", RATE),
        col("revenue_rank", INT),
        col("category_revenue_rank", INT),
        col("bought_together", STRING, "JSON list of {product_id, baskets, support, confidence}"),
        col("viewed_together", STRING, "JSON list of {product_id, baskets, support, confidence}"),
    ),
    "date",
    ("date", "product_id"),
)

DATA_QUALITY = _table(
    SILVER_DATA_QUALITY_REPORT,
    (
        col("date", DATE),
        col("table_name", STRING),
        col("row_count", LONG),
        col("null_rates", STRING, "JSON: column -> share of null values among the rows expecting one"),
        col("duplicate_count", LONG),
        col("out_of_range_count", LONG),
        col("late_event_count", LONG),
        col("quarantine_by_reason", STRING, "JSON: reason -> records"),
        opt("freshness_lag_seconds", LONG, "end of the date minus the newest event time"),
    ),
    "date",
    ("date", "table_name"),
)


# --------------------------------------------------------------------------------------------
# Derivations: JSON values, Spark, pyarrow and pyiceberg schemas.


def to_json_value(type_: str, value: Any) -> Any:
    """How a Python value of a column is written in an event's JSON."""
    if value is None:
        return None
    if type_ == TIMESTAMP:
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if type_ == DATE:
        return value.isoformat()
    if type_ in (MONEY, RATE):
        return float(value) if isinstance(value, Decimal) else value
    return value


def spark_type(type_: str):
    from pyspark.sql import types as T

    return {
        STRING: T.StringType(),
        INT: T.IntegerType(),
        LONG: T.LongType(),
        DOUBLE: T.DoubleType(),
        BOOLEAN: T.BooleanType(),
        TIMESTAMP: T.TimestampType(),
        DATE: T.DateType(),
        MONEY: T.DecimalType(MONEY_PRECISION, MONEY_SCALE),
        RATE: T.DecimalType(RATE_PRECISION, RATE_SCALE),
    }[type_]


def spark_schema(columns: Sequence[Column], all_nullable: bool = False):
    """A Spark StructType. `all_nullable` is for parsing untrusted JSON, where validation, not the
    schema, decides what a missing field means."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField(c.name, spark_type(c.type), all_nullable or not c.required) for c in columns])


def arrow_type(type_: str):
    import pyarrow as pa

    return {
        STRING: pa.string(),
        INT: pa.int32(),
        LONG: pa.int64(),
        DOUBLE: pa.float64(),
        BOOLEAN: pa.bool_(),
        TIMESTAMP: pa.timestamp("us", tz="UTC"),
        DATE: pa.date32(),
        MONEY: pa.decimal128(MONEY_PRECISION, MONEY_SCALE),
        RATE: pa.decimal128(RATE_PRECISION, RATE_SCALE),
    }[type_]


def arrow_schema(columns: Sequence[Column]):
    import pyarrow as pa

    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=not c.required) for c in columns])


def iceberg_type(type_: str):
    from pyiceberg import types as I

    return {
        STRING: I.StringType(),
        INT: I.IntegerType(),
        LONG: I.LongType(),
        DOUBLE: I.DoubleType(),
        BOOLEAN: I.BooleanType(),
        TIMESTAMP: I.TimestamptzType(),
        DATE: I.DateType(),
        MONEY: I.DecimalType(MONEY_PRECISION, MONEY_SCALE),
        RATE: I.DecimalType(RATE_PRECISION, RATE_SCALE),
    }[type_]


def iceberg_schema(columns: Sequence[Column]):
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField

    return Schema(
        *[
            NestedField(i, c.name, iceberg_type(c.type), required=c.required, doc=c.doc or None)
            for i, c in enumerate(columns, start=1)
        ]
    )
