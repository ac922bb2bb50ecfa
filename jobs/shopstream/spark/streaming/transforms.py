"""Pure transforms of the streaming job: DataFrames in, DataFrames out, no reads or writes.

Input is the Kafka source's shape (key, value, topic, partition, offset, timestamp). Every event
field is first parsed as text, so that a wrong type is caught here with a reason instead of
silently becoming null.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DecimalType

from shopstream import schema, settings

ISO_INSTANT = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
# A JSON number (or its text): what a numeric field holds when it is not simply of the wrong type.
NUMBER = r"^\s*-?\d+(\.\d+)?([eE][+-]?\d+)?\s*$"
# Wide enough for every bound in schema.VALUE_RANGES; a number it cannot hold is out of range anyway.
WIDE_DECIMAL = "DECIMAL(38, 18)"

# Allowed values of the enumerated event fields.
ENUMS = {
    "page_type": schema.PAGE_TYPES,
    "device": schema.DEVICES,
    "referrer": schema.REFERRERS,
    "payment_method": schema.PAYMENT_METHODS,
    "currency": schema.CURRENCIES,
}
# (field, lowest allowed, inclusive?) for numeric fields.
RANGES = (("unit_price", 0, False), ("quantity", 0, False), ("discount", 0, True))

EVENT_FIELDS = schema.topic_columns(schema.TOPIC_RAW_EVENTS)
# A Kafka record as kafka_source_columns gives it: what bronze and quarantine keep of each record.
KAFKA_RECORD_COLUMNS = ("kafka_key", "raw_value", "topic", "kafka_partition", "kafka_offset", "kafka_timestamp")


@dataclass(frozen=True)
class TimeWindow:
    """How far an event time may lie from its Kafka record's timestamp and still be believed. The
    Kafka time, not the clock, is the reference, so a replay decides the same."""

    max_age_days: int = int(settings.MAX_EVENT_AGE_DAYS.default or 0)
    max_lead_seconds: int = int(settings.MAX_EVENT_LEAD_SECONDS.default or 0)

    def excludes(self, event_time: SparkColumn) -> SparkColumn:
        kafka_time = F.col("kafka_timestamp")
        return (event_time < kafka_time - F.make_dt_interval(days=F.lit(self.max_age_days))) | (
            event_time > kafka_time + F.make_dt_interval(secs=F.lit(self.max_lead_seconds))
        )


CORRUPT = "_corrupt_record"
TYPED = "_typed_"  # prefix of a field's converted value inside parse_and_validate
# Spark's JSON parser fills CORRUPT with the payload when it is not a JSON object; one parse
# decides both "is it JSON" and every field's text.
PARSE_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}


def _text_schema(columns) -> str:
    return ", ".join([f"`{c.name}` STRING" for c in columns] + [f"`{CORRUPT}` STRING"])


def _parse(columns) -> SparkColumn:
    return F.from_json("raw_value", _text_schema(columns), PARSE_OPTIONS)


def _typed(name: str, type_: str) -> SparkColumn:
    """The text of field `name` converted to its type; null when it does not convert."""
    text = F.col(f"f.{name}")
    if type_ == schema.TIMESTAMP:
        return F.when(text.rlike(ISO_INSTANT), F.expr(f"try_cast(f.`{name}` AS TIMESTAMP)"))
    return F.expr(f"try_cast(f.`{name}` AS {schema.spark_type(type_).simpleString()})")


def _outside(value: SparkColumn, type_: str) -> SparkColumn:
    """True when `value` does not fit the column type: outside its range once rounded to its scale."""
    low, high = schema.VALUE_RANGES[type_]
    target = schema.spark_type(type_)
    rounded = F.round(value, target.scale) if isinstance(target, DecimalType) else value
    return ~rounded.between(F.lit(low), F.lit(high))


def _beyond_type(name: str, type_: str) -> SparkColumn:
    """True when field `name` holds a number its type cannot hold; checked before the cast."""
    wide = F.expr(f"try_cast(f.`{name}` AS {WIDE_DECIMAL})")
    return F.when(wide.isNull(), F.col(f"f.{name}").rlike(NUMBER)).otherwise(_outside(wide, type_))


def revenue(quantity: SparkColumn, unit_price: SparkColumn, discount: SparkColumn) -> SparkColumn:
    """An order line's revenue. Computed exactly in a wider decimal; validation checks it fits MONEY."""
    return quantity * unit_price - discount


