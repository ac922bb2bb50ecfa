"""bench/streaming_bench.py's reading of the job's step lines, on hand-written output."""

from __future__ import annotations

from bench import streaming_bench

OUTPUT = """\
[events] batch 0: 1200 rows in 9000 ms (133 rows/s)
[events] batch 3 steps: read and parse 0.4s, page views 0.6s, bronze 0.3s, sessions 1.2s, progress 0.1s
[events] batch 3 failed on its data: [CAST_INVALID_INPUT] ...; writing it in halves to find the records at fault
[events] batch 3 rows 1-600 steps: read and parse 0.2s, page views 0.5s
[events] batch 4 steps: read and parse 0.5s, page views 0.7s, products 0.2s, sessions 1.0s, progress 0.2s
"""


def test_each_batch_s_steps_are_read_by_batch_id_with_its_halves_counted():
    assert streaming_bench.batch_steps(OUTPUT) == {
        3: {"read and parse": 0.6, "page views": 1.1, "bronze": 0.3, "sessions": 1.2, "progress": 0.1},
        4: {"read and parse": 0.5, "page views": 0.7, "products": 0.2, "sessions": 1.0, "progress": 0.2},
    }


def test_the_catch_up_sums_each_step_over_its_batches():
    assert streaming_bench.step_seconds(OUTPUT) == {
        "read and parse": 1.1,
        "page views": 1.8,
        "bronze": 0.3,
        "sessions": 2.2,
        "progress": 0.3,
        "products": 0.2,
    }
