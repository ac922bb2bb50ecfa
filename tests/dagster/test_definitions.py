"""The code location loads, and its jobs, schedules, checks and SparkApplication bodies are what
the docs say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from dagster_repo.definitions import build_definitions, defs, kubernetes_resources
from dagster_repo.defs.assets import GOLD_ASSET
from dagster_repo.defs.launcher import KubernetesSparkLauncher, SparkJobConfig
from dagster_repo.defs.resources import LakeResource, SparkApplicationsClient
from dagster_repo.kube import spark_application as sa
from shopstream import catalog, schema
from shopstream.catalog import JOBS

GOLD_TABLES = {
    schema.GOLD_CUSTOMER_ANALYTICS,
    schema.GOLD_SALES_SUMMARY,
    schema.GOLD_SALES_BY_CATEGORY,
    schema.GOLD_PRODUCT_ANALYTICS,
    schema.SILVER_DATA_QUALITY_REPORT,
}


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert GOLD_TABLES | {"streaming_health_monitor", "iceberg_table_maintenance"} <= keys
    assert {
        schema.SILVER_PAGE_VIEWS,
        schema.SILVER_PURCHASES,
        schema.SILVER_USER_SESSIONS,
        schema.SILVER_PRODUCTS,
        schema.QUARANTINE,
    } <= keys
    # every gold table depends on exactly the silver tables its job reads
    deps = {dep.to_user_string() for dep in graph.get(dg.AssetKey(schema.GOLD_PRODUCT_ANALYTICS)).parent_keys}
    assert deps == {schema.SILVER_PAGE_VIEWS, schema.SILVER_PURCHASES, schema.SILVER_PRODUCTS}


def test_checks_cover_the_seed_list_and_block():
    checks = {(key.asset_key.to_user_string(), key.name) for key in defs.resolve_asset_graph().asset_check_keys}
    assert {
        (schema.GOLD_CUSTOMER_ANALYTICS, "customer_completeness"),
        (schema.GOLD_CUSTOMER_ANALYTICS, "customer_revenue_consistency"),
        (schema.GOLD_CUSTOMER_ANALYTICS, "customer_segment_logic"),
        (schema.GOLD_SALES_SUMMARY, "sales_revenue_arithmetic"),
        (schema.GOLD_SALES_SUMMARY, "sales_order_consistency"),
        (schema.GOLD_PRODUCT_ANALYTICS, "product_rates_in_range"),
        (schema.GOLD_PRODUCT_ANALYTICS, "product_views_cover_purchases"),
        ("streaming_health_monitor", "streaming_progress_is_recent"),
        ("streaming_health_monitor", "consumer_lag_within_limit"),
    } == checks  # the gold checks block: test_one_gold_asset_computes_every_gold_table_with_every_check_blocking


@pytest.mark.parametrize(
    "name, cron, status, selection",
    [
        ("daily_gold_processing_schedule", "0 2 * * *", dg.DefaultScheduleStatus.RUNNING, GOLD_TABLES),
    ],
)
def test_schedules(name, cron, status, selection):
    schedule = defs.resolve_schedule_def(name)
    assert schedule.cron_schedule == cron
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == status
    job = defs.resolve_job_def(schedule.job_name)
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == selection
    # which day a tick requests, and when it skips: tests/dagster/test_completeness.py, against a broker


def test_streaming_catch_up_runs_the_streaming_job_through_spark_application_op():
    job = defs.resolve_job_def("streaming_catch_up")
    assert sorted(node.name for node in job.nodes) == ["ensure_stream_is_stopped", "spark_application_op"]
    defaults = job.run_config_schema.config_type.fields["ops"].default_value
    assert defaults["spark_application_op"]["config"]["job"] == "streaming"
    assert defaults["spark_application_op"]["config"]["arguments"] == ["--trigger", "catch-up"]


def launcher(**overrides) -> KubernetesSparkLauncher:
    settings = dict(
        image="registry.local/shopstream-spark:abc",
        service_account="shopstream-spark",
        env_configmap="shopstream-lake",
        env_secret="shopstream-lake-credentials",
    )
    return KubernetesSparkLauncher(
        lake=LakeResource(home="/nonexistent"),
        applications=SparkApplicationsClient(namespace="shopstream"),
        **{**settings, **overrides},
    )


@pytest.mark.parametrize("job", [j for j in JOBS if j != "streaming"])
def test_spark_application_body_for_each_job(job):
    name = sa.application_name(job, "9f1c6a8e-2b3d-4e5f-8a9b-0c1d2e3f4a5b", "2026-03-09", "step")
    spec = launcher().application_spec(
        job,
        ["--date", "2026-03-09", "--result-file", "s3://lake/_job_results/x.json"],
        SparkJobConfig(),
        name,
        {sa.LABEL_RUN_ID: "9f1c6a8e-2b3d-4e5f-8a9b-0c1d2e3f4a5b", sa.LABEL_PARTITION: "2026-03-09"},
    )
    assert spec.problems() == []
    body = spec.body()
    assert body["apiVersion"] == "sparkoperator.k8s.io/v1beta2" and body["kind"] == "SparkApplication"
    assert sa.is_dns_label(body["metadata"]["name"]) and len(body["metadata"]["name"]) <= sa.MAX_NAME_LENGTH
    spec_ = body["spec"]
    assert {"type", "mode", "image", "mainApplicationFile", "sparkVersion", "driver", "executor"} <= spec_.keys()
    assert spec_["type"] == "Python" and spec_["mode"] == "cluster"
    assert spec_["mainApplicationFile"] == "local:///opt/shopstream/jobs/shopstream/__main__.py"
    assert spec_["arguments"][:3] == [job, "--date", "2026-03-09"]
    assert spec_["restartPolicy"] == {"type": "Never"} and spec_["timeToLiveSeconds"] == 86400
    # the seed's defaults
    assert (spec_["driver"]["cores"], spec_["driver"]["coreLimit"], spec_["driver"]["memory"]) == (1, "1", "1g")
    assert (
        spec_["executor"]["cores"],
        spec_["executor"]["coreLimit"],
        spec_["executor"]["memory"],
        spec_["executor"]["instances"],
    ) == (2, "2", "2g", 1)
    assert spec_["driver"]["serviceAccount"] == "shopstream-spark"
    assert "serviceAccount" not in spec_["executor"]  # never the driver's: from the deployment's defaults
    for pod in (spec_["driver"], spec_["executor"]):
        assert pod["envFrom"] == [
            {"configMapRef": {"name": "shopstream-lake"}},
            {"secretRef": {"name": "shopstream-lake-credentials"}},
        ]
        labels = pod["labels"]
        assert labels["dagster.io/run-id"] == "9f1c6a8e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
        assert labels["dagster.io/partition"] == "2026-03-09"
        assert labels["shopstream.io/job"] == job
        for value in labels.values():
            assert len(value) <= 63 and re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", value)


def test_deployment_defaults_are_merged_under_the_jobs_own_fields():
    """The chart publishes what every application shares; the launcher lays the job's fields over it."""
    shared = {
        "image": "mirror/shopstream-spark:7",
        "sparkVersion": "4.0.4",
        "imagePullPolicy": "Never",
        "sparkConf": {"spark.ui.enabled": "false"},
        "driver": {
            "serviceAccount": "shopstream-spark",
            "coreRequest": "250m",
            "securityContext": {"runAsUser": 185, "runAsNonRoot": True},
        },
        "executor": {
            "serviceAccount": "shopstream-spark-executor",
            "coreRequest": "200m",
            "podSecurityContext": {"fsGroup": 185},
        },
    }
    chosen = launcher(
        image="", service_account="", env_configmap="", env_secret="", application_defaults=json.dumps(shared)
    )
    spec = chosen.application_spec("maintenance", [], SparkJobConfig(executor_cores=1), "maint-1", {"x": "y"})
    assert spec.problems() == []
    body = spec.body()["spec"]
    assert (body["image"], body["sparkVersion"], body["imagePullPolicy"]) == (
        "mirror/shopstream-spark:7",
        "4.0.4",
        "Never",
    )
    assert body["sparkConf"] == {"spark.ui.enabled": "false"}
    assert body["driver"]["serviceAccount"] == "shopstream-spark" and body["driver"]["coreRequest"] == "250m"
    assert body["driver"]["securityContext"] == {"runAsUser": 185, "runAsNonRoot": True}
    assert body["executor"]["serviceAccount"] == "shopstream-spark-executor"
    assert body["executor"]["podSecurityContext"] == {"fsGroup": 185}
    assert (body["executor"]["cores"], body["executor"]["coreLimit"], body["executor"]["labels"]["x"]) == (1, "1", "y")
    assert body["arguments"] == ["maintenance"] and body["restartPolicy"] == {"type": "Never"}
    # an explicit launcher setting wins over the defaults
    assert (
        launcher(application_defaults=json.dumps(shared))
        .application_spec("maintenance", [], SparkJobConfig(), "maint-1", {})
        .body()["spec"]["image"]
        == "registry.local/shopstream-spark:abc"
    )
    with pytest.raises(dg.Failure, match="not JSON"):
        launcher(application_defaults="{oops").application_spec("maintenance", [], SparkJobConfig(), "maint-1", {})


