"""The launcher in kubernetes mode against a real API server, with the operator stand-in playing
the Spark operator: success with real gold output from one application, a failed audit reported
with its counts, failures with the operator's message, timeout
and cancellation deleting the application, a watch that survives a dropped connection and a
410 Gone, and clear messages when the cluster is not ready."""

import datetime as dt
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
from kubernetes import client

from dagster_repo.defs.assets import GOLD_ASSET
from dagster_repo.defs.completeness import CompletenessGate
from dagster_repo.defs.launcher import KubernetesSparkLauncher, SparkJobConfig
from dagster_repo.defs.resources import (
    KafkaResource,
    LakeResource,
    SparkApplicationsClient,
    StreamingSparkApplication,
)
from dagster_repo.kube import spark_application as sa
from dagster_repo.monitoring.health import Thresholds
from shopstream import catalog, lake, schema
from shopstream.events.broker import free_port
from tests.batch.test_gold import DAY, PAGE_VIEWS, write_silver
from tests.kube.conftest import install_crds
from tests.kube.operator import DRIVER_FAILURE, REPO

pytestmark = pytest.mark.k8s

IMAGE = "registry.local/shopstream-spark:test"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def applications_client(kube_api, namespace, kubeconfig_file: str | None = None) -> SparkApplicationsClient:
    return SparkApplicationsClient(namespace=namespace, kubeconfig_file=kubeconfig_file or str(kube_api.kubeconfig))


def launcher(kube_api, namespace, kubeconfig_file: str | None = None, **overrides) -> KubernetesSparkLauncher:
    # results land in this lake's warehouse; the jobs the operator stand-in runs find theirs in its environment
    lake_resource = LakeResource(home=str(Path(tempfile.gettempdir()) / "shopstream-launcher-tests"))
    return KubernetesSparkLauncher(
        lake=lake_resource,
        applications=applications_client(kube_api, namespace, kubeconfig_file),
        **{"image": IMAGE, "service_account": "shopstream-spark", **overrides},
    )


class ProbeConfig(SparkJobConfig):
    job: str = "maintenance"


@dg.asset
def probe(context: dg.AssetExecutionContext, config: ProbeConfig, spark_launcher: KubernetesSparkLauncher):
    launch = spark_launcher.run(context, config.job, [], config)
    return dg.MaterializeResult(metadata=launch.metadata())


def run_probe(
    resource: KubernetesSparkLauncher, instance: dg.DagsterInstance | None = None, **config
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [probe],
        resources={"spark_launcher": resource},
        raise_on_error=False,
        instance=instance,
        run_config={**QUIET, "ops": {"probe": {"config": config}}},
    )


def failure_of(result: dg.ExecuteInProcessResult) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = event.step_failure_data
    if data.user_failure_data and data.user_failure_data.description:
        return data.user_failure_data.description
    return data.error.to_string()  # an unexpected exception: its whole chain


def applications(kube_api, namespace) -> list[dict]:
    custom = client.CustomObjectsApi(kube_api.api_client())
    return custom.list_namespaced_custom_object(sa.GROUP, sa.VERSION, namespace, sa.PLURAL)["items"]


def metadata_of(result) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def gold_launch(kube_api, namespace, lake_settings, monkeypatch) -> dg.ExecuteInProcessResult:
    """The gold asset for DAY in kubernetes mode: the stand-in runs the job the application names, with
    local Spark on this test's lake."""
    monkeypatch.setenv("SHOPSTREAM_CATALOG_URI", lake_settings.catalog_uri)
    monkeypatch.setenv("SHOPSTREAM_WAREHOUSE", lake_settings.warehouse)
    # silver written here, without Kafka: no stream to wait for
    lake_resource = LakeResource(
        home=str(Path(tempfile.gettempdir()) / "shopstream-launcher-tests"),
        catalog_uri=lake_settings.catalog_uri,
        warehouse=lake_settings.warehouse,
    )
    return dg.materialize(
        [GOLD_ASSET],
        partition_key=DAY.isoformat(),
        resources={
            "spark_launcher": launcher(kube_api, namespace),
            "completeness": CompletenessGate(lake=lake_resource, kafka=KafkaResource()),
        },
        run_config={**QUIET, "ops": {GOLD_ASSET.op.name: {"config": {"require_complete_day": False}}}},
        raise_on_error=False,
    )


