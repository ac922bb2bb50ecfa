"""gold_product_analytics: one row per (date, product), with what is bought and viewed with it."""

import argparse

from shopstream import catalog, schema, settings
from shopstream.cli import positive_int
from shopstream.spark.batch import transforms
from shopstream.spark.batch.runner import BatchJob, sum_of


def add_options(parser: argparse.ArgumentParser) -> None:
    settings.TOGETHER_MIN_BASKETS.add_argument(parser, "--together-min-baskets", type=positive_int)


JOB = BatchJob(
    catalog.PRODUCT_ANALYTICS,
    build=lambda i: (
        transforms.product_analytics(
            i.day, i.page_views(), i.order_lines(), i.products(), i.options.together_min_baskets
        ),
    ),
    totals=lambda out: {
        "products": out[schema.GOLD_PRODUCT_ANALYTICS].count(),
        "revenue": sum_of(out[schema.GOLD_PRODUCT_ANALYTICS], "revenue"),
    },
    add_options=add_options,
)
main = JOB.main