def test_without_defaults_the_spark_version_is_the_pinned_pysparks():
    body = launcher().application_spec("maintenance", [], SparkJobConfig(), "maint-1", {}).body()["spec"]
    pin = next(
        line
        for line in (Path(__file__).parents[2] / "pyproject.toml").read_text().splitlines()
        if line.strip().startswith('"pyspark==')
    )
    assert pin.strip().strip('",') == f"pyspark=={body['sparkVersion']}"
    assert body["imagePullPolicy"] == "IfNotPresent"


def test_application_names_are_deterministic_dns_labels():
    run = "9f1c6a8e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
    first = sa.application_name("gold_daily_customer_analytics", run, "2026-03-09", "a")
    assert first == sa.application_name("gold_daily_customer_analytics", run, "2026-03-09", "a")
    assert first != sa.application_name("gold_daily_customer_analytics", run, "2026-03-10", "a")
    assert first != sa.application_name("gold_daily_customer_analytics", "other-run", "2026-03-09", "a")
    assert first.startswith("gold-daily-customer-analytics-20260309"[: len(first) - 11])
    for job in ["x" * 200, "9_starts_with_digit", "UPPER.case", "-"]:
        name = sa.application_name(job, run, "2026-03-09")
        assert sa.is_dns_label(name) and len(name) <= sa.MAX_NAME_LENGTH, name


