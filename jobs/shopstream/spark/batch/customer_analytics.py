"""gold_daily_customer_analytics: one row per (date, customer)."""

from shopstream import catalog, schema
from shopstream.spark.batch import transforms
from shopstream.spark.batch.runner import BatchJob, sum_of

JOB = BatchJob(
    catalog.CUSTOMER_ANALYTICS,
    build=lambda i: (
        transforms.customer_analytics(i.day, i.page_views(), i.order_lines(days_before=None), i.sessions()),
    ),
    totals=lambda out: {
        "customers": out[schema.GOLD_CUSTOMER_ANALYTICS].count(),
        "revenue": sum_of(out[schema.GOLD_CUSTOMER_ANALYTICS], "revenue"),
    },
)
main = JOB.main
