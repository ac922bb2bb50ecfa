"""Charts of the benchmark results: reads bench/results/*.json and writes one PNG per chart.

    .venv/bin/python bench/charts.py [--results bench/results] [--out DIR ...]

The PNGs go beside the JSON unless --out names other folders (repeat it for several: `make bench`
writes bench/results/ and bench/charts/, the committed copy that bench/README.md shows). A chart
whose data is missing is skipped with one line naming the file or key; the others are still drawn.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

RESULTS = Path(__file__).resolve().parent / "results"
FIGURE_INCHES = (9.0, 5.0)
DPI = 100  # 900 x 500 pixels
GROWTH_TARGET = 1.3  # issue 13: a batch against 30x the data costs at most 1.3x the batch against 1x
FRESHNESS_SLACK_SECONDS = 5.0  # issue 13: freshness p95 at most the trigger + 5 s
TRIGGER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(millisecond|second|minute|hour)s?\s*$")
SECONDS_PER_UNIT = {"millisecond": 0.001, "second": 1.0, "minute": 60.0, "hour": 3600.0}


class MissingData(Exception):
    """A value a chart needs is absent, null or empty; the message is its dotted path."""


def need(data: Any, path: str, within: str = "") -> Any:
    """The value at the dotted `path` of nested dicts; `within` prefixes the path in the error."""
    value = data
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
        if value is None or value == [] or value == {}:
            raise MissingData(within + path)
    return value


def new_figure() -> Figure:
    """An empty figure drawn by Agg; pyplot is never imported, so no display or GUI backend is needed."""
    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def label_log_axis(axis: Axis, values: Iterable[int]) -> None:
    """Ticks of a log axis at the measured values, written out in full (not as powers of ten)."""
    ticks = sorted(set(values))
    axis.set_ticks(ticks, [f"{tick:,}" for tick in ticks])
    axis.set_minor_locator(NullLocator())


def before_and_after(streaming: dict, key: str) -> list[tuple[str, str]]:
    """(label, key in streaming.json) of each catch-up run to draw: before and after when
    `throughput_before` has `key` too, else the one run."""
    try:
        need(streaming, f"throughput_before.{key}")
    except MissingData:
        return [("", "throughput")]
    return [("before", "throughput_before"), ("after", "throughput")]


def throughput_chart(streaming: dict) -> Figure:
    """The catch-up's events/s beside Kafka's raw consumer messages/s on the same topic."""
    runs = before_and_after(streaming, "pipeline_events_per_s")
    figure = new_figure()
    ax = figure.add_subplot()
    width = 0.38
    for position, (_, run) in enumerate(runs):
        pipeline = need(streaming, f"{run}.pipeline_events_per_s")
        raw = need(streaming, f"{run}.raw_consumer.messages_per_s")
        ratio = need(streaming, f"{run}.ratio_to_raw_consumer")
        first = position == 0  # one legend entry per kind of bar
        catch_up = ax.bar(
            position - width / 2,
            pipeline,
            width,
            color="tab:blue",
            label="streaming catch-up, events/s" if first else None,
        )
        consumer = ax.bar(
            position + width / 2,
            raw,
            width,
            color="tab:gray",
            label="Kafka's raw consumer, messages/s" if first else None,
        )
        ax.bar_label(catch_up, [f"{pipeline:,.0f}\n{ratio:.3g} of raw"], padding=2)
        ax.bar_label(consumer, [f"{raw:,.0f}"], padding=2)
    ax.set_xticks(range(len(runs)), [label or "this run" for label, _ in runs])
    # Log scale: the two rates are orders of magnitude apart and both must stay readable.
    ax.set_yscale("log")
    ax.margins(y=0.3)
    ax.set_ylabel("per second")
    ax.legend(loc="upper left")
    ax.set_title("Catch-up throughput against Kafka's own consumer (ratio: events/s over messages/s)")
    return figure


def steps_chart(streaming: dict) -> Figure:
    """Seconds spent in each step of the micro-batches over the whole catch-up."""
    runs = [
        (label or "catch-up", need(streaming, f"{run}.steps")) for label, run in before_and_after(streaming, "steps")
    ]
    steps = list(dict.fromkeys(step for _, seconds in runs for step in seconds))  # first seen, first drawn
    figure = new_figure()
    ax = figure.add_subplot()
    height = 0.8 / len(runs)
    for index, (label, seconds) in enumerate(runs):
        drawn = [step for step in steps if step in seconds]
        bars = ax.barh(
            [steps.index(step) + (index - (len(runs) - 1) / 2) * height for step in drawn],
            [seconds[step] for step in drawn],
            height,
            label=f"{label} (total {sum(seconds.values()):,.1f} s)",
        )
        ax.bar_label(bars, [f"{seconds[step]:,.1f} s" for step in drawn], padding=2)
    ax.set_yticks(range(len(steps)), steps)
    ax.invert_yaxis()  # the job's first step on top
    ax.margins(x=0.15)
    ax.set_xlabel("seconds over the catch-up")
    ax.legend(loc="lower right")
    ax.set_title("Time per step of the streaming job's micro-batches")
    return figure


def growth_chart(streaming: dict) -> Figure:
    """Seconds for the same micro-batch against tables already holding 1x, 10x, 30x its volume."""
    growth = need(streaming, "growth")
    points = [
        (
            need(point, "multiple", f"growth[{i}]."),
            need(point, "table_events", f"growth[{i}]."),
            need(point, "batch_seconds", f"growth[{i}]."),
        )
        for i, point in enumerate(growth)
    ]
    base = next((i for i, (multiple, _, _) in enumerate(points) if multiple == 1), None)
    if base is None:
        raise MissingData("growth entry with multiple 1")
    base_seconds = points[base][2]
    batch_events = need(growth[base], "batch_events", f"growth[{base}].")
    points.sort(key=lambda point: point[1])
    figure = new_figure()
    ax = figure.add_subplot()
    ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", label="seconds per batch")
    for multiple, table_events, seconds in points:
        ax.annotate(
            f"{multiple}x: {seconds:.1f} s, {seconds / base_seconds:.2f}x",
            (table_events, seconds),
            textcoords="offset points",
            xytext=(0, -18),
            ha="center",
        )
    target = GROWTH_TARGET * base_seconds
    ax.axhline(target, color="tab:red", linestyle="--", label=f"target: {GROWTH_TARGET}x the 1x batch ({target:.1f} s)")
    ax.set_xscale("log")  # the multiples 1, 10, 30 spread evenly
    label_log_axis(ax.xaxis, [p[1] for p in points])
    ax.set_ylim(bottom=0, top=max(target, *(p[2] for p in points)) * 1.25)
    ax.margins(x=0.2)
    ax.set_xlabel("events already in the tables")
    ax.set_ylabel("seconds per micro-batch")
    ax.legend(loc="lower right")
    ax.set_title(f"One micro-batch of {batch_events:,} events against growing tables")
    return figure


def trigger_seconds(trigger: str) -> float:
    """Spark's processing-time interval ("10 seconds", "1 minute") in seconds."""
    found = TRIGGER.match(trigger)
    if not found:
        raise MissingData(f"freshness.trigger as '<number> <unit>' (found {trigger!r})")
    return float(found[1]) * SECONDS_PER_UNIT[found[2]]


