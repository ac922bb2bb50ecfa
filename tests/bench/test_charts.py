"""bench/charts.py on small hand-made results, in about a second: each chart plots exactly the
values it is given, main writes valid PNGs of the expected size, and a chart whose file or key is
missing is skipped with one line saying which while the others are drawn.

The results below have the shapes streaming_bench.py and batch_bench.py write, including the keys
issue 13 adds to streaming.json (throughput.steps, throughput_before, growth, freshness.lags_seconds)
and batch.json's optional gold_day."""

from __future__ import annotations

import copy
import json
import struct

import pytest

from bench import charts

THROUGHPUT = {
    "events": 1034048,
    "raw_consumer": {"messages": 2068296, "messages_per_s": 533840.0, "mb_per_s": 150.2},
    "pipeline_events_per_s": 31000,
    "ratio_to_raw_consumer": 0.0581,
    "steps": {"products": 1.5, "bronze": 4.0, "page views": 9.5, "purchases": 2.25, "sessions": 6.0},
}
STREAMING = {
    "machine_cores": 2,
    "throughput": THROUGHPUT,
    "throughput_before": {
        **copy.deepcopy(THROUGHPUT),
        "pipeline_events_per_s": 6063,
        "ratio_to_raw_consumer": 0.0114,
        "steps": {"products": 20.0, "bronze": 7.5, "page views": 16.0, "purchases": 7.0, "quarantine": 5.5},
    },
    "growth": [
        {"multiple": 10, "table_events": 1000000, "batch_events": 100000, "batch_seconds": 8.9},
        {"multiple": 1, "table_events": 100000, "batch_events": 100000, "batch_seconds": 8.0},
        {"multiple": 30, "table_events": 3000000, "batch_events": 100000, "batch_seconds": 9.6},
    ],
    "freshness": {
        "trigger": "10 seconds",
        "p50_seconds": 8.9,
        "p95_seconds": 14.5,
        "lags_seconds": [12.0, 3.5, 8.9, 14.5, 6.25, 9.75, 11.0, 7.5],
    },
}
BATCH = {
    "machine_cores": 2,
    "spark_cold_start_seconds": 9.1,
    "runs": {
        str(volume): {
            "events": volume,
            "spark_startup_seconds": 1.2,
            "jobs": {
                "gold_sales_summary": {"seconds": 2.0 * scale, "rows": 1},
                "gold_product_analytics": {"seconds": 3.0 * scale, "rows": 500},
            },
            "duckdb": {"sales_seconds": 0.01 * scale, "products_seconds": 0.05 * scale},
        }
        for volume, scale in ((250000, 1), (1000000, 2), (4000000, 5))
    },
    "gold_day": [{"events_per_day": 1000000, "seconds": 40.0}, {"events_per_day": 250000, "seconds": 30.0}],
}


def without(data: dict, path: str) -> dict:
    """A deep copy of `data` with the key at the dotted `path` removed."""
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    del node[last]
    return data


def lines_by_label(figure) -> dict:
    [ax] = figure.axes
    return {line.get_label(): line for line in ax.get_lines()}


