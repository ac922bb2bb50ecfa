"""The event generator's command line: simulate the shop and send its events to Kafka."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from shopstream import schema, settings
from shopstream.cli import iso_date
from shopstream.events.generator.shop import DUPLICATE, MALFORMED, VALID, Funnel, GeneratorConfig, Record, Shop


class GeneratorError(RuntimeError):
    pass


class Summary:
    """What was sent, counted the way downstream checks need it."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.valid_by_type: Counter[str] = Counter()
        self.valid_by_day: dict[str, Counter[str]] = defaultdict(Counter)
        self.malformed_by_reason: Counter[str] = Counter()
        self.late = 0
        self.products = 0
        self.messages = 0

    def add(self, record: Record) -> None:
        if record.topic == schema.TOPIC_PRODUCTS:
            self.products += 1
            self.messages += 1
            return
        self.messages += 2  # raw-events and the typed topic
        self.kinds[record.kind] += 1
        if record.kind == VALID:
            self.valid_by_type[record.event_type] += 1
            self.valid_by_day[record.event_time.date().isoformat()][record.event_type] += 1
            self.late += record.late
        elif record.kind == MALFORMED:
            assert record.reason is not None, "a malformed record carries its quarantine reason"
            self.malformed_by_reason[record.reason] += 1

    @property
    def events(self) -> int:
        return sum(self.kinds.values())

    def as_dict(self) -> dict:
        return {
            "events_sent": self.events,
            "messages_sent": self.messages,
            "valid": self.kinds[VALID],
            "duplicates": self.kinds[DUPLICATE],
            "malformed": self.kinds[MALFORMED],
            "late": self.late,
            "products": self.products,
            "valid_by_type": dict(sorted(self.valid_by_type.items())),
            "valid_by_day": {day: dict(sorted(c.items())) for day, c in sorted(self.valid_by_day.items())},
            "malformed_by_reason": dict(sorted(self.malformed_by_reason.items())),
        }

    def render(self, seconds: float) -> str:
        lines = [
            f"sent {self.events:,} events ({self.messages:,} Kafka messages) in {seconds:.1f}s"
            f" = {self.events / max(seconds, 1e-9):,.0f} events/s",
            f"  valid {self.kinds[VALID]:,} · duplicates {self.kinds[DUPLICATE]:,}"
            f" · malformed {self.kinds[MALFORMED]:,} · late {self.late:,} · catalog products {self.products:,}",
        ]
        types = list(schema.EVENT_TYPES)
        lines.append("  " + "date".ljust(12) + "".join(t.rjust(15) for t in types))
        for day, counts in sorted(self.valid_by_day.items()):
            lines.append("  " + day.ljust(12) + "".join(f"{counts[t]:,}".rjust(15) for t in types))
        if self.malformed_by_reason:
            lines.append("  malformed: " + ", ".join(f"{r} {n}" for r, n in sorted(self.malformed_by_reason.items())))
        return "\n".join(lines)