def kafka_source_columns(df: DataFrame) -> DataFrame:
    """Kafka's key/value bytes as text plus the record's coordinates. Bytes that are not UTF-8
    become U+FFFD: a string column holding them would break every reader of the table."""
    key, value = F.col("key").cast("string"), F.col("value").cast("string")
    return df.select(
        F.make_valid_utf8(key).alias("kafka_key"),
        F.make_valid_utf8(value).alias("raw_value"),
        "topic",
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.is_valid_utf8(value).alias("utf8_value"),
    )


def partition_time() -> SparkColumn:
    """The time a Kafka record is filed under in bronze and quarantine: its event time when the
    payload has a usable one, else its Kafka time. A replay computes it again the same."""
    return F.coalesce(F.col("event_time"), F.col("kafka_timestamp"))


def to_bronze(records: DataFrame) -> DataFrame:
    """raw-events as received, plus the event's id, type and time where the payload allows.
    `records` are parse_and_validate's rows (or header_fields'): the payload is parsed once."""
    return records.select(
        *KAFKA_RECORD_COLUMNS,
        F.current_timestamp().alias("ingest_time"),
        "event_id",
        "event_type",
        "event_time",
        partition_time().alias("partition_time"),
    )


def header_fields(kafka_df: DataFrame) -> DataFrame:
    """Kafka records with only the event's id, type and time parsed: all that bronze needs."""
    header = [c for c in schema.COMMON_EVENT_COLUMNS if c.name in ("event_id", "event_type", "event_time")]
    parsed = kafka_source_columns(kafka_df).withColumn("f", _parse(header))
    return parsed.select(
        *KAFKA_RECORD_COLUMNS,
        *[_typed(c.name, c.type).alias(c.name) for c in header],
    )


def parse_and_validate(kafka_df: DataFrame, window: TimeWindow = TimeWindow()) -> DataFrame:
    """Parse raw-events payloads and decide each record's fate.

    The result has every event field converted to its type, plus `reason` (null for a valid
    record, else one of schema.QUARANTINE_REASONS) and `detail` (which field failed). A valid
    record's values all fit their column types, its revenue too, so no later cast can fail."""
    return RecordParser(window)(kafka_df)


class RecordParser:
    """parse_and_validate as expressions built once and applied to every micro-batch: its hundreds of
    column expressions were built again for every batch (1-2.4 s each time, measured under load)."""

    def __init__(self, window: TimeWindow = TimeWindow()):
        self.stages = _validation_stages(window)

    def __call__(self, kafka_df: DataFrame) -> DataFrame:
        *projections, result = self.stages
        parsed = kafka_source_columns(kafka_df)
        for columns in projections:
            parsed = parsed.withColumns(columns)
        return parsed.select(*result)


