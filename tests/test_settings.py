"""Settings have one owner: every SHOPSTREAM_* variable the product reads or documents is declared
in shopstream.settings, nothing else reads one, and reading settings creates nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dagster_repo.defs.resources import LakeResource
from shopstream import catalog, lake, settings
from shopstream.lake import LakeSettings

REPO = Path(__file__).resolve().parents[1]
VARIABLE = re.compile(r"SHOPSTREAM_[A-Z0-9_]*[A-Z0-9]")
# Variables of the test stage and of skaffold's kind profile, documented beside the product's own.
STAGE_VARIABLES = {"SHOPSTREAM_KEEP_CLUSTER", "SHOPSTREAM_PLATFORM_VALUES"}


def product_files():
    for folder in ("jobs", "dagster_repo", "charts", "images", "docs", "bench"):
        yield from (
            p
            for p in (REPO / folder).rglob("*")
            if p.is_file() and p.suffix in {".py", ".yaml", ".tpl", ".md", ".txt", ""}
        )
    yield from (REPO / name for name in ("README.md", "Makefile", "skaffold.yaml"))


def test_every_variable_named_in_the_product_is_a_declared_setting():
    declared = {s.variable for s in settings.ALL}
    named = {(path.relative_to(REPO), name) for path in product_files() for name in VARIABLE.findall(path.read_text())}
    undeclared = sorted((str(path), name) for path, name in named if name not in declared | STAGE_VARIABLES)
    assert undeclared == []
    assert len({s.variable for s in settings.ALL}) == len(settings.ALL)


def test_only_the_settings_module_reads_the_environment_for_them():
    reads = re.compile(r"(environ|getenv)[^\n]{0,40}SHOPSTREAM_")
    readers = [
        str(p.relative_to(REPO))
        for folder in ("jobs", "dagster_repo")
        for p in (REPO / folder).rglob("*.py")
        if reads.search(p.read_text()) and p.name != "settings.py"
    ]
    assert readers == []


def test_home_is_absolute_and_reading_settings_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"SHOPSTREAM_HOME": "relative/home"}
    assert settings.home(env) == tmp_path / "relative" / "home"
    found = LakeSettings.from_env(env)
    assert found.catalog_uri == f"jdbc:sqlite:{tmp_path}/relative/home/catalog.db"
    assert found.warehouse == f"file://{tmp_path}/relative/home/warehouse"
    assert lake.streaming_checkpoint(None, env) == f"{tmp_path}/relative/home/checkpoints/events"
    assert list(tmp_path.iterdir()) == []
    found.create_local_folders()
    assert (tmp_path / "relative" / "home" / "warehouse").is_dir()


def test_a_local_job_gets_the_same_absolute_lake_as_the_dagster_process(tmp_path, monkeypatch):
    """The local launcher's jobs run in the repository's folder, Dagster's checks wherever Dagster
    runs: a relative home given to both would name two different lakes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOPSTREAM_HOME", "lake-here")
    for variable in ("SHOPSTREAM_CATALOG_URI", "SHOPSTREAM_WAREHOUSE", "SHOPSTREAM_CHECKPOINT_DIR"):
        monkeypatch.delenv(variable, raising=False)
    resource = LakeResource.from_settings()
    child = resource.job_environment()
    assert child["SHOPSTREAM_HOME"] == str(tmp_path / "lake-here")
    assert LakeSettings.from_env(child) == resource.settings()


def test_a_bad_number_names_its_variable():
    with pytest.raises(ValueError, match="SHOPSTREAM_HEALTH_MAX_LAG='lots' is not a whole number"):
        settings.HEALTH_MAX_LAG.read_int({"SHOPSTREAM_HEALTH_MAX_LAG": "lots"})


def test_the_table_of_settings_is_printable():
    listing = subprocess.run(
        [sys.executable, "-m", "shopstream.settings"], capture_output=True, text=True, check=True
    ).stdout
    assert [line.split()[0] for line in listing.splitlines()] == [s.variable for s in settings.ALL]
    assert "SHOPSTREAM_HOME" in listing and "[default: .demo]" in listing


def test_the_readme_lists_the_job_catalog():
    assert catalog.markdown_table() in (REPO / "README.md").read_text()
