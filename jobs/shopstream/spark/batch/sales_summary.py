"""gold_daily_sales_summary (and its per-category breakdown): one row per date."""

from shopstream import catalog, schema
from shopstream.rules import TRAILING_DAYS
from shopstream.spark.batch import transforms
from shopstream.spark.batch.runner import BatchJob, sum_of

JOB = BatchJob(
    catalog.SALES_SUMMARY,
    build=lambda i: (
        transforms.sales_summary(
            i.day, i.page_views(), i.order_lines(days_before=TRAILING_DAYS), i.sessions(days_before=TRAILING_DAYS)
        ),
        transforms.sales_by_category(i.day, i.order_lines()),
    ),
    totals=lambda out: {
        "revenue": sum_of(out[schema.GOLD_SALES_SUMMARY], "revenue"),
        "orders": int(sum_of(out[schema.GOLD_SALES_SUMMARY], "orders")),
    },
)
main = JOB.main