def _validation_stages(window: TimeWindow) -> list:
    """The projections of parse_and_validate, in order (each a dict of new columns), then its result's columns."""
    # Each field converted once, in a projection of its own: the checks below read the result
    # several times, and Spark does not merge projections that would repeat such work.
    parse = {"f": _parse(EVENT_FIELDS)}
    convert = {
        "json_ok": F.col("f").isNotNull() & F.col(f"f.{CORRUPT}").isNull(),
        **{TYPED + c.name: _typed(c.name, c.type) for c in EVENT_FIELDS},
    }

    def typed(name: str) -> SparkColumn:
        return F.col(TYPED + name)

    event_type = F.col("f.event_type")

    def fields_failing(test) -> SparkColumn:
        """Names of the fields, of this record's event type, for which `test(column)` holds."""
        per_type = [
            F.when(
                event_type == t, F.concat_ws(",", *[F.when(test(c), F.lit(c.name)) for c in schema.event_columns(t)])
            )
            for t in schema.EVENT_TYPES
        ]
        return F.coalesce(*per_type, F.lit(""))

    def beyond_type(c: schema.Column) -> SparkColumn:
        return _beyond_type(c.name, c.type) if c.type in schema.VALUE_RANGES else F.lit(False)

    missing = fields_failing(lambda c: F.col(f"f.{c.name}").isNull() if c.required else F.lit(False))
    bad_type = fields_failing(lambda c: F.col(f"f.{c.name}").isNotNull() & typed(c.name).isNull() & ~beyond_type(c))
    lowest = {name: (low, inclusive) for name, low, inclusive in RANGES}

    def out_of_range_rule(c: schema.Column) -> SparkColumn:
        if c.name not in lowest:
            return F.lit(False)
        low, inclusive = lowest[c.name]
        return (typed(c.name) < low) if inclusive else (typed(c.name) <= low)

    line_revenue = revenue(*[typed(name) for name in ("quantity", "unit_price", "discount")])
    numeric = [c for c in EVENT_FIELDS if c.type in schema.VALUE_RANGES]
    out_of_range = F.concat_ws(
        ",",
        *[F.when(beyond_type(c) | out_of_range_rule(c), F.lit(c.name)) for c in numeric],
        F.when(_outside(line_revenue, schema.MONEY), F.lit("revenue")),
    )
    event_time = typed("event_time")
    unknown_value = F.concat_ws(
        ",",
        *[
            F.when(F.col(f"f.{name}").isNotNull() & ~F.col(f"f.{name}").isin(*values), F.lit(name))
            for name, values in ENUMS.items()
        ],
    )
    checks = [
        (~F.col("utf8_value"), schema.REASON_BAD_JSON, F.lit("payload is not UTF-8")),
        (~F.col("json_ok"), schema.REASON_BAD_JSON, F.lit("payload is not a JSON object")),
        (event_type.isNull(), schema.REASON_MISSING_FIELD, F.lit("event_type")),
        (
            ~event_type.isin(*schema.EVENT_TYPES),
            schema.REASON_UNKNOWN_TYPE,
            F.concat(F.lit("event_type "), event_type),
        ),
        (F.col("_missing") != "", schema.REASON_MISSING_FIELD, F.col("_missing")),
        (F.col("_bad_type") != "", schema.REASON_BAD_TYPE, F.col("_bad_type")),
        (
            window.excludes(event_time),
            schema.REASON_IMPLAUSIBLE_TIME,
            F.format_string(
                "event_time %s is more than %d days before or %d seconds after its Kafka time %s",
                event_time.cast("string"),
                F.lit(window.max_age_days),
                F.lit(window.max_lead_seconds),
                F.col("kafka_timestamp").cast("string"),
            ),
        ),
        (F.col("_out_of_range") != "", schema.REASON_OUT_OF_RANGE, F.col("_out_of_range")),
        (F.col("_unknown_value") != "", schema.REASON_UNKNOWN_VALUE, F.col("_unknown_value")),
    ]
    reason = reduce(
        lambda acc, chk: acc.when(chk[0], F.lit(chk[1])), checks[1:], F.when(checks[0][0], F.lit(checks[0][1]))
    )
    detail = reduce(lambda acc, chk: acc.when(chk[0], chk[2]), checks[1:], F.when(checks[0][0], checks[0][2]))
    return [
        parse,
        convert,
        {"_missing": missing, "_bad_type": bad_type, "_out_of_range": out_of_range, "_unknown_value": unknown_value},
        {"reason": reason, "detail": detail},
        [*KAFKA_RECORD_COLUMNS, "reason", "detail", *[typed(c.name).alias(c.name) for c in EVENT_FIELDS]],
    ]


def to_quarantine(rejected: DataFrame, read_at: SparkColumn | None = None) -> DataFrame:
    """Rejected records in the quarantine table's shape, partitioned like bronze: by the record's
    own time, which a replay computes again the same (the read time would not)."""
    computed = {
        "ingest_time": read_at if read_at is not None else F.current_timestamp(),
        "partition_time": partition_time(),
    }
    return rejected.select(
        *[
            computed.get(c.name, F.col(c.name)).cast(schema.spark_type(c.type)).alias(c.name)
            for c in schema.QUARANTINE_TABLE.columns
        ]
    )


def unwritable(kafka_df: DataFrame, error: str) -> DataFrame:
    """Records whose write failed on their data, as quarantine rows built only from what cannot
    fail: their Kafka coordinates, raw payload and the header fields bronze parses."""
    failed = to_bronze(header_fields(kafka_df)).withColumns(
        {"reason": F.lit(schema.REASON_WRITE_FAILED), "detail": F.lit(error)}
    )
    return to_quarantine(failed)


