"""The whole pipeline on a real kind cluster, as a user runs it: the generator sends simulated days
to Kafka; the chart's streaming SparkApplication, run by the real Spark operator, writes bronze and
silver to MinIO through the PostgreSQL catalog with its checkpoint on s3a; Dagster in the cluster
(webserver, daemon and code server with the instance of charts/values/dagster.yaml) runs the gold
job, launched through the webserver's GraphQL API, in a run pod that creates SparkApplications; the
UI is opened through a port-forward in headless Chromium; table maintenance runs on MinIO; a `helm
upgrade` and a killed driver lose and duplicate nothing; a new app image reloads the code location;
the health sensor raises an alert run once the stream is stopped. Values are read back with
pyiceberg and compared with what the generator sent.

The tests run in file order and build on each other (one cluster, one lake)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._daemon.controller import RELOAD_WORKSPACE_INTERVAL, THREAD_CHECK_INTERVAL

from dagster_repo.defs.assets import iceberg_table_maintenance
from dagster_repo.defs.launcher import KubernetesSparkLauncher
from dagster_repo.defs.resources import LakeResource, SparkApplicationsClient
from dagster_repo.kube import spark_application as sa
from shopstream import lake, rules, schema
from shopstream.events.generator.shop import VALID, GeneratorConfig, Shop
from tests.browser import SCREENSHOTS, check_gold_in_dagster_ui
from tests.cluster.conftest import DAGSTER_TEST_VALUES, chart_image_values
from tests.cluster.images import IMAGES, docker, docker_client
from tests.cluster.stage import DAGSTER_WEBSERVER, HERE, NAMESPACE, REPO, StageError, log
from tests.cluster.webserver import LOCATION, Webserver, tags
from tests.tools import skaffold

# The first test also waits for the session's images and cluster: on a cold machine that is the
# Go and image builds (tens of minutes on 2 CPUs).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(4800)]

STREAMING_APP = "shopstream-streaming"
DAY = dt.date(2026, 3, 9)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# One simulated day per send, each with its own seed (so event, session and order ids differ).
SENDS = {
    "first": GeneratorConfig(
        seed=31,
        start_date=DAY,
        events_per_day=3000,
        late_fraction=0.02,
        duplicate_fraction=0.02,
        malformed_fraction=0.02,
    ),
    "after-upgrade": GeneratorConfig(
        seed=32,
        start_date=DAY + dt.timedelta(days=1),
        events_per_day=2000,
        late_fraction=0.0,
        duplicate_fraction=0.02,
        malformed_fraction=0.01,
    ),
    "driver-killed": GeneratorConfig(
        seed=33,
        start_date=DAY + dt.timedelta(days=2),
        events_per_day=12000,
        late_fraction=0.0,
        duplicate_fraction=0.02,
        malformed_fraction=0.01,
    ),
    "after-rotation": GeneratorConfig(
        seed=34,
        start_date=DAY + dt.timedelta(days=3),
        events_per_day=2000,
        late_fraction=0.0,
        duplicate_fraction=0.02,
        malformed_fraction=0.01,
    ),
}


class Expected:
    """What the tables must hold after the given sends, computed from the generator's own records."""

    def __init__(self, configs: list[GeneratorConfig]):
        self.silver = Counter()
        self.bronze = 0
        self.quarantined = Counter()
        self.products = set()
        self.days: dict[dt.date, dict] = defaultdict(lambda: {"revenue": Decimal("0"), "orders": set(), "units": 0})
        lines: list[tuple[str, dt.date, dict]] = []
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
                    lines.append((event["order_id"], record.event_time.date(), event))
        # Gold counts every line of an order on the day of its first line.
        placed = rules.order_dates((order_id, day) for order_id, day, _ in lines)
        for order_id, _, event in lines:
            day = self.days[placed[order_id]]
            day["revenue"] += event["quantity"] * event["unit_price"] - event["discount"]
            day["orders"].add(order_id)
            day["units"] += event["quantity"]


