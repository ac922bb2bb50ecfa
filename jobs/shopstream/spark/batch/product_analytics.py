"""gold_product_analytics: one row per (date, product), with what is bought and viewed with it."""

from shopstream import catalog, schema
from shopstream.spark.batch import transforms
from shopstream.spark.batch.runner import BatchJob, sum_of

JOB = BatchJob(
    catalog.PRODUCT_ANALYTICS,
    build=lambda i: (transforms.product_analytics(i.day, i.page_views(), i.order_lines(), i.products()),),
    totals=lambda out: {
        "products": out[schema.GOLD_PRODUCT_ANALYTICS].count(),
        "revenue": sum_of(out[schema.GOLD_PRODUCT_ANALYTICS], "revenue"),
    },
)
main = JOB.main