def freshness_chart(streaming: dict) -> Figure:
    """The share of page views queryable in silver within x seconds of their send (an ECDF), with
    p50, p95 and the target."""
    lags = sorted(need(streaming, "freshness.lags_seconds"))
    p50 = need(streaming, "freshness.p50_seconds")
    p95 = need(streaming, "freshness.p95_seconds")
    trigger = need(streaming, "freshness.trigger")
    target = trigger_seconds(trigger) + FRESHNESS_SLACK_SECONDS
    figure = new_figure()
    ax = figure.add_subplot()
    ax.step(lags, [(i + 1) / len(lags) for i in range(len(lags))], where="post", label=f"{len(lags):,} page views")
    ax.axvline(p50, color="tab:green", linestyle=":", label=f"p50 {p50:.1f} s")
    ax.axvline(p95, color="tab:orange", linestyle=":", label=f"p95 {p95:.1f} s")
    ax.axvline(
        target,
        color="tab:red",
        linestyle="--",
        label=f"target p95 {target:g} s (trigger + {FRESHNESS_SLACK_SECONDS:g} s)",
    )
    ax.set_xlim(0, max(lags[-1], target) * 1.05)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("seconds from send to the commit of the silver snapshot that holds the page view")
    ax.set_ylabel("share of page views")
    ax.legend(loc="lower right")
    ax.set_title(f"Freshness of silver page views, trigger: {trigger}")
    return figure


