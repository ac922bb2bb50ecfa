"""The resources of a local deployment on a test's own lake and broker, as `dagster_repo.definitions`
wires them."""

from __future__ import annotations

from dagster_repo.defs.completeness import CompletenessGate
from dagster_repo.defs.launcher import LocalSparkLauncher
from dagster_repo.defs.resources import KafkaResource, LakeResource, StreamingJob
from shopstream.lake import LakeSettings


def local_resources(tmp_path_factory, lake_settings: LakeSettings, bootstrap_servers: str, **gate_fields) -> dict:
    """Every resource the local definitions need; `gate_fields` set the completeness gate's fields."""
    lake_resource = LakeResource(
        home=str(tmp_path_factory.mktemp("home")),
        catalog_uri=lake_settings.catalog_uri,
        warehouse=lake_settings.warehouse,
        checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints")),
    )
    kafka = KafkaResource(bootstrap_servers=bootstrap_servers)
    return {
        "lake": lake_resource,
        "kafka": kafka,
        "spark_launcher": LocalSparkLauncher(lake=lake_resource, kafka=kafka),
        "streaming": StreamingJob(),
        "completeness": CompletenessGate(lake=lake_resource, kafka=kafka, **gate_fields),
    }