def send(cluster, name: str, config: GeneratorConfig, wait: bool = True) -> None:
    """The generator as a Job in the cluster (the app image), sending one simulated day."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"generate-{name}"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "generator",
                            "image": cluster.images["app"],
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-m", "shopstream.events.generator"],
                            "args": [
                                "--seed",
                                str(config.seed),
                                "--start-date",
                                config.start_date.isoformat(),
                                "--days",
                                "1",
                                "--events-per-day",
                                str(config.events_per_day),
                                "--late-fraction",
                                str(config.late_fraction),
                                "--duplicate-fraction",
                                str(config.duplicate_fraction),
                                "--malformed-fraction",
                                str(config.malformed_fraction),
                                "--no-progress",
                            ],
                            "envFrom": [{"configMapRef": {"name": "shopstream-lake"}}],
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "1", "memory": "512Mi"},
                            },
                        }
                    ],
                }
            },
        },
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
    for name in (
        schema.BRONZE_EVENTS,
        schema.SILVER_PAGE_VIEWS,
        schema.SILVER_PURCHASES,
        schema.QUARANTINE,
        schema.SILVER_PRODUCTS,
    ):
        try:
            found[name] = iceberg.load_table(schema.TABLES[name].qualified).scan().count()
        except Exception:  # noqa: BLE001 - not created yet
            found[name] = 0
    return found


def wait_until_streamed(cluster, settings, expected: Expected, timeout: float = 900) -> dict[str, int]:
    want = {
        schema.BRONZE_EVENTS: expected.bronze,
        schema.SILVER_PAGE_VIEWS: expected.silver[schema.SILVER_PAGE_VIEWS],
        schema.SILVER_PURCHASES: expected.silver[schema.SILVER_PURCHASES],
        schema.SILVER_PRODUCTS: len(expected.products),
    }
    seen = {}

    def arrived():
        # quarantine is committed last in a micro-batch: wait for it too, not only for the counted tables
        seen.update(counts(settings))
        seen[schema.QUARANTINE] = sum(quarantine_reasons(settings).values())
        return all(seen[name] >= value for name, value in want.items()) and seen[schema.QUARANTINE] >= sum(
            expected.quarantined.values()
        )

    try:
        cluster.wait_for(arrived, "the stream to write every sent event", timeout, interval=5)
    except StageError as exc:
        raise AssertionError(
            f"{exc}; tables hold {seen}, expected {want} "
            f"(streaming application: {cluster.application_state(STREAMING_APP)})"
        ) from None
    time.sleep(15)  # a duplicate written by a replayed batch would land now: look again
    final = counts(settings)
    assert {name: final[name] for name in want} == want, "the stream lost or duplicated records"
    assert quarantine_reasons(settings) == expected.quarantined
    return final


def quarantine_reasons(settings) -> Counter:
    """The quarantine's records by reason, late events left out (the stream's watermark, not the
    generator, decides which events are late)."""
    try:
        table = lake.iceberg_catalog(settings).load_table(schema.TABLES[schema.QUARANTINE].qualified)
    except Exception:  # noqa: BLE001 - not created yet
        return Counter()
    reasons = table.scan(selected_fields=("reason",)).to_arrow().column("reason").to_pylist()
    return Counter(r for r in reasons if r != schema.REASON_LATE)


def stream_running(cluster) -> list[dict]:
    """Wait until the operator reports the stream RUNNING with a running driver of the submission it
    tracks and an executor; returns the executor pods."""

    def running():
        cluster.nudge_if_stuck(STREAMING_APP)
        app = cluster.application(STREAMING_APP) or {}
        status = app.get("status") or {}
        pods = cluster.kubectl_json("get", "pods", "-l", f"sparkoperator.k8s.io/app-name={STREAMING_APP}")["items"]
        live = [
            p
            for p in pods
            if p["status"]["phase"] == "Running"
            and p["metadata"]["labels"].get("sparkoperator.k8s.io/submission-id") == status.get("submissionID")
        ]
        roles = {p["metadata"]["labels"].get("spark-role") for p in live}
        executors = [p for p in live if p["metadata"]["labels"].get("spark-role") == "executor"]
        return sa.state_of(app) == "RUNNING" and "driver" in roles and executors

    return cluster.wait_for(running, "the streaming application's driver and executor to run", 900)


def test_platform_runs_on_the_real_operator(cluster):
    pods = cluster.kubectl_json("get", "pods", "-A", namespace=None)["items"]
    running = {p["metadata"]["name"]: p for p in pods if p["status"]["phase"] == "Running"}
    for prefix in (
        "shopstream-minio",
        "shopstream-postgres-0",
        "shopstream-kafka-broker-0",
        "spark-operator-controller",
        "spark-operator-webhook",
    ):
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


@contextmanager
def dagster_webserver(cluster):
    """The Dagster webserver in the cluster, through `kubectl port-forward` as a user reaches it, once
    it has loaded the shopstream location (again after its pods were replaced)."""
    with cluster.port_forward(DAGSTER_WEBSERVER, 8080) as port:
        server = Webserver(port)
        cluster.wait_for(
            lambda: server.repository().get("schedules"), "the webserver to load the shopstream location", 300
        )
        yield server


@pytest.fixture(scope="module")
def webserver(cluster):
    with dagster_webserver(cluster) as server:
        yield server


def test_dagster_runs_in_the_cluster_with_the_seed_schedules(cluster, webserver):
    # The chart's own pods carry `component`; run workers the sensors may have launched by now do not.
    pods = cluster.kubectl_json("get", "pods", "-l", "app.kubernetes.io/instance=dagster,component")["items"]
    running = {p["metadata"]["labels"]["component"]: p for p in pods if p["status"]["phase"] == "Running"}
    assert set(running) == {"dagster-webserver", "dagster-daemon", "user-deployments"}, sorted(running)
    for pod in running.values():
        assert pod["spec"]["serviceAccountName"] == "dagster"
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001 and pod["spec"]["securityContext"]["runAsNonRoot"]
        assert pod["spec"]["containers"][0]["image"] == cluster.images["app"]
    repository = webserver.repository()
    schedules = {
        s["name"]: (s["cronSchedule"], s["executionTimezone"], s["scheduleState"]["status"])
        for s in repository["schedules"]
    }
    assert schedules == {  # the seed: every gold table daily at 02:00 UTC (on), from one Spark application
        "daily_gold_processing_schedule": ("0 2 * * *", "UTC", "RUNNING"),
        "weekly_maintenance_schedule": ("0 5 * * 0", "UTC", "STOPPED"),
    }
    sensors = {s["name"]: (s["minIntervalSeconds"], s["sensorState"]["status"]) for s in repository["sensors"]}
    # on by default in kubernetes mode; the recompute sensor looks back 7 days from today, far from DAY
    assert sensors == {"streaming_health_sensor": (20, "RUNNING"), "gold_recompute_sensor": (600, "RUNNING")}


def run_gold(cluster, webserver, day: dt.date) -> dict:
    """silver_to_gold_processing for `day`, launched from the webserver as the UI launches it: the daemon
    dequeues it, the K8sRunLauncher starts a run pod, the gold job becomes one SparkApplication."""
    started = time.monotonic()
    run_id = webserver.launch("silver_to_gold_processing", tags={"dagster/partition": day.isoformat()})
    run = webserver.wait(run_id, timeout=1800)
    log(f"gold for {day} through Dagster in the cluster: {run['status']} in {time.monotonic() - started:.0f}s")
    return {"run": run, "events": webserver.events(run_id)}


@pytest.fixture(scope="module")
def gold_run(cluster, lake_access, webserver):
    return run_gold(cluster, webserver, DAY)


def failures(events: list[dict]) -> list[str]:
    """What failed steps and runs said: the event, the error and the failure's description."""
    said = []
    for e in events:
        if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent"):
            said.append(
                " | ".join(
                    filter(
                        None,
                        [
                            e["message"],
                            (e.get("error") or {}).get("message"),
                            (e.get("failureMetadata") or {}).get("description"),
                        ],
                    )
                )
            )
    return said