def plot_by_volume(ax: Axes, series: dict[int, float], **style: Any) -> None:
    volumes = sorted(series)
    ax.plot(volumes, [series[v] for v in volumes], marker="o", **style)


def gold_chart(batch: dict) -> Figure:
    """Seconds of each gold job (warm Spark session) and of DuckDB's same numbers, per daily volume;
    with the end-to-end gold run through Dagster when batch.json has `gold_day`."""
    runs = {int(volume): run for volume, run in need(batch, "runs").items()}
    jobs: dict[str, dict[int, float]] = {}
    duckdb: dict[str, dict[int, float]] = {"sales_seconds": {}, "products_seconds": {}}
    for volume, run in sorted(runs.items()):
        for job, timing in need(run, "jobs", f"runs.{volume}.").items():
            jobs.setdefault(job, {})[volume] = need(timing, "seconds", f"runs.{volume}.jobs.{job}.")
        for query, seconds in duckdb.items():
            seconds[volume] = need(run, f"duckdb.{query}", f"runs.{volume}.")
    volumes = set(runs)
    figure = new_figure()
    ax = figure.add_subplot()
    for job, seconds in jobs.items():
        plot_by_volume(ax, seconds, label=f"Spark: {job}")
    plot_by_volume(ax, duckdb["sales_seconds"], linestyle="--", color="black", label="DuckDB: daily sales")
    plot_by_volume(ax, duckdb["products_seconds"], linestyle=":", color="black", label="DuckDB: per-product figures")
    if batch.get("gold_day"):
        day = {
            need(point, "events_per_day", f"gold_day[{i}]."): need(point, "seconds", f"gold_day[{i}].")
            for i, point in enumerate(batch["gold_day"])
        }
        volumes |= set(day)
        plot_by_volume(ax, day, linewidth=3, color="tab:purple", label="whole gold day through Dagster")
    # Log-log: the volumes grow 4x per step and DuckDB is orders of magnitude below Spark.
    ax.set_xscale("log")
    ax.set_yscale("log")
    label_log_axis(ax.xaxis, volumes)
    ax.set_xlabel("events per day")
    ax.set_ylabel("seconds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # beside the plot: lines cross it
    ax.set_title("Gold jobs against volume (one warm Spark session) and DuckDB on the same files")
    return figure


@dataclass(frozen=True)
class Chart:
    png: str
    source: str  # the results file it is drawn from
    draw: Callable[[dict], Figure]


CHARTS = (
    Chart("throughput.png", "streaming.json", throughput_chart),
    Chart("steps.png", "streaming.json", steps_chart),
    Chart("growth.png", "streaming.json", growth_chart),
    Chart("freshness.png", "streaming.json", freshness_chart),
    Chart("gold.png", "batch.json", gold_chart),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of the JSON results")
    parser.add_argument(
        "--out", type=Path, action="append", help="a folder to write the PNGs to (repeatable; default: --results)"
    )
    args = parser.parse_args(argv)
    outs: list[Path] = args.out or [args.results]
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
    loaded: dict[str, dict | str] = {}  # file name -> its results, or why there are none
    for chart in CHARTS:
        source = args.results / chart.source
        if chart.source not in loaded:
            try:
                loaded[chart.source] = json.loads(source.read_text())
            except FileNotFoundError:
                loaded[chart.source] = f"{source} not found"
            except json.JSONDecodeError as error:
                loaded[chart.source] = f"{source} is not valid JSON ({error})"
        data = loaded[chart.source]
        if isinstance(data, str):
            print(f"skipped {chart.png}: {data}")
            continue
        try:
            figure = chart.draw(data)
        except MissingData as missing:
            print(f"skipped {chart.png}: {source} has no {missing}")
            continue
        for out in outs:
            figure.savefig(out / chart.png)
            print(f"wrote {out / chart.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
