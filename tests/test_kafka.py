"""The embedded Kafka broker and the generator against it: real broker, real messages."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections import Counter

import pytest
from kafka import KafkaConsumer, TopicPartition

from shopstream import schema
from shopstream.events.broker import KafkaBroker, free_port
from shopstream.events.broker import main as kafka_main
from shopstream.events.generator.cli import main as generator_main
from shopstream.runtime import SetupError

pytestmark = pytest.mark.kafka


def consume_all(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        messages = []
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=2000, max_records=50_000).values():
                messages.extend(batch)
        return messages
    finally:
        consumer.close()


def test_generator_round_trip_exact_counts(kafka_broker, tmp_path):
    summary_file = tmp_path / "summary.json"
    code = generator_main(
        [
            "--bootstrap-servers",
            kafka_broker.bootstrap_servers,
            "--events-per-day",
            "3000",
            "--seed",
            "21",
            "--no-progress",
            "--summary-file",
            str(summary_file),
        ]
    )
    assert code == 0
    summary = json.loads(summary_file.read_text())
    raw = consume_all(kafka_broker.bootstrap_servers, schema.TOPIC_RAW_EVENTS)
    assert len(raw) == summary["events_sent"]
    typed = {
        t: consume_all(kafka_broker.bootstrap_servers, t)
        for t in (schema.TOPIC_PAGE_VIEWS, schema.TOPIC_PURCHASES, schema.TOPIC_USER_SESSIONS)
    }
    assert sum(len(m) for m in typed.values()) == summary["events_sent"]
    assert summary["messages_sent"] == 2 * summary["events_sent"] + summary["products"]
    # Every valid event reached its typed topic, keyed by its user.
    valid_by_type = Counter()
    for topic, messages in typed.items():
        for m in messages:
            try:
                body = json.loads(m.value)
            except json.JSONDecodeError:
                continue
            if isinstance(body.get("event_type"), str) and body.get("user_id"):
                assert schema.EVENT_TOPIC[body["event_type"]] == topic
                assert m.key == body["user_id"].encode()
                valid_by_type[body["event_type"]] += 1
    for event_type, count in summary["valid_by_type"].items():
        assert valid_by_type[event_type] >= count  # plus duplicates and some malformed ones
    products = consume_all(kafka_broker.bootstrap_servers, schema.TOPIC_PRODUCTS)
    assert len(products) == summary["products"] == 200
    assert {m.key.decode() for m in products} == {json.loads(m.value)["product_id"] for m in products}


def test_broker_start_errors_are_one_clear_line(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SetupError, match=f"port {port} on 127.0.0.1 is already in use"):
            KafkaBroker(tmp_path / "a", port=port).start()
    monkeypatch.setenv("PATH", str(tmp_path))  # no java anywhere
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(SetupError, match="java not found on PATH"):
        KafkaBroker(tmp_path / "b", port=free_port()).start()


def test_missing_jars_and_maven_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", os.path.dirname(os.path.realpath(shutil.which("java"))))  # java, but no mvn
    with pytest.raises(SetupError, match="mvn not found"):
        KafkaBroker(tmp_path / "c", port=free_port()).start()


def test_generator_reports_unreachable_broker(capsys):
    port = free_port()  # nothing listens there
    assert generator_main(["--bootstrap-servers", f"127.0.0.1:{port}", "--events-per-day", "100", "--no-progress"]) == 1
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in capsys.readouterr().err


def test_cli_up_status_down(tmp_path, capsys):
    workdir, port = tmp_path / "broker", free_port()
    args = ["--dir", str(workdir), "--port", str(port)]
    try:
        assert kafka_main(["up", *args]) == 0
        out = capsys.readouterr().out
        assert f"Kafka broker up on 127.0.0.1:{port}" in out and "created 5" in out
        assert kafka_main(["status", *args]) == 0
        assert kafka_main(["up", *args]) == 0
        assert "already running" in capsys.readouterr().out
    finally:
        assert kafka_main(["down", *args]) == 0
    assert "stopped Kafka broker" in capsys.readouterr().out
    assert kafka_main(["status", *args]) == 3
    # Restarting on the same state keeps the topics (the storage is formatted once).
    try:
        assert kafka_main(["up", *args]) == 0
        assert "created" not in capsys.readouterr().out
    finally:
        kafka_main(["down", *args])


def test_a_cluster_id_that_starts_with_a_dash_still_formats(tmp_path, monkeypatch):
    from shopstream.events import broker as kafka_local

    monkeypatch.setattr(kafka_local, "_random_cluster_id", lambda: "-5bRrKkxQ3yzJ5a7o0Y8Uw")
    broker = KafkaBroker(tmp_path / "kafka", port=free_port()).start()
    try:
        assert "cluster.id=-5bRrKkxQ3yzJ5a7o0Y8Uw" in (tmp_path / "kafka" / "data" / "meta.properties").read_text()
    finally:
        broker.stop()
