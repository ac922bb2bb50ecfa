"""Where the embedded default keeps its files, and how it gets the JVM jars.

Everything downloaded or built goes under the user's cache directory
(`$SHOPSTREAM_CACHE`, else `$XDG_CACHE_HOME/shopstream`, else `~/.cache/shopstream`); nothing
depends on it being there already.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from shopstream import settings

JOBS_DIR = Path(__file__).resolve().parent.parent
POM = JOBS_DIR / "pom.xml"
MAVEN_SETTINGS = JOBS_DIR / "maven-settings.xml"

# Maven profiles of jobs/pom.xml.
SPARK_JARS = "spark-jars"
KAFKA_BROKER = "kafka-broker"


class SetupError(RuntimeError):
    """Something the embedded stack needs is missing; the message says what and how to fix it."""


def cache_dir() -> Path:
    configured = settings.CACHE.read()
    root = (
        Path(configured)
        if configured
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shopstream"
    )
    root.mkdir(parents=True, exist_ok=True)
    return root


def require_executable(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SetupError(f"{name} not found on PATH: {hint}")
    return path


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return require_executable("java", "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)")


def jar_dir(profile: str) -> Path:
    """The folder holding a profile's jars, resolved with Maven on first use.

    The folder name carries a hash of the pom, so editing the pom resolves afresh and an old
    folder can never stand in for a new list."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    target = cache_dir() / "jars" / f"{profile}-{digest}"
    if (target / ".complete").exists():
        return target
    mvn = require_executable("mvn", "install Apache Maven (e.g. apt-get install maven)")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"shopstream: resolving {profile} jars with Maven into {target} ...", file=sys.stderr, flush=True)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-s",
            str(MAVEN_SETTINGS),
            "-f",
            str(POM),
            "-P",
            profile,
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        errors = [line for line in result.stdout.splitlines() if "ERROR" in line][:3]
        raise SetupError(f"Maven could not resolve the {profile} jars: " + " | ".join(errors or [result.stderr[-500:]]))
    (staging / ".complete").write_text(digest)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def jars(profile: str) -> list[Path]:
    return sorted(jar_dir(profile).glob("*.jar"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it has exited all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def terminate(pid: int, timeout: float, *, group: bool = False) -> None:
    """SIGTERM for a clean shutdown, SIGKILL if still there after `timeout`; `group`: the whole
    process group `pid` leads (a job and the JVM it started)."""
    send = os.killpg if group else os.kill
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 0.0)):
        try:
            send(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not alive(pid):
            return


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m shopstream.runtime",
        description="Resolve the project's JVM jars (jobs/pom.xml) into the cache and print their folders.",
    )
    parser.add_argument(
        "profiles", nargs="*", metavar="PROFILE", help=f"{SPARK_JARS} and/or {KAFKA_BROKER} (default: both)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.profiles) - {SPARK_JARS, KAFKA_BROKER}
    if unknown:
        parser.error(f"unknown profile(s) {', '.join(sorted(unknown))}")
    try:
        for profile in args.profiles or [SPARK_JARS, KAFKA_BROKER]:
            print(f"{profile}: {jar_dir(profile)}")
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