def assert_gold_succeeded(cluster, gold: dict) -> None:
    """The run succeeded in a run pod with every check passed, its gold job as one SparkApplication."""
    run, events = gold["run"], gold["events"]
    assert run["status"] == "SUCCESS", failures(events)
    checks = [e["evaluation"] for e in events if e["__typename"] == "AssetCheckEvaluationEvent"]
    assert len(checks) == 7 and all(c["success"] for c in checks), checks
    materialized = {"/".join(e["assetKey"]["path"]) for e in events if e["__typename"] == "MaterializationEvent"}
    assert len(materialized) == 5, materialized
    # the K8sRunLauncher's run worker: a Job with the code server's image, account and settings
    [job] = cluster.kubectl_json("get", "jobs", "-l", f"dagster/run-id={run['runId']}")["items"]
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "run_worker"
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "dagster"
    assert pod_spec["containers"][0]["image"] == tags(run)["dagster/image"]
    env_from = {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in pod_spec["containers"][0]["envFrom"]}
    assert {"shopstream-lake", "shopstream-launcher", "shopstream-credentials"} <= env_from
    applications = {
        a["metadata"]["name"]: a
        for a in cluster.kubectl_json("get", "sparkapplications", "-l", f"{sa.LABEL_RUN_ID}={run['runId']}")["items"]
    }
    assert len(applications) == 1, sorted(applications)  # one application computes every gold table
    for app in applications.values():
        assert app["status"]["applicationState"]["state"] == sa.COMPLETED
        assert app["spec"]["executor"]["serviceAccount"] == "shopstream-spark-executor"
        assert app["spec"]["driver"]["securityContext"]["runAsUser"] == 185


