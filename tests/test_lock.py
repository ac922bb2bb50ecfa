"""requirements.lock against pyproject.toml, offline: every pin of pyproject.toml (the base
dependencies, the orchestration and dev extras, the build backend) is exact and appears in the lock at
the same version, and every package of the lock carries hashes. A pin changed without `make lock`
fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
EXTRAS = ("orchestration", "dev")  # what `make` installs; `make lock` compiles the same


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    lines = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    for extra in EXTRAS:
        lines += project["project"]["optional-dependencies"][extra]
    pins = {}
    for line in lines:
        requirement = Requirement(line)
        [spec] = requirement.specifier  # one specifier each
        assert spec.operator == "==", f"{line!r} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def lock_entries() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of each package in the lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in LOCK.read_text().splitlines():
        if found := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: ;.*)? \\$", line):
            name = canonicalize_name(found[1])
            assert name not in entries, f"{name} appears twice in the lock"
            entries[name] = (found[2], [])
        elif found := re.match(r"\s+--hash=(sha256:[0-9a-f]{64})", line):
            assert name, f"a hash before any package: {line!r}"
            entries[name][1].append(found[1])
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"unexpected line in the lock: {line!r}")
    return entries


def test_every_pin_is_in_the_lock():
    pins, entries = pyproject_pins(), lock_entries()
    assert {"dagster", "pyspark", "pytest", "ruff", "mypy", "uv", "setuptools"} <= pins.keys()
    wrong = {
        name: (version, entries.get(name, ("missing",))[0])
        for name, version in pins.items()
        if entries.get(name, ("missing",))[0] != version
    }
    assert not wrong, f"pyproject.toml and requirements.lock disagree (pin, lock): {wrong}; run `make lock`"


def test_every_locked_package_has_hashes():
    entries = lock_entries()
    assert len(entries) > 100  # the transitive dependencies are there too
    assert not [name for name, (_, hashes) in entries.items() if not hashes]