def test_success_writes_real_gold(kube_api, namespace, operator, empty_lake, lake_settings, monkeypatch):
    """One SparkApplication computes every gold table of the day, checks it and publishes it."""
    write_silver(empty_lake)
    operator.behaviour = "run"
    result = gold_launch(kube_api, namespace, lake_settings, monkeypatch)
    assert result.success, failure_of(result)
    events = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    assert set(events) == set(catalog.GOLD.writes)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert sorted(checks) == sorted(c.name for c in catalog.GOLD_CHECKS) and all(c.passed for c in checks.values())
    summary = events[schema.GOLD_SALES_SUMMARY]
    assert summary["launcher_mode"].value == "kubernetes"
    assert summary["dagster/row_count"].value == 1  # one summary row for the day, read back from the job's result
    assert summary["totals"].value == {"revenue": "79.00", "orders": 5}
    assert events[schema.GOLD_CUSTOMER_ANALYTICS]["dagster/row_count"].value == 5
    assert [t["state"] for t in summary["state_history"].value][-3:] == ["SUBMITTED", "RUNNING", "COMPLETED"]
    name = summary["spark_application"].value
    assert {e["spark_application"].value for e in events.values()} == {name}, "one application for every table"
    assert summary["driver_pod"].value == f"{name}-driver"
    assert summary["namespace"].value == namespace
    assert "published" in operator.logs[name]
    purchases = lake.iceberg_catalog(lake_settings).load_table(schema.PURCHASES.qualified).current_snapshot()
    assert summary["silver_snapshots"].value[schema.SILVER_PURCHASES] == purchases.snapshot_id
    [app] = applications(kube_api, namespace)
    assert app["metadata"]["labels"]["dagster.io/partition"] == DAY.isoformat()
    assert app["metadata"]["labels"]["dagster.io/run-id"] == result.run_id
    assert app["spec"]["arguments"][:3] == ["gold", "--date", DAY.isoformat()]
    # the gold row is really there
    rows = lake.iceberg_catalog(lake_settings).load_table(schema.SALES_SUMMARY.qualified).scan().to_arrow().to_pylist()
    assert [r["date"] for r in rows] == [DAY]


def test_a_failed_audit_reports_its_counts_and_publishes_nothing(
    kube_api, namespace, operator, empty_lake, lake_settings, monkeypatch
):
    """Silver where p1 and p2 were each bought in three sessions but viewed twice: the driver exits
    with the audit's status, the application ends FAILED, and the asset reports the failed check
    from the job's result file, materializes nothing and fails without a retry."""
    write_silver(empty_lake, page_views=PAGE_VIEWS)
    operator.behaviour = "run"
    result = gold_launch(kube_api, namespace, lake_settings, monkeypatch)
    assert not result.success
    assert result.get_asset_materialization_events() == []
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {name: c.passed for name, c in checks.items()} == {"product_views_cover_purchases": False}
    metadata = {k: v.value for k, v in checks["product_views_cover_purchases"].metadata.items()}
    assert (metadata["products_with_views_below_sessions"], metadata["examples"]) == (2, ["p1", "p2"])
    assert failure_of(result) == (
        f"gold {DAY} not published, checks failed: product_views_cover_purchases: "
        "views below purchasing sessions: products_with_views_below_sessions 2"
    )
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    [app] = applications(kube_api, namespace)
    assert app["status"]["applicationState"]["state"] == sa.FAILED
    iceberg = lake.iceberg_catalog(lake_settings)
    for name in catalog.GOLD.writes:
        table = iceberg.load_table(schema.TABLES[name].qualified)
        assert table.scan().count() == 0 and set(table.metadata.refs) == {"main"}, name


def test_failed_application_surfaces_the_operators_message(kube_api, namespace, operator):
    operator.behaviour = "fail"
    result = run_probe(launcher(kube_api, namespace))
    assert not result.success
    message = failure_of(result)
    assert "ended FAILED" in message and DRIVER_FAILURE in message