def valid_events(records: DataFrame, kafka_record: bool = False) -> DataFrame:
    """parse_and_validate's valid rows, one per event (a duplicate is the same event sent again),
    with the Kafka record they came in (key, payload, coordinates) only when asked for."""
    valid = records.where(F.col("reason").isNull()).drop("reason", "detail")
    if not kafka_record:
        valid = valid.drop(*KAFKA_RECORD_COLUMNS)
    return valid.dropDuplicates(["event_id"])


def is_late(allowed_delay_seconds: int) -> SparkColumn:
    """A record is late when it was sent more than the allowed delay after it happened. Each
    record's own send time stands in for the watermark, so the decision does not depend on how
    the stream was cut into micro-batches and a replay after a crash decides the same."""
    lag = F.unix_micros(F.col("ingest_time")) - F.unix_micros(F.col("event_time"))
    return lag > F.lit(allowed_delay_seconds * 1_000_000)


def late_records(valid: DataFrame, allowed_delay_seconds: int) -> DataFrame:
    """Valid events too late for session building, as quarantine rows (they stay in silver)."""
    late = valid.where(is_late(allowed_delay_seconds))
    lag = (F.unix_micros("ingest_time") - F.unix_micros("event_time")) / 1e6
    return late.withColumns(
        {
            "reason": F.lit(schema.REASON_LATE),
            "detail": F.format_string(
                "sent %.0fs after it happened (allowed %ds); not counted in sessions", lag, F.lit(allowed_delay_seconds)
            ),
        }
    )


# A timestamp as text that Spark reads back as a literal in the session's time zone (UTC); its
# text order is its time order.
TIMESTAMP_TEXT = "yyyy-MM-dd HH:mm:ss.SSSSSS"


# What a micro-batch writes, named as batch_outline's columns: bronze takes every record.
BATCH_WRITES = ("records", "page_views", "purchases", "rejected", "late")
HOUR_MICROS = 3_600_000_000


def batch_outline(records: DataFrame, allowed_delay_seconds: int) -> DataFrame:
    """What each UTC hour of a batch holds, in one pass over parse_and_validate's rows: for each of
    BATCH_WRITES (every record, valid page views and cart adds, order lines, rejected and late
    records) the first and last partition time of its rows (`<write>_first`, `<write>_last`, unix
    microseconds; null without rows), and the first and last on-time event (the span of the sessions
    to rebuild). A valid record's partition time is its event time."""
    valid = F.col("reason").isNull()
    writes = {
        "records": F.lit(True),
        "page_views": valid & F.col("event_type").isin(schema.PAGE_VIEW, schema.ADD_TO_CART),
        "purchases": valid & (F.col("event_type") == schema.PURCHASE),
        "rejected": ~valid,
        "late": valid & is_late(allowed_delay_seconds),
    }
    micros = F.unix_micros(partition_time())
    on_time = F.when(valid & ~is_late(allowed_delay_seconds), F.col("event_time"))
    spans = []
    for write in BATCH_WRITES:
        of_write = F.when(writes[write], micros)
        spans += [F.min(of_write).alias(f"{write}_first"), F.max(of_write).alias(f"{write}_last")]
    return records.groupBy(F.floor(micros / HOUR_MICROS).alias("hour")).agg(
        *spans,
        F.date_format(F.min(on_time), TIMESTAMP_TEXT).alias("first_on_time"),
        F.date_format(F.max(on_time), TIMESTAMP_TEXT).alias("last_on_time"),
    )


def _project(df: DataFrame, table: schema.Table) -> DataFrame:
    return df.select(*[F.col(c.name).cast(schema.spark_type(c.type)).alias(c.name) for c in table.columns])


def to_page_views(valid: DataFrame) -> DataFrame:
    """Page views and cart adds (the clickstream), with derived fields."""
    clicks = valid.where(F.col("event_type").isin(schema.PAGE_VIEW, schema.ADD_TO_CART))
    product_from_url = F.regexp_extract("page_url", r"^/p/([^/?#]+)", 1)
    return _project(
        clicks.withColumns(
            {
                "page_type": F.coalesce("page_type", F.lit("product")),
                "product_id": F.coalesce("product_id", F.when(product_from_url != "", product_from_url)),
                "event_date": F.to_date("event_time"),
            }
        ),
        schema.PAGE_VIEWS,
    )


