"""The completeness gate and the recompute sensor against a real broker, the real streaming job
(`streaming_catch_up`) and real gold runs through the local launcher, in a Dagster instance.

One story, in the order of the tests: three generated days are read into silver and the sales gold
of two of them is computed; late events for one day are sent (the gate then names the unread
partitions) and read; the sensor requests that day alone, its run gives the new totals, and the
next tick requests nothing, nor does one after a compaction."""

import datetime as dt
import itertools
import json
import time
from decimal import Decimal

import dagster as dg
import pytest
from pyiceberg.expressions import EqualTo

from dagster_repo.definitions import build_definitions
from dagster_repo.defs.assets import GOLD_ASSET, GOLD_TABLES, iceberg_table_maintenance
from dagster_repo.defs.completeness import CompletenessGate, recompute_sensor
from dagster_repo.monitoring import completeness as C
from shopstream import lake, schema
from shopstream.events.broker import KafkaBroker, create_topics, free_port
from shopstream.events.generator.cli import send
from shopstream.events.generator.shop import GeneratorConfig, Shop
from tests.dagster.resources import local_resources

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

DAY = dt.date(2026, 3, 9)
EARLIER = DAY - dt.timedelta(days=2)  # its gold reads up to DAY - 1: late events of DAY leave it alone
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def generated(seed: int, start: dt.date, days: int) -> Shop:
    return Shop(
        GeneratorConfig(
            seed=seed,
            start_date=start,
            days=days,
            events_per_day=300,
            late_fraction=0.0,
            duplicate_fraction=0.0,
            malformed_fraction=0.0,
        )
    )


def lateness_for(day: dt.date, moment: dt.datetime) -> int:
    """The allowed lateness that puts the cutoff of `day` at `moment`, to the whole second below."""
    return int((moment - C.cutoff(day, 0)).total_seconds())


def sales_of(catalog, day: dt.date) -> dict:
    table = catalog.load_table(schema.SALES_SUMMARY.qualified)
    [row] = table.scan(row_filter=EqualTo("date", day)).to_arrow().to_pylist()
    return row