def test_gold_through_dagster_in_the_cluster_matches_what_was_sent(cluster, lake_access, gold_run):
    assert_gold_succeeded(cluster, gold_run)
    assert tags(gold_run["run"])["dagster/image"] == cluster.images["app"]
    expected = Expected([SENDS["first"]]).days[DAY]
    iceberg = lake.iceberg_catalog(lake_access)
    from pyiceberg.expressions import EqualTo

    [summary] = (
        iceberg.load_table(schema.TABLES[schema.GOLD_SALES_SUMMARY].qualified)
        .scan(row_filter=EqualTo("date", DAY.isoformat()))
        .to_arrow()
        .to_pylist()
    )
    assert (summary["revenue"], summary["orders"], summary["units"]) == (
        expected["revenue"],
        len(expected["orders"]),
        expected["units"],
    )
    customers = (
        iceberg.load_table(schema.TABLES[schema.GOLD_CUSTOMER_ANALYTICS].qualified)
        .scan(row_filter=EqualTo("date", DAY.isoformat()))
        .to_arrow()
        .to_pylist()
    )
    assert sum(c["revenue"] for c in customers) == expected["revenue"]
    # the row count the job reported for each table equals what the table holds for the day
    for event in (e for e in gold_run["events"] if e["__typename"] == "MaterializationEvent"):
        table = "/".join(event["assetKey"]["path"])
        reported = next(m["intValue"] for m in event["metadataEntries"] if m["label"] == "dagster/row_count")
        rows = (
            iceberg.load_table(schema.TABLES[table].qualified).scan(row_filter=EqualTo("date", DAY.isoformat())).count()
        )
        assert event["partition"] == DAY.isoformat() and reported == rows > 0, table


def test_the_ui_through_a_port_forward_shows_the_gold_assets_checks_and_run(cluster, gold_run, webserver):
    base = webserver.url.removesuffix("/graphql")
    check_gold_in_dagster_ui(base, LOCATION, gold_run["run"]["runId"], SCREENSHOTS / "cluster")


@pytest.fixture(scope="module")
def host_launcher(cluster, lake_access, tmp_path_factory):
    """The launcher on this host against the cluster (kubeconfig) and the lake (port-forwards), for
    ops a test runs in-process."""
    launcher_settings = cluster.kubectl_json("get", "configmap", "shopstream-launcher")["data"]
    on_host = LakeResource(
        home=str(tmp_path_factory.mktemp("host-home")),
        catalog_uri=lake_access.catalog_uri,
        warehouse=lake_access.warehouse,
        catalog_user=lake_access.catalog_user or "",
        catalog_password=lake_access.catalog_password or "",
        s3_endpoint=lake_access.s3_endpoint or "",
    )
    return KubernetesSparkLauncher(
        lake=on_host,
        applications=SparkApplicationsClient(namespace=NAMESPACE, kubeconfig_file=str(cluster.kubeconfig)),
        application_defaults=launcher_settings["SHOPSTREAM_SPARK_APP_DEFAULTS"],
    )