def to_purchases(valid: DataFrame, products: DataFrame) -> DataFrame:
    """Order lines with their revenue, enriched from the product catalog as it stands now."""
    lines = valid.where(F.col("event_type") == schema.PURCHASE)
    catalog = products.select("product_id", F.col("category"), F.col("price").alias("list_price"))
    line_revenue = revenue(F.col("quantity"), F.col("unit_price"), F.col("discount"))
    return _project(
        lines.drop("category")
        .join(F.broadcast(catalog), "product_id", "left")
        .withColumns({"revenue": line_revenue, "event_date": F.to_date("event_time")}),
        schema.PURCHASES,
    )


def session_rows(page_views: DataFrame, purchases: DataFrame, events: DataFrame) -> DataFrame:
    """Session rows, in one aggregation of their silver rows (page views and cart adds, order
    lines) and a batch's events (its session starts and ends): first and last time seen, page
    views, distinct products viewed, cart adds, distinct orders and revenue, and where the session
    started from. Merging into an existing row keeps the earliest start and the latest end, so
    replaying a batch changes nothing."""
    common = ("session_id", "user_id", "event_type", "event_time")
    starts_and_ends = events.where(F.col("event_type").isin(schema.SESSION_START, schema.SESSION_END))
    rows = (
        page_views.select(*common, "page_type", "product_id")
        .unionByName(purchases.select(*common, "order_id", "revenue"), allowMissingColumns=True)
        .unionByName(starts_and_ends.select(*common, "device", "referrer", "country"), allowMissingColumns=True)
    )
    event_type = F.col("event_type")
    is_view, is_order = event_type == schema.PAGE_VIEW, event_type == schema.PURCHASE

    def started_with(name: str) -> SparkColumn:
        return F.first(F.when(event_type == schema.SESSION_START, F.col(name)), ignorenulls=True).alias(name)

    def distinct(value: SparkColumn) -> SparkColumn:
        return F.size(F.collect_set(value))  # count_distinct would plan a second shuffle

    # The user of a click comes first, then an order line's, then a session event's.
    source = F.when(event_type.isin(schema.PAGE_VIEW, schema.ADD_TO_CART), 0).when(is_order, 1).otherwise(2)
    sessions = rows.groupBy("session_id").agg(
        F.min_by("user_id", source).alias("user_id"),
        F.min("event_time").alias("session_start"),
        F.max("event_time").alias("session_end"),
        started_with("device"),
        started_with("referrer"),
        started_with("country"),
        F.count(F.when(is_view, 1)).alias("page_views"),
        distinct(F.when(is_view & (F.col("page_type") == "product"), F.col("product_id"))).alias("products_viewed"),
        F.count(F.when(event_type == schema.ADD_TO_CART, 1)).alias("cart_adds"),
        distinct(F.when(is_order, F.col("order_id"))).alias("orders"),
        F.sum(F.when(is_order, F.col("revenue"))).alias("revenue"),
    )
    start, end, orders = F.col("session_start"), F.col("session_end"), F.col("orders")
    return _project(
        sessions.withColumns(
            {
                "duration_seconds": F.unix_seconds(end) - F.unix_seconds(start),
                # A sum of valid lines can still exceed MONEY: such a session's revenue is unknown (null).
                "revenue": F.when(orders == 0, F.lit(0)).when(
                    ~_outside(F.col("revenue"), schema.MONEY), F.col("revenue")
                ),
                "converted": orders > 0,
                "session_date": F.to_date(start),
            }
        ),
        schema.USER_SESSIONS,
    )


def latest_products(kafka_df: DataFrame) -> DataFrame:
    """Catalog records from the products topic, the newest per product; unparseable ones dropped
    (the catalog is the shop's own reference data, not customer input)."""
    src = kafka_source_columns(kafka_df)
    parsed = src.select(_parse(schema.PRODUCT_COLUMNS).alias("f"))
    typed = parsed.select(*[_typed(c.name, c.type).alias(c.name) for c in schema.PRODUCT_COLUMNS])
    complete = typed.dropna(subset=[c.name for c in schema.PRODUCT_COLUMNS if c.required])
    newest = F.max_by(F.struct(*[c.name for c in schema.PRODUCT_COLUMNS]), "updated_at")
    return complete.groupBy("product_id").agg(newest.alias("p")).select("p.*")
