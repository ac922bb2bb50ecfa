"""silver_data_quality_report: one row per (date, silver table)."""

from shopstream import catalog, schema
from shopstream.spark.batch import transforms
from shopstream.spark.batch.runner import BatchJob, Inputs


def build(inputs: Inputs):
    silver = {
        schema.SILVER_PAGE_VIEWS: inputs.page_views(),
        schema.SILVER_PURCHASES: inputs.purchases(),
        schema.SILVER_USER_SESSIONS: inputs.sessions(),
    }
    return (transforms.data_quality(inputs.day, silver, inputs.quarantine()),)


JOB = BatchJob(
    catalog.DATA_QUALITY_REPORT,
    build=build,
    totals=lambda out: {
        row["table_name"]: {
            "rows": row["row_count"],
            "duplicates": row["duplicate_count"],
            "out_of_range": row["out_of_range_count"],
        }
        for row in out[schema.SILVER_DATA_QUALITY_REPORT].collect()
    },
)
main = JOB.main