def recompute_tick(world):
    """One evaluation of the recompute sensor (on the sales gold) three days after DAY."""
    sensor = recompute_sensor(
        GOLD_TABLES, lookback_days=7, interval_seconds=60, today=lambda: DAY + dt.timedelta(days=3)
    )
    with dg.build_sensor_context(
        instance=world["instance"], resources=world["resources"], repository_def=world["defs"].get_repository_def()
    ) as context:
        return sensor.evaluate_tick(context)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A broker with three generated days, read into silver; the sales gold of EARLIER and DAY."""
    broker = KafkaBroker(tmp_path_factory.mktemp("gate-kafka"), port=free_port()).start()
    module_lake = lake.LakeSettings.local(tmp_path_factory.mktemp("gate-lake"))
    resources = local_resources(tmp_path_factory, module_lake, broker.bootstrap_servers, allowed_lateness_seconds=1800)
    gate = resources["completeness"]
    defs = build_definitions("local", resources)
    try:
        with pytest.MonkeyPatch.context() as env, dg.DagsterInstance.ephemeral() as instance:
            env.setenv("SHOPSTREAM_SHUFFLE_PARTITIONS", "2")  # read by the jobs' own Spark
            create_topics(broker.bootstrap_servers)
            shop = generated(32, EARLIER, 3)  # purchases on each of the three days
            send(itertools.chain(shop.catalog(), shop.records()), broker.bootstrap_servers, show_progress=False)
            world = {
                "broker": broker,
                "catalog": lake.iceberg_catalog(module_lake),
                "defs": defs,
                "gate": gate,
                "instance": instance,
                "resources": resources,
            }
            world["catch_up"] = lambda: defs.resolve_job_def("streaming_catch_up").execute_in_process(
                instance=instance, run_config=QUIET
            )
            assert world["catch_up"]().success
            gold = defs.resolve_implicit_global_asset_job_def()
            world["gold"] = {
                day: gold.execute_in_process(
                    partition_key=day.isoformat(),
                    asset_selection=[dg.AssetKey(k) for k in GOLD_TABLES],
                    instance=instance,
                    run_config=QUIET,
                    raise_on_error=False,
                )
                for day in (EARLIER, DAY)
            }
            world["before"] = sales_of(world["catalog"], DAY)
            yield world
    finally:
        broker.stop()


def test_a_complete_day_passes_and_its_gold_records_the_silver_it_read(world):
    catalog = world["catalog"]
    for day, result in world["gold"].items():
        assert result.success, day
    [summary] = [
        e.materialization.metadata
        for e in world["gold"][DAY].get_asset_materialization_events()
        if e.asset_key.to_user_string() == schema.GOLD_SALES_SUMMARY
    ]
    purchases = catalog.load_table(schema.PURCHASES.qualified).current_snapshot()
    assert summary["silver_snapshots"].value[schema.SILVER_PURCHASES] == purchases.snapshot_id
    versions = summary["silver_versions"].value
    # the generated days are all among those DAY's gold follows (the trailing week and DAY)
    read = {d.isoformat() for d in C.dependent_days(DAY)}
    generated_days = {(EARLIER + dt.timedelta(days=n)).isoformat() for n in range(3)}
    assert generated_days == set(versions[schema.SILVER_PURCHASES]) <= read
    purchases = catalog.load_table(schema.PURCHASES.qualified).scan(row_filter=EqualTo("event_date", DAY)).to_arrow()
    assert versions[schema.SILVER_PURCHASES][DAY.isoformat()]["records"] == purchases.num_rows > 0


def test_the_gate_names_the_unread_partitions(world):
    """Late events for DAY are sent and not read yet: a cutoff before them passes, one after them
    lists exactly the unread raw-events records; the asset and the schedule act on it."""
    gate, bootstrap = world["gate"], world["broker"].bootstrap_servers
    late = list(generated(22, DAY, 1).records())
    before = dt.datetime.now(dt.UTC)
    time.sleep(1.1)  # the lateness is in whole seconds: a cutoff below `before` is still before every late record
    send(late, bootstrap, show_progress=False)
    world["late"] = late
    time.sleep(1.1)  # and a cutoff a second below `after` is after all of them
    after = dt.datetime.now(dt.UTC)

    started = time.monotonic()
    passed = gate.model_copy(update={"allowed_lateness_seconds": lateness_for(DAY, before)}).measure(DAY)
    world["gate_seconds"] = time.monotonic() - started
    assert passed.complete, passed.reason()
    waiting = gate.model_copy(update={"allowed_lateness_seconds": lateness_for(DAY, after)}).measure(DAY)
    assert not waiting.complete
    assert {lag.topic for lag in waiting.lagging} == {schema.TOPIC_RAW_EVENTS}
    assert sum(lag.needed - lag.consumed for lag in waiting.lagging) == len(late)
    assert "raw-events/" in waiting.reason() and "needs" in waiting.reason()

    # the gold asset refuses the day at once, with that reason, before any Spark job
    strict = CompletenessGate(lake=gate.lake, kafka=gate.kafka, allowed_lateness_seconds=lateness_for(DAY, after))
    refused = dg.materialize(
        [GOLD_ASSET],
        partition_key=DAY.isoformat(),
        resources={**world["resources"], "completeness": strict},
        run_config=QUIET,
        raise_on_error=False,
    )
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.user_failure_data.description == waiting.reason()
    assert not refused.get_asset_materialization_events()

    # the daily schedule: a skipped tick with the same reason, and a run request once the day is complete
    tick_time = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(2), dt.UTC)
    defs = world["defs"]
    schedule = defs.resolve_schedule_def("daily_gold_processing_schedule")

    def tick(completeness: CompletenessGate):
        with dg.build_schedule_context(
            scheduled_execution_time=tick_time,
            resources={"completeness": completeness},
            repository_def=defs.get_repository_def(),
        ) as context:
            return schedule.evaluate_tick(context)

    skipped = tick(strict)
    assert skipped.skip_message == waiting.reason() and not skipped.run_requests
    ready = tick(gate.model_copy(update={"allowed_lateness_seconds": lateness_for(DAY, before)}))
    [request] = ready.run_requests
    assert (request.partition_key, request.run_key) == (DAY.isoformat(), DAY.isoformat())


def test_late_events_recompute_their_day_and_leave_the_others(world):
    instance, catalog = world["instance"], world["catalog"]
    assert world["catch_up"]().success  # the late events reach silver
    started = time.monotonic()
    result = recompute_tick(world)
    world["sensor_seconds"] = time.monotonic() - started
    [request] = result.run_requests
    assert request.partition_key == DAY.isoformat()  # EARLIER's silver did not change
    assert set(request.asset_selection) == set(GOLD_ASSET.keys)  # computed together
    assert schema.SILVER_PURCHASES in request.tags["shopstream/recompute"]

    started = time.monotonic()
    rerun = (
        world["defs"]
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(
            partition_key=request.partition_key,
            asset_selection=request.asset_selection,
            instance=instance,
            tags=request.tags,
            run_config=QUIET,
        )
    )
    assert rerun.success
    world["recompute_seconds"] = time.monotonic() - started
    lines = [json.loads(r.value) for r in world["late"] if r.event_type == "purchase"]
    assert lines, "the late batch has purchases"
    after, before = sales_of(catalog, DAY), world["before"]
    assert after["orders"] == before["orders"] + len({line["order_id"] for line in lines})
    added = sum(
        Decimal(str(line["quantity"])) * Decimal(str(line["unit_price"])) - Decimal(str(line["discount"]))
        for line in lines
    )
    assert after["revenue"] == before["revenue"] + added

    # the new gold recorded the new versions: the next tick has nothing to do
    again = recompute_tick(world)
    assert not again.run_requests
    assert again.skip_message == f"silver unchanged since the gold of {EARLIER}, {DAY} was computed"
    print(
        f"gate against the broker: {world['gate_seconds']:.2f}s; sensor tick: {world['sensor_seconds']:.2f}s; "
        f"recomputed sales gold of {DAY}: {world['recompute_seconds']:.1f}s"
    )


def test_a_compaction_of_the_recomputed_day_requests_nothing(world):
    """Maintenance rewrites the closed days' files (the late batch left DAY with two of each) but no
    rows: the versions the gold recorded still hold."""
    maintenance = dg.materialize(
        [iceberg_table_maintenance], resources=world["resources"], run_config=QUIET, raise_on_error=False
    )
    assert maintenance.success
    [event] = maintenance.get_asset_materialization_events()
    assert event.materialization.metadata["files_rewritten"].value > 0
    result = recompute_tick(world)
    assert not result.run_requests
    assert result.skip_message == f"silver unchanged since the gold of {EARLIER}, {DAY} was computed"
