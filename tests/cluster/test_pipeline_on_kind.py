"""The whole pipeline on a real kind cluster, as a user runs it: the generator sends simulated days
to Kafka; the chart's streaming SparkApplication, run by the real Spark operator, writes bronze and
silver to MinIO through the PostgreSQL catalog with its checkpoint on s3a; Dagster (on this host,
launcher mode `kubernetes`) materializes the gold tables as SparkApplications that the operator
runs; table maintenance runs on MinIO; a `helm upgrade` and a killed driver lose and duplicate
nothing. Values are read back with pyiceberg and compared with what the generator sent.

The tests run in file order and build on each other (one cluster, one lake)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from collections import Counter, defaultdict
from decimal import Decimal

import dagster as dg
import pytest

from dagster_repo import spark_application as sa
from dagster_repo.assets import iceberg_table_maintenance
from dagster_repo.definitions import build_definitions
from dagster_repo.launcher import SparkLauncher
from shopstream import lake, schema
from shopstream.generator.shop import VALID, GeneratorConfig, Shop
from tests.cluster.stage import NAMESPACE, log

# The first test also waits for the session's images and cluster: on a cold machine that is the
# Go and image builds (tens of minutes on 2 CPUs).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(4800)]

STREAMING_APP = "shopstream-streaming"
DAY = dt.date(2026, 3, 9)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# One simulated day per send, each with its own seed (so event, session and order ids differ).
SENDS = {
    "first": GeneratorConfig(seed=31, start_date=DAY, events_per_day=3000, late_fraction=0.02,
                             duplicate_fraction=0.02, malformed_fraction=0.02),
    "after-upgrade": GeneratorConfig(seed=32, start_date=DAY + dt.timedelta(days=1), events_per_day=2000,
                                     late_fraction=0.0, duplicate_fraction=0.02, malformed_fraction=0.01),
    "driver-killed": GeneratorConfig(seed=33, start_date=DAY + dt.timedelta(days=2), events_per_day=12000,
                                     late_fraction=0.0, duplicate_fraction=0.02, malformed_fraction=0.01),
}


class Expected:
    """What the tables must hold after the given sends, computed from the generator's own records."""

    def __init__(self, configs: list[GeneratorConfig]):
        self.silver = Counter()
        self.bronze = 0
        self.quarantined = Counter()
        self.products = set()
        self.days: dict[dt.date, dict] = defaultdict(lambda: {"revenue": Decimal("0"), "orders": set(), "units": 0})
        for config in configs:
            shop = Shop(config)
            for record in itertools.chain(shop.catalog(), shop.records()):
                event = json.loads(record.value, parse_float=Decimal) if record.kind == VALID else None
                if record.topic == schema.TOPIC_PRODUCTS:
                    self.products.add(event["product_id"])
                    continue
                self.bronze += 1
                if record.kind != VALID:
                    if record.reason:
                        self.quarantined[record.reason] += 1
                    continue
                table = {schema.PURCHASE: schema.SILVER_PURCHASES}.get(record.event_type)
                if record.event_type in (schema.PAGE_VIEW, schema.ADD_TO_CART):
                    table = schema.SILVER_PAGE_VIEWS
                if table:
                    self.silver[table] += 1
                if record.event_type == schema.PURCHASE:
                    day = self.days[record.event_time.date()]
                    day["revenue"] += event["quantity"] * event["unit_price"] - event["discount"]
                    day["orders"].add(event["order_id"])
                    day["units"] += event["quantity"]


def send(cluster, name: str, config: GeneratorConfig, wait: bool = True) -> None:
    """The generator as a Job in the cluster (the app image), sending one simulated day."""
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"generate-{name}"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "generator", "image": cluster.images["app"], "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-m", "shopstream.generator"],
                "args": ["--seed", str(config.seed), "--start-date", config.start_date.isoformat(), "--days", "1",
                         "--events-per-day", str(config.events_per_day), "--late-fraction", str(config.late_fraction),
                         "--duplicate-fraction", str(config.duplicate_fraction),
                         "--malformed-fraction", str(config.malformed_fraction), "--no-progress"],
                "envFrom": [{"configMapRef": {"name": "shopstream-lake"}}],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
            }]}}},
    }
    cluster.apply([job])
    if wait:
        cluster.kubectl("wait", "--for=condition=complete", f"job/generate-{name}", "--timeout=600s", timeout=660)
        log(cluster.kubectl("logs", f"job/generate-{name}").stdout.strip().splitlines()[0])


