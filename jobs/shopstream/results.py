"""The small machine-readable result every job writes (`--result-file`), for the orchestrator to
read back as metadata.

A result location is a local path (the local launcher) or a URI in the warehouse's storage, such
as s3://bucket/warehouse/_job_results/<name>.json (a SparkApplication, whose driver runs in another
pod); URIs go through pyiceberg's FileIO with the lake's storage settings, so both sides reach the
same object store the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shopstream.lake import LakeSettings


def _is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def _local_path(location: str) -> Path:
    return Path(location.removeprefix("file://"))


def _file_io(location: str, settings: LakeSettings | None):
    from pyiceberg.io import load_file_io

    properties = (settings or LakeSettings.from_env()).pyiceberg_properties()
    properties.pop("uri", None)  # storage settings only; the catalog is not needed here
    return load_file_io(properties, location)


def write_result(location: str | Path | None, settings: LakeSettings | None = None, **result: Any) -> None:
    """Write `result` as JSON; a local file atomically (a reader never sees half a file)."""
    if not location:
        return
    location = str(location)
    data = (json.dumps(result, indent=2, sort_keys=True, default=str) + "\n").encode()
    if _is_local(location):
        path = _local_path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return
    # Object stores replace an object whole, so a plain overwrite is already atomic for readers.
    with _file_io(location, settings).new_output(location).create(overwrite=True) as out:
        out.write(data)


def read_result(location: str, settings: LakeSettings | None = None) -> dict | None:
    """The result written at `location`, or None when the job wrote none."""
    if _is_local(location):
        path = _local_path(location)
        return json.loads(path.read_text()) if path.exists() else None
    source = _file_io(location, settings).new_input(location)
    if not source.exists():
        return None
    with source.open() as stream:
        return json.loads(stream.read())