def test_submission_failure_surfaces_the_operators_message(kube_api, namespace, operator):
    operator.behaviour = "reject"
    result = run_probe(launcher(kube_api, namespace))
    assert "ended SUBMISSION_FAILED" in failure_of(result)
    assert "failed to run spark-submit" in failure_of(result)


def test_timeout_deletes_the_application(kube_api, namespace, operator):
    operator.behaviour = "hang"
    started = time.monotonic()
    result = run_probe(launcher(kube_api, namespace), timeout_seconds=6)
    assert not result.success
    assert "did not finish before the timeout" in failure_of(result) and "was deleted" in failure_of(result)
    assert time.monotonic() - started < 60
    assert applications(kube_api, namespace) == []


CANCELLABLE = """
import sys
from tests.kube.test_launcher import launcher, run_probe
class Server: kubeconfig = sys.argv[1]
run_probe(launcher(Server, sys.argv[2]), timeout_seconds=600)
"""
# no `from __future__ import annotations`: Dagster reads the probe asset's config annotation at definition time


def test_cancellation_deletes_the_application(kube_api, namespace, operator):
    operator.behaviour = "hang"
    run = subprocess.Popen(
        [sys.executable, "-c", CANCELLABLE, str(kube_api.kubeconfig), namespace],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not any(sa.state_of(a) == "RUNNING" for a in applications(kube_api, namespace)):
            assert run.poll() is None, run.stdout.read()
            assert time.monotonic() < deadline, "the application never started"
            time.sleep(0.3)
        run.send_signal(signal.SIGINT)  # what Dagster delivers to a run's process when the run is terminated
        output = run.communicate(timeout=60)[0]
    finally:
        if run.poll() is None:
            run.kill()
    assert applications(kube_api, namespace) == [], output
    assert "deleting SparkApplication" in output


def test_watch_survives_a_dropped_connection_and_410_gone(kube_api, namespace, operator):
    operator.behaviour = "hang"
    resource = launcher(kube_api, namespace, kubeconfig_file=str(kube_api.proxied_kubeconfig))
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", run_probe(resource, timeout_seconds=120)))
    thread.start()
    custom = client.CustomObjectsApi(kube_api.api_client())
    deadline = time.monotonic() + 60
    while not any(sa.state_of(a) == "RUNNING" for a in applications(kube_api, namespace)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)  # the launcher is now inside its watch
    [app] = applications(kube_api, namespace)
    # Move etcd on and compact it (the open watch does not mind), then drop every connection: the
    # resourceVersion the launcher resumes from no longer exists, and the server answers 410 Gone.
    # (A watch from revision R starts at R + 1, so it takes two writes to compact past it.)
    for bump in ("bump-1", "bump-2"):
        client.CoreV1Api(kube_api.api_client()).create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=bump))
        )
    kube_api.compact()
    assert kube_api.proxy.cut() >= 1
    time.sleep(4)
    custom.patch_namespaced_custom_object_status(
        sa.GROUP,
        sa.VERSION,
        namespace,
        sa.PLURAL,
        app["metadata"]["name"],
        {
            "status": {
                "applicationState": {"state": "COMPLETED"},
                "terminationTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        },
    )
    thread.join(timeout=90)
    result = outcome["result"]
    assert result.success, failure_of(result)
    metadata = metadata_of(result)
    assert metadata["watch_reconnects"] >= 1
    assert metadata["watch_relists_after_410"] >= 1
    assert metadata["state_history"][-1]["state"] == "COMPLETED"


def test_an_api_server_that_hangs_up_for_a_while_costs_retries_not_the_run(kube_api, namespace, operator):
    """A restarting API server or a load balancer failover: connections are refused for a few
    seconds; the launcher retries with backoff, says so in the run's log, and the run succeeds."""
    resource = launcher(kube_api, namespace, kubeconfig_file=str(kube_api.proxied_kubeconfig))
    refused_before = kube_api.proxy.refused
    instance = dg.DagsterInstance.ephemeral()
    kube_api.proxy.refuse_for(4)
    result = run_probe(resource, instance=instance)
    assert result.success, failure_of(result)
    assert kube_api.proxy.refused > refused_before
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("reaching the API: transient API error" in m for m in messages), messages
    assert metadata_of(result)["state_history"][-1]["state"] == "COMPLETED"


def test_a_spec_the_crd_rejects_gives_a_clear_error(kube_api, namespace, operator):
    # A core request written as a number (unquoted in YAML); the operator's CRD types it as a string.
    # (Its imagePullPolicy is an open string: a bad one passes the CRD and fails the driver pod.)
    result = run_probe(launcher(kube_api, namespace, application_defaults='{"driver": {"coreRequest": 0.5}}'))
    message = failure_of(result)
    assert "the cluster refused SparkApplication" in message and "spec.driver.coreRequest" in message
    assert applications(kube_api, namespace) == []


def test_preflight_messages(kube_api, namespace, tmp_path):
    missing_namespace = failure_of(run_probe(launcher(kube_api, "no-such-namespace")))
    assert "namespace 'no-such-namespace' does not exist" in missing_namespace
    missing_account = failure_of(run_probe(launcher(kube_api, namespace, service_account="ghost")))
    assert "service account 'ghost' does not exist in namespace" in missing_account
    unreachable = kube_api.write_kubeconfig(tmp_path / "closed.kubeconfig", port=1)
    assert "cannot reach the Kubernetes API at https://127.0.0.1:1" in failure_of(
        run_probe(launcher(kube_api, namespace, kubeconfig_file=str(unreachable)))
    )


def test_preflight_message_when_the_crd_is_missing(kube_api, namespace):
    extensions = client.ApiextensionsV1Api(kube_api.api_client())
    extensions.delete_custom_resource_definition(sa.CRD_NAME)
    try:
        deadline = time.monotonic() + 60
        while any(c.metadata.name == sa.CRD_NAME for c in extensions.list_custom_resource_definition().items):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        message = failure_of(run_probe(launcher(kube_api, namespace)))
        assert "the SparkApplication CRD (sparkapplications.sparkoperator.k8s.io, v1beta2) is not installed" in message
    finally:
        install_crds(kube_api.api_client(), only=sa.CRD_NAME)


def test_health_and_catch_up_read_the_streaming_applications_state(kube_api, namespace, operator, tmp_path):
    from dagster_repo.defs.assets import measure_streaming
    from dagster_repo.defs.jobs import streaming_catch_up

    operator.behaviour = "hang"
    resource = launcher(kube_api, namespace)
    lake_resource = LakeResource(home=str(tmp_path), checkpoint_dir=str(tmp_path / "checkpoints"))
    kafka = KafkaResource(bootstrap_servers=f"127.0.0.1:{free_port()}")  # nothing listens: lag is unknown
    streaming = StreamingSparkApplication(
        application="shopstream-streaming", applications=applications_client(kube_api, namespace)
    )
    stream = resource.application_spec(
        "streaming", ["--trigger", "10 seconds"], SparkJobConfig(), "shopstream-streaming", {}
    )
    custom = client.CustomObjectsApi(kube_api.api_client())
    custom.create_namespaced_custom_object(sa.GROUP, sa.VERSION, namespace, sa.PLURAL, stream.body())
    deadline = time.monotonic() + 30
    while measure_streaming(lake_resource, kafka, streaming).application_state != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert "application" not in measure_streaming(lake_resource, kafka, streaming).problems(Thresholds())

    # a catch-up would share the running stream's checkpoint: refused before anything is launched
    in_cluster = dg.Definitions(
        jobs=[streaming_catch_up], resources={"spark_launcher": resource, "streaming": streaming}
    )
    catch_up = in_cluster.resolve_job_def("streaming_catch_up").execute_in_process(
        run_config=QUIET, raise_on_error=False
    )
    assert not catch_up.success
    assert "shopstream-streaming is RUNNING and owns the checkpoint" in failure_of(catch_up)
    assert [a["metadata"]["name"] for a in applications(kube_api, namespace)] == ["shopstream-streaming"]

    custom.delete_namespaced_custom_object(sa.GROUP, sa.VERSION, namespace, sa.PLURAL, "shopstream-streaming")
    deadline = time.monotonic() + 30
    while (measured := measure_streaming(lake_resource, kafka, streaming)).application_state != "MISSING":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert measured.problems(Thresholds())["application"] == "the streaming SparkApplication is MISSING"
