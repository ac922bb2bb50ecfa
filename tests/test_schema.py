"""The one definition of names and schemas, and that every derivation of it agrees."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from pyiceberg import types as I
from pyspark.sql import types as T

from shopstream import schema
from shopstream.events.generator.shop import VALID, GeneratorConfig, Shop

EXPECTED = {  # column type -> (Spark, pyarrow, Iceberg)
    schema.STRING: (T.StringType(), pa.string(), I.StringType()),
    schema.INT: (T.IntegerType(), pa.int32(), I.IntegerType()),
    schema.LONG: (T.LongType(), pa.int64(), I.LongType()),
    schema.DOUBLE: (T.DoubleType(), pa.float64(), I.DoubleType()),
    schema.BOOLEAN: (T.BooleanType(), pa.bool_(), I.BooleanType()),
    schema.TIMESTAMP: (T.TimestampType(), pa.timestamp("us", tz="UTC"), I.TimestamptzType()),
    schema.DATE: (T.DateType(), pa.date32(), I.DateType()),
    schema.MONEY: (T.DecimalType(12, 2), pa.decimal128(12, 2), I.DecimalType(12, 2)),
    schema.RATE: (T.DecimalType(12, 6), pa.decimal128(12, 6), I.DecimalType(12, 6)),
}


def test_topic_names_are_the_documented_ones():
    assert schema.ALL_TOPICS == ("raw-events", "page-views", "purchases", "user-sessions", "products")
    assert schema.COMPACTED_TOPICS == {"products"}
    assert set(schema.EVENT_TOPIC.values()) == {"page-views", "purchases", "user-sessions"}


def test_type_vocabulary_maps_to_every_engine():
    assert set(EXPECTED) == set(schema.TYPES)
    for type_, (spark, arrow, iceberg) in EXPECTED.items():
        assert schema.spark_type(type_) == spark
        assert schema.arrow_type(type_) == arrow
        assert schema.iceberg_type(type_) == iceberg


@pytest.mark.parametrize("table", list(schema.TABLES.values()), ids=lambda t: t.name)
def test_spark_arrow_and_iceberg_schemas_agree(table):
    spark = schema.spark_schema(table.columns)
    arrow = schema.arrow_schema(table.columns)
    iceberg = schema.iceberg_schema(table.columns)
    assert [f.name for f in spark.fields] == [f.name for f in arrow] == [f.name for f in iceberg.fields] == table.names
    for column, s, a, i in zip(table.columns, spark.fields, arrow, iceberg.fields, strict=True):
        assert s.nullable == a.nullable == (not i.required) == (not column.required), column.name
        assert (s.dataType, a.type, i.field_type) == EXPECTED[column.type], column.name
    if table.partition_day_of:
        assert table.column(table.partition_day_of).type in (schema.TIMESTAMP, schema.DATE)


def test_parse_schema_for_untrusted_json_is_all_nullable():
    parsed = schema.spark_schema(schema.event_columns(schema.PURCHASE), all_nullable=True)
    assert all(f.nullable for f in parsed.fields)
    assert parsed["discount"].dataType == T.DecimalType(12, 2)


def test_topic_columns_merge_event_types():
    clickstream = {c.name: c for c in schema.topic_columns(schema.TOPIC_PAGE_VIEWS)}
    # page_view and add_to_cart share the page-views topic: fields of only one become optional.
    assert clickstream["page_type"].required is False
    assert clickstream["quantity"].required is False
    assert clickstream["product_id"].required is False
    assert clickstream["event_id"].required is True
    raw = {c.name for c in schema.topic_columns(schema.TOPIC_RAW_EVENTS)}
    assert {"order_id", "device", "page_type", "discount"} <= raw
    assert schema.topic_columns(schema.TOPIC_PRODUCTS) == schema.PRODUCT_COLUMNS
    with pytest.raises(KeyError):
        schema.topic_columns("nope")


def test_generated_json_matches_the_event_schema():
    shop = Shop(GeneratorConfig(events_per_day=3000, malformed_fraction=0.0, duplicate_fraction=0.0))
    seen = set()
    for record in shop.records():
        body = json.loads(record.value)
        columns = schema.event_columns(body["event_type"])
        required = {c.name for c in columns if c.required}
        assert required <= body.keys() <= {c.name for c in columns}
        for c in columns:
            value = body.get(c.name)
            if value is None:
                continue
            if c.type in (schema.MONEY, schema.DOUBLE):
                assert isinstance(value, float) and round(value, 2) == value
            elif c.type == schema.INT:
                assert isinstance(value, int)
            elif c.type == schema.TIMESTAMP:
                assert value.endswith("Z") and len(value) == len("2026-11-01T00:00:00.000000Z")
            else:
                assert isinstance(value, str)
        assert record.kind == VALID
        assert record.topic == schema.EVENT_TOPIC[body["event_type"]]
        seen.add(body["event_type"])
    assert seen == set(schema.EVENT_TYPES)


def test_column_types_are_checked():
    with pytest.raises(ValueError, match="unknown type"):
        schema.Column("x", "varchar")
