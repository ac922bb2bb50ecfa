"""Asset checks on the gold tables: the rules of `quality.py`, evaluated on the partition's date.

Blocking checks stop downstream work when gold is wrong; each reports its offending counts.
"""

import datetime as dt
from collections.abc import Callable

import dagster as dg

from dagster_repo.defs.assets import DAILY
from dagster_repo.defs.resources import LakeResource
from dagster_repo.monitoring import quality
from shopstream import schema

Rule = Callable[[quality.Lake, dt.date], quality.Verdict]

# asset -> the rules that check it
RULES: dict[str, tuple[Rule, ...]] = {
    schema.GOLD_CUSTOMER_ANALYTICS: (
        quality.customer_completeness,
        quality.customer_revenue_consistency,
        quality.customer_segment_logic,
    ),
    schema.GOLD_SALES_SUMMARY: (quality.sales_revenue_arithmetic, quality.sales_order_consistency),
    schema.GOLD_PRODUCT_ANALYTICS: (quality.product_rates_in_range, quality.product_views_cover_purchases),
}


def gold_check(asset: str, rule: Rule) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset, name=rule.__name__, description=(rule.__doc__ or "").strip(), blocking=True, partitions_def=DAILY
    )
    def check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        verdict = rule(quality.Lake(lake.settings()), dt.date.fromisoformat(context.partition_key))
        return dg.AssetCheckResult(
            passed=verdict.passed,
            description=verdict.summary,
            metadata={
                k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v for k, v in verdict.counts.items()
            },
        )

    return check


GOLD_CHECKS = [gold_check(asset, rule) for asset, rules in RULES.items() for rule in rules]