def step_failures(result) -> list[str]:
    """What each failed step of an in-process Dagster run said, for the assertion message."""
    return [
        e.step_failure_data.user_failure_data.description
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE" and e.step_failure_data.user_failure_data
    ]


def test_table_maintenance_runs_on_object_storage(cluster, lake_access, gold_run, host_launcher):
    before = counts(lake_access)
    result = dg.materialize(
        [iceberg_table_maintenance], resources={"spark_launcher": host_launcher}, run_config=QUIET, raise_on_error=False
    )
    assert result.success, step_failures(result)
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
    # bronze commits after the silver rows and before sessions and quarantine: the batch is under way
    cluster.wait_for(
        lambda: counts(lake_access)[schema.BRONZE_EVENTS] > bronze_before, "a batch of the new data", 600, interval=1
    )
    cluster.kubectl("delete", "pod", f"{STREAMING_APP}-driver", "--wait=false")
    log("deleted the streaming driver pod mid-batch")
    cluster.kubectl("wait", "--for=condition=complete", "job/generate-driver-killed", "--timeout=600s", timeout=660)
    stream_running(cluster)
    wait_until_streamed(
        cluster, lake_access, Expected([SENDS[name] for name in ("first", "after-upgrade", "driver-killed")])
    )


def lake_settings_with(credentials: dict[str, str]) -> lake.LakeSettings:
    """The host's lake settings (port-forwards of lake_access) with other client credentials."""
    with pytest.MonkeyPatch.context() as patch:
        for key in ("AWS_SECRET_ACCESS_KEY", "SHOPSTREAM_CATALOG_PASSWORD"):
            patch.setenv(key, credentials[key])
        return lake.LakeSettings.from_env()


