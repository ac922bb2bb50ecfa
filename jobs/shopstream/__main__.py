"""One entry point for every Spark job, used by both launchers:

    python -m shopstream <job> [job arguments]     (python -m shopstream <job> --help for each)
"""

from __future__ import annotations

import importlib
import sys

# job name -> module with a `main(argv) -> int`
JOBS = {
    "streaming": "shopstream.spark.streaming.job",
    "gold_daily_customer_analytics": "shopstream.spark.batch.customer_analytics",
    "gold_daily_sales_summary": "shopstream.spark.batch.sales_summary",
    "gold_product_analytics": "shopstream.spark.batch.product_analytics",
    "silver_data_quality_report": "shopstream.spark.batch.data_quality",
    "maintenance": "shopstream.spark.maintenance",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\njobs:\n" + "\n".join(f"  {name}" for name in JOBS))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        print(f"error: unknown job {name!r}; jobs: {', '.join(JOBS)}", file=sys.stderr)
        return 2
    return importlib.import_module(JOBS[name]).main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
