"""The simulated shop: determinism, funnel behaviour, and the fault fractions it promises."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter, defaultdict

import pytest

from shopstream import schema
from shopstream.events.generator.cli import GeneratorError, Summary, build_parser, make_producer
from shopstream.events.generator.cli import main as generator_main
from shopstream.events.generator.shop import DUPLICATE, MALFORMED, VALID, Funnel, GeneratorConfig, Shop


def records(**changes):
    return list(Shop(GeneratorConfig(**changes)).records())


@pytest.fixture(scope="module")
def day():
    """About 60k events with generous fault fractions, so the fractions can be measured."""
    return records(seed=11, events_per_day=60_000, late_fraction=0.05, duplicate_fraction=0.04, malformed_fraction=0.03)


def within(observed: int, trials: int, p: float, sigmas: float = 4.0) -> bool:
    """`observed` successes out of `trials` agree with probability `p` (binomial, ~4 sigma)."""
    return abs(observed - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p)) + 1


def test_same_seed_same_events_different_seed_different_events():
    first = records(seed=5, events_per_day=4000)
    again = records(seed=5, events_per_day=4000)
    other = records(seed=6, events_per_day=4000)
    assert [(r.topic, r.key, r.value) for r in first] == [(r.topic, r.key, r.value) for r in again]
    assert [r.value for r in first] != [r.value for r in other]
    assert Shop(GeneratorConfig(seed=5)).catalog() == Shop(GeneratorConfig(seed=5)).catalog()


def test_events_per_day_and_days(day):
    events = [r for r in day if r.kind != DUPLICATE]
    assert 0.9 * 60_000 <= len(events) <= 1.1 * 60_000
    two_days = records(seed=3, days=2, events_per_day=5000, late_fraction=0.0)
    dates = Counter(r.event_time.date() for r in two_days)
    assert set(dates) <= {dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)}
    assert dates[dt.date(2026, 11, 1)] > 4000 and dates[dt.date(2026, 11, 2)] > 4000


def test_fault_fractions_within_tolerance(day):
    originals = [r for r in day if r.kind != DUPLICATE]
    kinds = Counter(r.kind for r in day)
    n = len(originals)
    assert within(kinds[MALFORMED], n, 0.03)
    valid = kinds[VALID]
    assert within(kinds[DUPLICATE], valid, 0.04)
    assert within(sum(r.late for r in originals), n, 0.05)


def test_late_events_arrive_late_and_out_of_order(day):
    late = [r for r in day if r.late and r.kind == VALID]
    on_time = [r for r in day if not r.late and r.kind == VALID]
    assert all(120 <= r.lateness_seconds <= 3 * 3600 + 1 for r in late)
    assert all(0 < r.lateness_seconds <= 2.0 for r in on_time)
    sent = [r.ingest_time for r in day if r.kind != DUPLICATE]
    assert sent == sorted(sent), "records go out in the order they are sent"
    event_times = [r.event_time for r in day]
    assert event_times != sorted(event_times), "late events break event-time order"
    # ingest_time in the payload is the send time.
    sample = late[0]
    assert json.loads(sample.value)["ingest_time"].startswith(sample.ingest_time.strftime("%Y-%m-%dT%H:%M:%S"))


def test_duplicates_repeat_a_valid_event_exactly(day):
    sent_before = {}
    for r in day:
        if r.kind == VALID:
            sent_before[json.loads(r.value)["event_id"]] = r.value
        elif r.kind == DUPLICATE:
            event_id = json.loads(r.value)["event_id"]
            assert sent_before[event_id] == r.value
    event_ids = Counter(json.loads(r.value)["event_id"] for r in day if r.kind == VALID)
    assert max(event_ids.values()) == 1, "event ids are unique"


def test_malformed_records_really_are_malformed(day):
    reasons = Counter()
    for r in (r for r in day if r.kind == MALFORMED):
        reasons[r.reason] += 1
        if r.reason == schema.REASON_BAD_JSON:
            with pytest.raises(json.JSONDecodeError):
                json.loads(r.value)
            continue
        body = json.loads(r.value)
        columns = schema.event_columns(r.event_type)
        if r.reason == schema.REASON_MISSING_FIELD:
            assert {c.name for c in columns if c.required} - body.keys()
        elif r.reason == schema.REASON_BAD_TYPE:
            assert body.get("quantity") == "three" or body["event_time"] == "yesterday afternoon"
        elif r.reason == schema.REASON_OUT_OF_RANGE:
            assert body["unit_price"] < 0
    assert set(reasons) == {
        schema.REASON_BAD_JSON,
        schema.REASON_MISSING_FIELD,
        schema.REASON_BAD_TYPE,
        schema.REASON_OUT_OF_RANGE,
    }


def _sessions(recs):
    sessions = defaultdict(list)
    for r in recs:
        if r.kind == VALID:
            body = json.loads(r.value)
            sessions[body["session_id"]].append(body)
    return sessions


def test_funnel_steps_follow_their_probabilities():
    funnel = Funnel()
    shop = Shop(
        GeneratorConfig(
            seed=12, events_per_day=30_000, late_fraction=0.0, duplicate_fraction=0.0, malformed_fraction=0.0
        )
    )
    profiles = {u.user_id: u.profile for u in shop.users}
    sessions = _sessions(shop.records())
    cart_pages = checkouts = orders = 0
    expected_orders = 0.0
    for events in sessions.values():
        pages = [e.get("page_type") for e in events if e["event_type"] == schema.PAGE_VIEW]
        cart_pages += "cart" in pages
        if "checkout" in pages:
            checkouts += 1
            expected_orders += min(1.0, funnel.purchase * profiles[events[0]["user_id"]].purchase_mult)
            orders += any(e["event_type"] == schema.PURCHASE for e in events)
        types = [e["event_type"] for e in events]
        assert types[0] == schema.SESSION_START
        purchases = [e for e in events if e["event_type"] == schema.PURCHASE]
        if purchases:
            assert "checkout" in pages
            assert len({p["order_id"] for p in purchases}) == 1
            carted = {e["product_id"] for e in events if e["event_type"] == schema.ADD_TO_CART}
            assert {p["product_id"] for p in purchases} == carted
    # The checkout step has no profile multiplier: it must match its probability directly.
    assert within(checkouts, cart_pages, funnel.checkout)
    # Completing an order is scaled by each customer's profile.
    assert abs(orders - expected_orders) <= 4 * math.sqrt(expected_orders) + 1


def test_funnel_settings_change_conversion():
    never = records(seed=9, events_per_day=5000, funnel=Funnel(purchase=0.0))
    assert not any(r.event_type == schema.PURCHASE for r in never)
    eager = records(
        seed=9, events_per_day=5000, malformed_fraction=0.0, funnel=Funnel(view_cart=1, checkout=1, purchase=1)
    )
    for events in _sessions(eager).values():
        carted = any(e["event_type"] == schema.ADD_TO_CART for e in events)
        pages = [e.get("page_type") for e in events]
        assert carted == ("cart" in pages) == ("checkout" in pages), (
            "with those steps certain, a cart leads to checkout"
        )


def test_funnel_and_config_validation():
    with pytest.raises(ValueError, match="outside"):
        Funnel(checkout=1.5)
    with pytest.raises(ValueError, match="bad funnel setting"):
        Funnel.parse(["checkouts=0.5"])
    assert Funnel.parse(["checkout=0.25"]).checkout == 0.25
    with pytest.raises(ValueError):
        GeneratorConfig(late_fraction=1.0)


def test_discounts_and_money_are_exact(day):
    for r in day:
        if r.kind == VALID and r.event_type == schema.PURCHASE:
            body = json.loads(r.value)
            assert body["unit_price"] > 0 and body["quantity"] > 0
            assert 0 <= body["discount"] < body["unit_price"] * body["quantity"]


def test_summary_counts_match_records(day):
    summary = Summary()
    for r in day:
        summary.add(r)
    result = summary.as_dict()
    assert result["valid"] == sum(r.kind == VALID for r in day)
    assert result["messages_sent"] == 2 * len(day)
    assert sum(result["valid_by_type"].values()) == result["valid"]
    assert sum(result["malformed_by_reason"].values()) == result["malformed"]


def test_cli_help_and_usage_errors(capsys):
    help_text = build_parser().format_help()
    for flag in (
        "--start-date",
        "--days",
        "--events-per-day",
        "--rate",
        "--seed",
        "--late-fraction",
        "--duplicate-fraction",
        "--malformed-fraction",
        "--funnel",
        "--bootstrap-servers",
    ):
        assert flag in help_text
    with pytest.raises(SystemExit) as exc:
        generator_main(["--start-date", "2026-13-01"])
    assert exc.value.code == 2
    assert "is not a date" in capsys.readouterr().err
    assert generator_main(["--funnel", "nope=1", "--dry-run"]) == 2


def test_cli_dry_run_summary_file(tmp_path, capsys):
    out = tmp_path / "summary.json"
    assert generator_main(["--dry-run", "--no-progress", "--events-per-day", "2000", "--summary-file", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["products"] == 200 and summary["valid"] > 1500
    assert "events/s" in capsys.readouterr().out


def test_live_mode_sends_at_the_requested_rate_from_the_start(tmp_path):
    out = tmp_path / "summary.json"
    code = generator_main(
        [
            "--dry-run",
            "--no-progress",
            "--rate",
            "50",
            "--duration",
            "10",
            "--late-fraction",
            "0",
            "--duplicate-fraction",
            "0",
            "--malformed-fraction",
            "0",
            "--summary-file",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads(out.read_text())
    # 50 events/s for 10 s, sessions already under way when sending starts (Poisson noise allowed).
    assert 350 <= summary["events_sent"] <= 650
    assert summary["valid_by_type"]["page_view"] > summary["valid_by_type"].get("session_start", 0)


class _Clock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _broker_after(failures: int):
    from kafka.errors import NoBrokersAvailable

    calls = []

    def factory(**settings):
        calls.append(settings["bootstrap_servers"])
        if len(calls) <= failures:
            raise NoBrokersAvailable()
        return "producer"

    return factory, calls


def test_generator_waits_for_a_broker_that_starts_late(capsys):
    clock = _Clock()
    factory, calls = _broker_after(failures=3)
    producer = make_producer("kafka:9092", 60, factory=factory, sleep=clock.sleep, clock=lambda: clock.now)
    assert producer == "producer" and len(calls) == 4
    assert clock.sleeps == [1.0, 2.0, 4.0]  # doubling pauses
    assert capsys.readouterr().err.count("waiting for Kafka at kafka:9092") == 3


def test_generator_gives_up_at_its_deadline_with_the_attempts_named():
    clock = _Clock()
    factory, calls = _broker_after(failures=10**6)
    with pytest.raises(
        GeneratorError, match=r"cannot reach Kafka at kafka:9092: no broker answered \(8 attempts in 100s\)"
    ):
        make_producer("kafka:9092", 100, factory=factory, sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]  # capped at 30 s; one more would pass 100 s
    assert len(calls) == 8


def test_generator_refuses_a_negative_connect_timeout(capsys):
    assert generator_main(["--connect-timeout", "-1", "--dry-run"]) == 2
    assert "--connect-timeout must not be negative" in capsys.readouterr().err