def test_rotated_credentials_reach_every_client_and_the_pipeline_runs_again(cluster, lake_access, monkeypatch):
    """`helm upgrade --set credentials.rotation=1`, then Dagster's pods restarted, as docs/kubernetes.md
    says: the old keys stop working, MinIO and PostgreSQL keep running (and their data), the stream
    is resubmitted with the new keys, and a new day goes through the stream and Dagster's gold run."""
    secrets = ("shopstream-credentials", "shopstream-dagster-postgresql", "shopstream-admin-credentials")
    before = {name: cluster.secret(name) for name in secrets}
    servers = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in cluster.kubectl_json("get", "pods", "-l", "app.kubernetes.io/component in (minio,postgres)")["items"]
    }
    submission = cluster.application(STREAMING_APP)["status"]["submissionID"]
    counted = counts(lake_access)

    cluster.install_platform(cluster.values_files, "credentials.rotation=1", upgrade=True)
    after = {name: cluster.secret(name) for name in secrets}
    client, old_client = after["shopstream-credentials"], before["shopstream-credentials"]
    assert client["AWS_ACCESS_KEY_ID"] == old_client["AWS_ACCESS_KEY_ID"] == "shopstream-lake"
    assert client["AWS_SECRET_ACCESS_KEY"] != old_client["AWS_SECRET_ACCESS_KEY"]
    assert client["SHOPSTREAM_CATALOG_PASSWORD"] != old_client["SHOPSTREAM_CATALOG_PASSWORD"]
    assert after["shopstream-dagster-postgresql"] != before["shopstream-dagster-postgresql"]
    assert after["shopstream-admin-credentials"] == before["shopstream-admin-credentials"]
    assert {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in cluster.kubectl_json("get", "pods", "-l", "app.kubernetes.io/component in (minio,postgres)")["items"]
    } == servers

    # the old keys are refused, the new ones work, and they reach only the lake
    old, new = lake_settings_with(old_client), lake_settings_with(client)
    with pytest.raises(Exception, match="password authentication failed"):
        lake.iceberg_catalog(old).list_namespaces()
    import psycopg2

    host, port = new.catalog_uri.split("//")[1].split("/")[0].split(":")
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(
            host=host,
            port=port,
            dbname="dagster",
            user=new.catalog_user,
            password=client["SHOPSTREAM_CATALOG_PASSWORD"],
        ).close()
    from pyarrow import fs

    def bucket(credentials):
        return fs.S3FileSystem(
            endpoint_override=lake_access.s3_endpoint,
            scheme="http",
            region="us-east-1",
            access_key=credentials["AWS_ACCESS_KEY_ID"],
            secret_key=credentials["AWS_SECRET_ACCESS_KEY"],
        )

    with pytest.raises(OSError):
        bucket(old_client).get_file_info(fs.FileSelector("shopstream/warehouse"))
    assert bucket(client).get_file_info(fs.FileSelector("shopstream/warehouse"))
    with pytest.raises(OSError):
        bucket(client).create_dir("another-bucket")
    for key in ("AWS_SECRET_ACCESS_KEY", "SHOPSTREAM_CATALOG_PASSWORD"):
        monkeypatch.setenv(key, client[key])
    assert counts(new) == counted  # MinIO's and PostgreSQL's data survived

    # the stream comes back on a new submission, with the new keys
    cluster.wait_for(
        lambda: (
            (cluster.application(STREAMING_APP) or {}).get("status", {}).get("submissionID") not in (None, submission)
        ),
        "the stream to be resubmitted",
        600,
    )
    stream_running(cluster)
    driver = cluster.kubectl_json("get", "pod", f"{STREAMING_APP}-driver")
    assert driver["metadata"]["annotations"]["shopstream.io/credentials-rotation"] == "1"
    send(cluster, "after-rotation", SENDS["after-rotation"])
    wait_until_streamed(cluster, new, Expected(list(SENDS.values())))

    # Dagster reads its Secrets at start: restart it, then gold for the new day
    for deployment in cluster.kubectl(
        "get", "deployments", "-l", "app.kubernetes.io/instance=dagster", "-o", "name"
    ).stdout.split():
        cluster.kubectl("rollout", "restart", deployment)
        cluster.kubectl("rollout", "status", deployment, "--timeout=600s", timeout=660)
    with dagster_webserver(cluster) as webserver:
        assert_gold_succeeded(cluster, run_gold(cluster, webserver, SENDS["after-rotation"].start_date))


def test_a_new_app_image_reloads_the_code_location_and_the_health_sensor_alerts(cluster):
    """An image change (what skaffold does on a code change) rolls the code server, webserver and
    daemon; the daemon loads the new location, so the sensor's alert run, once the stream is
    stopped, runs the new image."""
    new_image = cluster.images["app"] + "-reloaded"
    cluster.retag(cluster.images["app"], new_image)
    cluster.load(new_image)
    cluster.untag(new_image)
    cluster.install_dagster(new_image, *DAGSTER_TEST_VALUES)
    wait_for_the_daemon_to_reload(cluster, new_image)
    with dagster_webserver(cluster) as webserver:
        alerts_before = {r["runId"] for r in webserver.runs("streaming_health_alert")}
        cluster.install_platform(cluster.values_files, "streaming.enabled=false", upgrade=True)
        assert cluster.application(STREAMING_APP) is None

        def missing_stream_alert():
            finished = [
                r
                for r in webserver.runs("streaming_health_alert")
                if r["runId"] not in alerts_before and r["status"] in ("SUCCESS", "FAILURE")
            ]
            return [
                (r, said)
                for r in finished
                for said in [failures(webserver.events(r["runId"]))]
                if any("streaming SparkApplication is MISSING" in s for s in said)
            ]

        [(alert, said), *_] = cluster.wait_for(
            missing_stream_alert, "the health sensor's alert run on the stopped stream", 600, interval=5
        )
    assert alert["status"] == "FAILURE", said
    assert tags(alert)["dagster/image"] == new_image
    assert tags(alert)["shopstream/alert"] == "streaming"