def test_bad_settings_are_refused_with_the_field_named():
    problems = sa.Resources(driver_memory="lots", executor_cores=0).problems()
    assert any("driver_memory 'lots'" in p for p in problems)
    assert any("executor_cores must be at least 1" in p for p in problems)
    spec = launcher(image="").application_spec("maintenance", [], SparkJobConfig(), "Bad_Name", {})
    assert any("no Spark image" in p for p in spec.problems())
    assert any("DNS-1123" in p for p in spec.problems())


def test_operator_retries_only_when_asked():
    spec = launcher(on_failure_retries=2).application_spec("maintenance", [], SparkJobConfig(), "maint-1", {})
    restart = spec.body()["spec"]["restartPolicy"]
    assert restart["type"] == "OnFailure" and restart["onFailureRetries"] == 2


def test_kubernetes_resources_read_the_charts_variables_when_a_run_starts(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_SPARK_IMAGE", "img@sha256:" + "a" * 64)
    resources = kubernetes_resources()
    launcher = resources["spark_launcher"]
    assert isinstance(launcher, KubernetesSparkLauncher) and launcher.image == "img@sha256:" + "a" * 64
    # what the chart always sets stays a reference to the variable until a run starts: the
    # catalog password is never part of the run's config
    for variable in (
        "SHOPSTREAM_CATALOG_PASSWORD",
        "SHOPSTREAM_CATALOG_URI",
        "SHOPSTREAM_WAREHOUSE",
        "SHOPSTREAM_CATALOG_USER",
        "SHOPSTREAM_S3_ENDPOINT",
        "AWS_REGION",
        "SHOPSTREAM_CHECKPOINT_DIR",
        "SHOPSTREAM_SPARK_APP_DEFAULTS",
    ):
        monkeypatch.setenv(variable, f"value of {variable}")
    monkeypatch.setenv("SHOPSTREAM_SPARK_NAMESPACE", "analytics")
    lake = resources["lake"]
    assert lake.catalog_password == dg.EnvVar("SHOPSTREAM_CATALOG_PASSWORD")
    assert launcher.applications.namespace == dg.EnvVar("SHOPSTREAM_SPARK_NAMESPACE")
    with dg.build_resources({"lake": lake, "spark_launcher": launcher}) as built:
        assert built.lake.catalog_password == "value of SHOPSTREAM_CATALOG_PASSWORD"
        assert built.lake.settings().catalog_uri == "value of SHOPSTREAM_CATALOG_URI"
        assert built.spark_launcher.namespace == "analytics"


def test_an_unknown_launcher_mode_is_refused_with_the_variable_named():
    with pytest.raises(ValueError, match="SHOPSTREAM_LAUNCHER_MODE='cloud': use one of local, kubernetes"):
        build_definitions("cloud")


def test_gold_launches_are_retried_by_dagster():
    policy = GOLD_ASSET.op.retry_policy
    assert (policy.max_retries, policy.delay, policy.backoff) == (2, 30, dg.Backoff.EXPONENTIAL)


def test_one_gold_asset_computes_every_gold_table_with_every_check_blocking():
    """One multi-asset, one launch of the gold job per date: every table a spec, every check of the
    job's catalog entry a blocking check spec of its table."""
    assert GOLD_ASSET.op.name == "gold_daily" and not GOLD_ASSET.can_subset
    assert {key.to_user_string() for key in GOLD_ASSET.keys} == GOLD_TABLES
    specs = {(spec.asset_key.to_user_string(), spec.name): spec.blocking for spec in GOLD_ASSET.check_specs}
    assert specs == {(check.table, check.name): True for check in catalog.GOLD_CHECKS}
    assert len(specs) == 7


def test_the_code_location_loads_without_pyspark():
    """The Dagster image carries no Spark: what a job reads and writes comes from the pyspark-free catalog."""
    code = (
        "import sys, dagster_repo.definitions as d; d.defs.resolve_asset_graph(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'py4j'}))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_the_recompute_sensor_watches_every_gold_table_by_default():
    sensor = defs.resolve_sensor_def("gold_recompute_sensor")
    assert (sensor.default_status, sensor.minimum_interval_seconds) == (dg.DefaultSensorStatus.RUNNING, 600)
    assert {key.to_user_string() for key in sensor.asset_selection.resolve(defs.resolve_asset_graph())} == set(
        GOLD_TABLES
    )