def test_throughput_bars_are_the_rates_before_and_after():
    [ax] = charts.throughput_chart(STREAMING).axes
    assert [bar.get_height() for bar in ax.patches] == [6063, 533840.0, 31000, 533840.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["before", "after"]
    labels = [t.get_text() for t in ax.texts]
    assert "6,063\n0.0114 of raw" in labels and "31,000\n0.0581 of raw" in labels


def test_throughput_without_before_is_one_pair():
    [ax] = charts.throughput_chart(without(STREAMING, "throughput_before")).axes
    assert [bar.get_height() for bar in ax.patches] == [31000, 533840.0]


def test_step_bars_are_the_seconds_of_each_step():
    [ax] = charts.steps_chart(STREAMING).axes
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["products", "bronze", "page views", "purchases", "quarantine", "sessions"]
    # before's bars first, then after's; each at its step's row (a step one run lacks has no bar there)
    bars = [(names[round(bar.get_y() + bar.get_height() / 2)], bar.get_width()) for bar in ax.patches]
    before = STREAMING["throughput_before"]["steps"]
    assert bars == [*before.items(), *THROUGHPUT["steps"].items()]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before (total 56.0 s)", "after (total 23.2 s)"]


def test_steps_without_before_is_one_run():
    [ax] = charts.steps_chart(without(STREAMING, "throughput_before.steps")).axes
    assert [bar.get_width() for bar in ax.patches] == list(THROUGHPUT["steps"].values())


def test_growth_plots_batch_seconds_against_table_size_with_the_target():
    lines = lines_by_label(charts.growth_chart(STREAMING))
    batches = lines["seconds per batch"]
    assert list(batches.get_xdata()) == [100000, 1000000, 3000000]
    assert list(batches.get_ydata()) == [8.0, 8.9, 9.6]
    [target] = [line for label, line in lines.items() if label.startswith("target")]
    assert list(target.get_ydata()) == pytest.approx([1.3 * 8.0] * 2)


def test_freshness_is_the_ecdf_of_the_lags_with_p50_p95_and_target():
    lines = lines_by_label(charts.freshness_chart(STREAMING))
    lags = STREAMING["freshness"]["lags_seconds"]
    ecdf = lines[f"{len(lags)} page views"]
    assert list(ecdf.get_xdata()) == sorted(lags)
    assert list(ecdf.get_ydata()) == [(i + 1) / len(lags) for i in range(len(lags))]
    assert lines["p50 8.9 s"].get_xdata()[0] == 8.9
    assert lines["p95 14.5 s"].get_xdata()[0] == 14.5
    assert lines["target p95 15 s (trigger + 5 s)"].get_xdata()[0] == 15.0


@pytest.mark.parametrize(("trigger", "seconds"), [("10 seconds", 10.0), ("1 minute", 60.0), ("500 milliseconds", 0.5)])
def test_trigger_in_spark_form(trigger, seconds):
    assert charts.trigger_seconds(trigger) == seconds


def test_gold_plots_each_job_duckdb_and_the_gold_day_against_volume():
    lines = lines_by_label(charts.gold_chart(BATCH))
    volumes = [250000, 1000000, 4000000]
    expected = {
        "Spark: gold_sales_summary": [2.0, 4.0, 10.0],
        "Spark: gold_product_analytics": [3.0, 6.0, 15.0],
        "DuckDB: daily sales": [0.01, 0.02, 0.05],
        "DuckDB: per-product figures": [0.05, 0.1, 0.25],
    }
    for label, seconds in expected.items():
        assert list(lines[label].get_xdata()) == volumes
        assert list(lines[label].get_ydata()) == pytest.approx(seconds)
    day = lines["whole gold day through Dagster"]
    assert (list(day.get_xdata()), list(day.get_ydata())) == ([250000, 1000000], [30.0, 40.0])
    assert "whole gold day through Dagster" not in lines_by_label(charts.gold_chart(without(BATCH, "gold_day")))


def png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's header; fails unless the file is a PNG."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


def write_results(folder, streaming=None, batch=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("streaming.json", streaming), ("batch.json", batch)):
        if data is not None:
            (folder / name).write_text(json.dumps(data))


def test_main_writes_every_chart_as_a_png_into_each_out_folder(tmp_path, capsys):
    write_results(tmp_path / "results", STREAMING, BATCH)
    outs = [tmp_path / "results", tmp_path / "charts"]
    assert charts.main(["--results", str(tmp_path / "results"), *(f"--out={out}" for out in outs)]) == 0
    pngs = [chart.png for chart in charts.CHARTS]
    assert pngs == ["throughput.png", "steps.png", "growth.png", "freshness.png", "gold.png"]
    for out in outs:
        assert sorted(p.name for p in out.glob("*.png")) == sorted(pngs)
        for png in pngs:
            assert png_size(out / png) == (900, 500)
    assert "skipped" not in capsys.readouterr().out


def test_pngs_go_beside_the_json_by_default(tmp_path):
    write_results(tmp_path, batch=BATCH)
    charts.main(["--results", str(tmp_path)])
    assert png_size(tmp_path / "gold.png") == (900, 500)


def test_missing_files_and_keys_are_skipped_with_one_line_each(tmp_path, capsys):
    streaming = without(without(STREAMING, "growth"), "freshness.lags_seconds")
    streaming["throughput"]["steps"] = {}  # empty counts as missing
    write_results(tmp_path, streaming)
    assert charts.main(["--results", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("skipped")] == [
        f"skipped steps.png: {tmp_path}/streaming.json has no throughput.steps",
        f"skipped growth.png: {tmp_path}/streaming.json has no growth",
        f"skipped freshness.png: {tmp_path}/streaming.json has no freshness.lags_seconds",
        f"skipped gold.png: {tmp_path}/batch.json not found",
    ]
    assert [p.name for p in tmp_path.glob("*.png")] == ["throughput.png"]


@pytest.mark.parametrize(
    ("streaming", "skipped"),
    [
        (without(STREAMING, "throughput.raw_consumer.messages_per_s"), "throughput.raw_consumer.messages_per_s"),
        (
            {**STREAMING, "growth": [point for point in STREAMING["growth"] if point["multiple"] != 1]},
            "growth entry with multiple 1",
        ),
        (
            {**STREAMING, "growth": [STREAMING["growth"][0], {"multiple": 1, "table_events": 100000}]},
            "growth[1].batch_seconds",
        ),
        (
            {**STREAMING, "freshness": {**STREAMING["freshness"], "trigger": "once"}},
            "freshness.trigger as '<number> <unit>' (found 'once')",
        ),
    ],
)
def test_partial_results_are_skipped_not_fatal(tmp_path, capsys, streaming, skipped):
    write_results(tmp_path, streaming)
    assert charts.main(["--results", str(tmp_path)]) == 0
    assert f"streaming.json has no {skipped}\n" in capsys.readouterr().out


def test_a_truncated_file_is_skipped(tmp_path, capsys):
    (tmp_path / "batch.json").write_text('{"runs": {')
    assert charts.main(["--results", str(tmp_path)]) == 0
    assert f"skipped gold.png: {tmp_path}/batch.json is not valid JSON" in capsys.readouterr().out