def wait_for_the_daemon_to_reload(cluster, image: str) -> None:
    """The daemon's new pod may start while the old code server still answers behind the service;
    it then keeps the old location (and image) until its next periodic workspace reload. Dagster
    documents no signal for that reload, so: until the old code server is gone, then one interval."""

    def old_code_servers_gone():
        pods = cluster.kubectl_json("get", "pods", "-l", "component=user-deployments")["items"]
        return all(c["image"].endswith(image) for pod in pods for c in pod["spec"]["containers"])

    cluster.wait_for(old_code_servers_gone, "the old code server pods to go", 300)
    time.sleep(RELOAD_WORKSPACE_INTERVAL + 2 * THREAD_CHECK_INTERVAL)


def project_image_tags() -> set[str]:
    """The tags of the project's two images in Docker (the cluster stage's and skaffold's)."""
    return {
        ref
        for name in ("spark", "app")
        for ref in docker(
            "images", IMAGES[name].repository, "--format", "{{.Repository}}:{{.Tag}}", check=True
        ).stdout.split()
    }


def test_skaffold_builds_from_local_bases_loads_into_kind_and_deploys_the_platform(cluster, tmp_path, request):
    """What `skaffold dev` does for the project's own parts, run for real with the kind-local profile:
    both images built from this stage's base images, loaded into the node by skaffold's kind loader,
    the platform chart upgraded to them; the stream comes back on skaffold's Spark image."""
    values = yaml.safe_load((HERE / "values" / "platform.yaml").read_text())
    third_party = chart_image_values(cluster.images)["images"]
    values["images"] = {name: third_party[name] for name in ("minio", "postgres")}
    values_file = tmp_path / "platform.yaml"
    values_file.write_text(yaml.safe_dump(values))
    tags_before = project_image_tags()
    request.addfinalizer(lambda: cluster.untag(*sorted(project_image_tags() - tags_before)))
    # skaffold runs helm, kubectl, kind and docker from PATH: the stage's helm, kindctl's kind shim,
    # and behind it a docker CLI that builds with BuildKit (without buildx, one that drops `--load`)
    docker = docker_client()
    if subprocess.run([docker, "buildx", "version"], capture_output=True).returncode != 0:
        docker = str(HERE / "docker-without-load")
    env = {
        **cluster.env,
        "PATH": f"{Path(cluster.helm_bin).parent}:{cluster.env['PATH']}",
        "KUBECONFIG": str(cluster.kubeconfig),
        "KINDCTL_REAL_DOCKER": docker,
        "SHOPSTREAM_REAL_DOCKER": docker_client(),
        "MAVEN_IMAGE": cluster.images["maven"],
        "SPARK_IMAGE": cluster.images["spark-base"],
        "PYTHON_IMAGE": cluster.images["python"],
        "SHOPSTREAM_PLATFORM_VALUES": str(values_file),
        "SKAFFOLD_UPDATE_CHECK": "false",
    }
    started = time.monotonic()
    done = subprocess.run(
        [
            str(skaffold()),
            "run",
            "-m",
            "platform",
            "-p",
            "kind-local",
            "--kube-context",
            cluster.context,
            "--cache-artifacts=false",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    log(f"skaffold run -m platform -p kind-local: exit {done.returncode} in {time.monotonic() - started:.0f}s")
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "Loading images into kind cluster nodes" in done.stdout + done.stderr
    # skaffold's own tags (inputDigest), handed to the chart by setValueTemplates
    images = json.loads(cluster.helm("get", "values", "shopstream", "-n", NAMESPACE, "-o", "json").stdout)["images"]
    built = {name: f"{images[name]['repository']}:{images[name]['tag']}" for name in ("spark", "app")}
    assert built["spark"].startswith("shopstream-spark:") and built["app"].startswith("shopstream-app:")
    assert built["spark"] != cluster.images["spark"] and built["app"] != cluster.images["app"]
    # the release now runs skaffold's images: the stream, and the spec every launched job shares
    stream_running(cluster)
    assert cluster.application(STREAMING_APP)["spec"]["image"] == built["spark"]
    defaults = json.loads(
        cluster.kubectl_json("get", "configmap", "shopstream-launcher")["data"]["SHOPSTREAM_SPARK_APP_DEFAULTS"]
    )
    assert defaults["image"] == built["spark"]
    assert all(cluster.node_has_image(ref) for ref in built.values()), built