@pytest.fixture(scope="module")
def lake_access(cluster):
    """pyiceberg (and Dagster's checks) on this host, reaching PostgreSQL and MinIO through port-forwards,
    with the chart's generated credentials."""
    credentials = cluster.secret("shopstream-credentials")
    with cluster.port_forward("shopstream-postgres", 5432) as pg, cluster.port_forward("shopstream-minio", 9000) as s3:
        env = {
            "SHOPSTREAM_CATALOG_URI": f"jdbc:postgresql://127.0.0.1:{pg}/iceberg",
            "SHOPSTREAM_CATALOG_USER": "shopstream",
            "SHOPSTREAM_CATALOG_PASSWORD": credentials["SHOPSTREAM_CATALOG_PASSWORD"],
            "SHOPSTREAM_WAREHOUSE": "s3://shopstream/warehouse",
            "SHOPSTREAM_S3_ENDPOINT": f"http://127.0.0.1:{s3}",
            "AWS_ACCESS_KEY_ID": credentials["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": credentials["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": "us-east-1",
        }
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            yield lake.LakeSettings.from_env()


def counts(settings) -> dict[str, int]:
    found = {}
    iceberg = lake.iceberg_catalog(settings)
    for name in (schema.BRONZE_EVENTS, schema.SILVER_PAGE_VIEWS, schema.SILVER_PURCHASES, schema.QUARANTINE,
                 schema.SILVER_PRODUCTS):
        try:
            found[name] = iceberg.load_table(schema.TABLES[name].qualified).scan().count()
        except Exception:  # noqa: BLE001 - not created yet
            found[name] = 0
    return found


def wait_until_streamed(cluster, settings, expected: Expected, timeout: float = 900) -> dict[str, int]:
    want = {schema.BRONZE_EVENTS: expected.bronze, schema.SILVER_PAGE_VIEWS: expected.silver[schema.SILVER_PAGE_VIEWS],
            schema.SILVER_PURCHASES: expected.silver[schema.SILVER_PURCHASES], schema.SILVER_PRODUCTS: len(expected.products)}
    seen = {}

    def arrived():
        seen.update(counts(settings))
        return all(seen[name] >= value for name, value in want.items())

    try:
        cluster.wait_for(arrived, "the stream to write every sent event", timeout, interval=5)
    except Exception as exc:
        raise AssertionError(f"{exc}; tables hold {seen}, expected {want} "
                             f"(streaming application: {cluster.application_state(STREAMING_APP)})") from None
    time.sleep(15)  # a duplicate written by a replayed batch would land now: look again
    final = counts(settings)
    assert {name: final[name] for name in want} == want, "the stream lost or duplicated records"
    quarantine = lake.iceberg_catalog(settings).load_table(schema.TABLES[schema.QUARANTINE].qualified).scan().to_arrow()
    reasons = Counter(r for r in quarantine.column("reason").to_pylist() if r != schema.REASON_LATE)
    assert reasons == expected.quarantined
    return final


def stream_running(cluster) -> list[dict]:
    """Wait until the operator reports the stream RUNNING with a running driver of the submission it
    tracks and an executor; returns the executor pods."""

    def running():
        cluster.nudge_if_stuck(STREAMING_APP)
        app = cluster.application(STREAMING_APP) or {}
        status = app.get("status") or {}
        pods = cluster.kubectl_json("get", "pods", "-l", f"sparkoperator.k8s.io/app-name={STREAMING_APP}")["items"]
        live = [p for p in pods if p["status"]["phase"] == "Running"
                and p["metadata"]["labels"].get("sparkoperator.k8s.io/submission-id") == status.get("submissionID")]
        roles = {p["metadata"]["labels"].get("spark-role") for p in live}
        executors = [p for p in live if p["metadata"]["labels"].get("spark-role") == "executor"]
        return sa.state_of(app) == "RUNNING" and "driver" in roles and executors

    return cluster.wait_for(running, "the streaming application's driver and executor to run", 900)


def test_platform_runs_on_the_real_operator(cluster):
    pods = cluster.kubectl_json("get", "pods", "-A", namespace=None)["items"]
    running = {p["metadata"]["name"]: p for p in pods if p["status"]["phase"] == "Running"}
    for prefix in ("shopstream-minio", "shopstream-postgres-0", "shopstream-kafka-broker-0", "spark-operator-controller",
                   "spark-operator-webhook"):
        assert any(name.startswith(prefix) for name in running), (prefix, sorted(running))
    executors = stream_running(cluster)
    driver = cluster.kubectl_json("get", "pod", f"{STREAMING_APP}-driver")
    # one spec for every application: the chart's security contexts and the tokenless executor account
    for pod in (driver, executors[0]):
        container = pod["spec"]["containers"][0]
        assert container["securityContext"]["runAsUser"] == 185 and container["securityContext"]["runAsNonRoot"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert driver["spec"]["serviceAccountName"] == "shopstream-spark"
    assert executors[0]["spec"]["serviceAccountName"] == "shopstream-spark-executor"
    mounts = [m["mountPath"] for m in executors[0]["spec"]["containers"][0].get("volumeMounts", [])]
    assert not any("serviceaccount" in m for m in mounts), mounts


def test_a_sent_day_reaches_bronze_and_silver_on_minio(cluster, lake_access):
    send(cluster, "first", SENDS["first"])
    expected = Expected([SENDS["first"]])
    wait_until_streamed(cluster, lake_access, expected)
    # the checkpoint lives in the bucket, through S3A
    from pyarrow import fs

    s3 = fs.S3FileSystem(endpoint_override=lake_access.s3_endpoint, scheme="http", region="us-east-1")
    offsets = s3.get_file_info(fs.FileSelector("shopstream/checkpoints", recursive=True))
    assert any("/offsets/" in f.path for f in offsets) and any("/commits/" in f.path for f in offsets)
    table = lake.iceberg_catalog(lake_access).load_table(schema.TABLES[schema.SILVER_PURCHASES].qualified)
    assert table.metadata.location.startswith("s3://shopstream/warehouse/")


@pytest.fixture(scope="module")
def gold_run(cluster, lake_access):
    """silver_to_gold_processing for DAY, run by Dagster with the kubernetes launcher: every gold
    job becomes a SparkApplication that the operator runs."""
    launcher_settings = cluster.kubectl_json("get", "configmap", "shopstream-launcher")["data"]
    launcher = SparkLauncher(mode="kubernetes", namespace=NAMESPACE, kubeconfig_file=str(cluster.kubeconfig),
                             application_defaults=launcher_settings["SHOPSTREAM_SPARK_APP_DEFAULTS"])
    definitions = build_definitions(launcher)
    started = time.monotonic()
    with dg.DagsterInstance.ephemeral() as instance:
        result = definitions.resolve_job_def("silver_to_gold_processing").execute_in_process(
            partition_key=DAY.isoformat(), instance=instance, run_config=QUIET, raise_on_error=False)
    log(f"gold for {DAY} through the operator in {time.monotonic() - started:.0f}s")
    return {"result": result, "launcher": launcher, "definitions": definitions}


def step_failures(result) -> list[str]:
    """What each failed step of a Dagster run said, for the assertion message."""
    return [e.step_failure_data.user_failure_data.description for e in result.all_events
            if e.event_type_value == "STEP_FAILURE" and e.step_failure_data.user_failure_data]


def test_gold_through_dagster_runs_as_sparkapplications_and_matches_what_was_sent(cluster, lake_access, gold_run):
    result = gold_run["result"]
    failures = step_failures(result)
    assert result.success, failures
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(checks) == 7 and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks]
    materialized = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert len(materialized) == 5
    applications = set()
    for metadata in materialized.values():
        assert metadata["launcher_mode"].value == "kubernetes"
        history = [t["state"] for t in metadata["state_history"].value]
        assert history[-1] == sa.COMPLETED, history
        applications.add(metadata["spark_application"].value)
    assert len(applications) == 4  # one per gold job
    for name in applications:
        app = cluster.application(name)
        assert app["status"]["applicationState"]["state"] == sa.COMPLETED
        assert app["metadata"]["labels"][sa.LABEL_RUN_ID] == result.run_id
        assert app["spec"]["executor"]["serviceAccount"] == "shopstream-spark-executor"
        assert app["spec"]["driver"]["securityContext"]["runAsUser"] == 185

    expected = Expected([SENDS["first"]]).days[DAY]
    iceberg = lake.iceberg_catalog(lake_access)
    from pyiceberg.expressions import EqualTo

    [summary] = iceberg.load_table(schema.TABLES[schema.GOLD_SALES_SUMMARY].qualified).scan(
        row_filter=EqualTo("date", DAY.isoformat())).to_arrow().to_pylist()
    assert (summary["revenue"], summary["orders"], summary["units"]) == (
        expected["revenue"], len(expected["orders"]), expected["units"])
    customers = iceberg.load_table(schema.TABLES[schema.GOLD_CUSTOMER_ANALYTICS].qualified).scan(
        row_filter=EqualTo("date", DAY.isoformat())).to_arrow().to_pylist()
    assert sum(c["revenue"] for c in customers) == expected["revenue"]
    for table, metadata in materialized.items():
        rows = iceberg.load_table(schema.TABLES[table].qualified).scan(row_filter=EqualTo("date", DAY.isoformat())).count()
        assert metadata["dagster/row_count"].value == rows > 0, table


def test_table_maintenance_runs_on_object_storage(cluster, lake_access, gold_run):
    before = counts(lake_access)
    result = dg.materialize([iceberg_table_maintenance], resources={"spark_launcher": gold_run["launcher"]},
                            run_config=QUIET, raise_on_error=False)
    failures = step_failures(result)
    assert result.success, failures
    [event] = result.get_asset_materialization_events()
    tables = event.materialization.metadata["tables"].value
    assert {schema.SILVER_PAGE_VIEWS, schema.BRONZE_EVENTS} <= set(tables)
    assert all("orphan_files_removed" in figures for figures in tables.values())
    assert counts(lake_access) == before


def test_helm_upgrade_of_the_trigger_restarts_the_stream_losing_nothing(cluster, lake_access):
    stream_running(cluster)
    before = cluster.kubectl_json("get", "pod", f"{STREAMING_APP}-driver")["metadata"]["uid"]
    cluster.install_platform(cluster.values_files, "streaming.trigger=3 seconds", upgrade=True)
    assert cluster.application(STREAMING_APP)["spec"]["arguments"][1:3] == ["--trigger", "3 seconds"]
    stream_running(cluster)
    assert cluster.kubectl_json("get", "pod", f"{STREAMING_APP}-driver")["metadata"]["uid"] != before
    send(cluster, "after-upgrade", SENDS["after-upgrade"])
    wait_until_streamed(cluster, lake_access, Expected([SENDS["first"], SENDS["after-upgrade"]]))


def test_a_driver_killed_mid_batch_loses_and_duplicates_nothing(cluster, lake_access):
    stream_running(cluster)
    bronze_before = counts(lake_access)[schema.BRONZE_EVENTS]
    send(cluster, "driver-killed", SENDS["driver-killed"], wait=False)
    # the first commit of the new data: the batch is under way (bronze comes before silver)
    cluster.wait_for(lambda: counts(lake_access)[schema.BRONZE_EVENTS] > bronze_before, "a batch of the new data", 600,
                     interval=1)
    cluster.kubectl("delete", "pod", f"{STREAMING_APP}-driver", "--wait=false")
    log("deleted the streaming driver pod mid-batch")
    cluster.kubectl("wait", "--for=condition=complete", "job/generate-driver-killed", "--timeout=600s", timeout=660)
    stream_running(cluster)
    wait_until_streamed(cluster, lake_access, Expected(list(SENDS.values())))