def make_producer(
    bootstrap_servers: str, connect_timeout: float = 0.0, *, factory=None, sleep=time.sleep, clock=time.monotonic
):
    """A producer, once a broker answers. Until `connect_timeout` seconds have passed it tries again
    with a doubling pause (1 s up to 30 s), so a generator started before its broker (a cold cluster)
    waits instead of failing; 0 tries once."""
    from kafka.errors import NoBrokersAvailable

    if factory is None:
        from kafka import KafkaProducer

        factory = KafkaProducer
    deadline = clock() + connect_timeout
    pause, attempts = 1.0, 0
    while True:
        attempts += 1
        try:
            return factory(
                bootstrap_servers=bootstrap_servers,
                acks="all",
                linger_ms=20,
                batch_size=512 * 1024,
                compression_type="lz4",
                max_in_flight_requests_per_connection=5,
                retries=10,
                request_timeout_ms=30_000,
            )
        except NoBrokersAvailable:
            if clock() + pause > deadline:
                waited = f" ({attempts} attempts in {connect_timeout:.0f}s)" if attempts > 1 else ""
                raise GeneratorError(
                    f"cannot reach Kafka at {bootstrap_servers}: no broker answered{waited} "
                    "(is it running? `make kafka-up` starts the local one)"
                ) from None
            print(
                f"waiting for Kafka at {bootstrap_servers} (attempt {attempts}, next in {pause:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
            sleep(pause)
            pause = min(pause * 2, 30.0)


def send(
    records: Iterable[Record],
    bootstrap_servers: str,
    *,
    progress_total: int | None = None,
    show_progress: bool = True,
    pace_from: tuple[float, dt.datetime] | None = None,
    connect_timeout: float = 0.0,
) -> Summary:
    """Send every record to its topics and confirm delivery. With `pace_from` (wall-clock start,
    simulated start) each record waits until its send time comes round."""
    from tqdm import tqdm

    producer = make_producer(bootstrap_servers, connect_timeout)
    summary = Summary()
    failures: list[BaseException] = []
    bar = tqdm(
        total=progress_total, unit="ev", disable=not show_progress, file=sys.stderr, mininterval=0.5, dynamic_ncols=True
    )
    try:
        for record in records:
            if pace_from is not None:
                wall_start, sim_start = pace_from
                delay = wall_start + (record.ingest_time - sim_start).total_seconds() - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            targets = (
                (record.topic,) if record.topic == schema.TOPIC_PRODUCTS else (schema.TOPIC_RAW_EVENTS, record.topic)
            )
            for topic in targets:
                producer.send(topic, key=record.key, value=record.value).add_errback(failures.append)
            summary.add(record)
            if record.topic != schema.TOPIC_PRODUCTS:
                bar.update(1)
            if failures:
                break
    finally:
        bar.close()
        producer.flush(timeout=120)
        producer.close(timeout=30)
    if failures:
        raise GeneratorError(f"Kafka refused {len(failures)} message(s); first error: {failures[0]!r}")
    return summary


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = GeneratorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m shopstream.events.generator",
        description="Simulate an e-commerce shop and send its events to Kafka: every event to "
        f"'{schema.TOPIC_RAW_EVENTS}' and to its typed topic ({schema.TOPIC_PAGE_VIEWS}, {schema.TOPIC_PURCHASES}, "
        f"{schema.TOPIC_USER_SESSIONS}), keyed by user id; the catalog to the compacted "
        f"'{schema.TOPIC_PRODUCTS}' topic.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    settings.KAFKA_BOOTSTRAP.add_argument(parser, "--bootstrap-servers")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=0.0,
        help="seconds to keep trying while no broker answers (doubling pauses up to 30 s); 0 fails at once",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed: same seed, same events")
    time_group = parser.add_argument_group("time")
    time_group.add_argument(
        "--start-date", type=iso_date, default=defaults.start_date, help="first simulated day (UTC)"
    )
    time_group.add_argument("--days", type=_positive, default=defaults.days, help="simulated days to generate")
    time_group.add_argument(
        "--events-per-day",
        type=_positive,
        default=defaults.events_per_day,
        help="about this many events per simulated day (duplicates not counted)",
    )
    time_group.add_argument(
        "--rate",
        type=float,
        default=None,
        help="live mode: send about this many events per second, stamped with the current time, "
        "until interrupted or --duration ends (ignores --start-date/--days/--events-per-day)",
    )
    time_group.add_argument("--duration", type=float, default=None, help="live mode: stop after this many seconds")
    shop_group = parser.add_argument_group("shop")
    shop_group.add_argument("--products", type=_positive, default=defaults.products, help="catalog size")
    shop_group.add_argument("--users", type=_positive, default=defaults.users, help="customer count")
    shop_group.add_argument(
        "--funnel",
        action="append",
        default=[],
        metavar="STEP=P",
        help="override a funnel probability, repeatable; steps: "
        + ", ".join(f"{k}={v}" for k, v in vars(Funnel()).items()),
    )
    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--late-fraction",
        type=_fraction,
        default=defaults.late_fraction,
        help="events sent 2 minutes to --max-lateness after they happen",
    )
    faults.add_argument(
        "--max-lateness",
        type=float,
        default=defaults.max_lateness_seconds,
        help="seconds; the longest a late event lags",
    )
    faults.add_argument(
        "--duplicate-fraction",
        type=_fraction,
        default=defaults.duplicate_fraction,
        help="events sent twice with the same event_id",
    )
    faults.add_argument(
        "--malformed-fraction",
        type=_fraction,
        default=defaults.malformed_fraction,
        help="events broken on purpose: bad JSON, a missing field, a wrong type or a negative price",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--summary-file", type=Path, default=None, help="also write the summary as JSON here")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--dry-run", action="store_true", help="generate and count, send nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        live = args.rate is not None
        if live and args.rate <= 0:
            raise ValueError("--rate must be positive")
        if args.connect_timeout < 0:
            raise ValueError("--connect-timeout must not be negative")
        config = GeneratorConfig(
            seed=args.seed,
            start_date=args.start_date,
            days=args.days,
            events_per_day=round(args.rate * 86_400) if live else args.events_per_day,
            products=args.products,
            users=args.users,
            funnel=Funnel.parse(args.funnel),
            late_fraction=args.late_fraction,
            max_lateness_seconds=args.max_lateness,
            duplicate_fraction=args.duplicate_fraction,
            malformed_fraction=args.malformed_fraction,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shop = Shop(config)
    started = time.monotonic()
    if live:
        now = dt.datetime.now(dt.UTC)
        # The shop opens a quarter of an hour early, unseen: sessions already under way when sending starts
        # give the requested rate from the first second instead of a slow ramp-up.
        warm = shop.records(live_from=now - dt.timedelta(seconds=LIVE_WARM_UP_SECONDS))
        stream = itertools.chain(shop.catalog(), _live_window(warm, now, args.duration))
        total, pace = None, (started, now)
    else:
        stream = itertools.chain(shop.catalog(), shop.records())
        total, pace = round(config.events_per_day * config.days * (1 + config.duplicate_fraction)), None
    try:
        if args.dry_run:
            summary = Summary()
            for record in stream:
                summary.add(record)
        else:
            summary = send(
                stream,
                args.bootstrap_servers,
                progress_total=total,
                show_progress=not args.no_progress,
                pace_from=pace,
                connect_timeout=args.connect_timeout,
            )
    except GeneratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything sent before that was delivered", file=sys.stderr)
        return 130
    print(summary.render(time.monotonic() - started))
    if args.summary_file:
        args.summary_file.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return 0


LIVE_WARM_UP_SECONDS = 900


def _live_window(records, start: dt.datetime, duration: float | None):
    """The records sent from `start` on, for `duration` seconds (or forever)."""
    for record in records:
        offset = (record.ingest_time - start).total_seconds()
        if offset < 0:
            continue
        if duration is not None and offset > duration:
            return
        yield record
