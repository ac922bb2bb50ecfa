"""The local Spark driver's logging (jobs/shopstream/spark/log4j2.properties): ERROR from the JVM's
start unless SHOPSTREAM_SPARK_LOG_LEVEL says otherwise; the known harmless warnings dropped at
every level, real warnings and errors kept. Checked on log4j itself (the jars pyspark ships) in a
small JVM, without starting Spark."""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from shopstream.runtime import SPARK_JARS, jars, java_executable
from shopstream.spark import iceberg

PROBE = """\
import org.apache.logging.log4j.LogManager;

public class LogProbe {
    public static void main(String[] args) {
        for (String arg : args) {
            String[] parts = arg.split("\\\\|", 3);
            var logger = LogManager.getLogger(parts[0]);
            switch (parts[1]) {
                case "INFO" -> logger.info(parts[2]);
                case "WARN" -> logger.warn(parts[2]);
                default -> logger.error(parts[2]);
            }
        }
    }
}
"""

# logger | level | message, as the local jobs log them
HARMLESS = [
    "org.apache.hadoop.util.NativeCodeLoader|WARN|Unable to load native-hadoop library for your platform... "
    "using builtin-java classes where applicable",
    "org.apache.spark.sql.execution.streaming.ResolveWriteToStream|WARN|spark.sql.adaptive.enabled is not supported "
    "in streaming DataFrames/Datasets and will be disabled.",
    "org.apache.iceberg.jdbc.JdbcCatalog|WARN|JDBC catalog is initialized without view support. To auto-migrate the "
    "database's schema and enable view support, set jdbc.schema-version=V1",
    "org.apache.spark.sql.catalyst.util.SparkStringUtils|WARN|Truncated the string representation of a plan since it "
    "was too large. This behavior can be adjusted by setting 'spark.sql.debug.maxToStringFields'.",
    "org.apache.spark.sql.execution.window.WindowExec|WARN|No Partition Defined for Window operation! "
    "Moving all data to a single partition, this can cause serious performance degradation.",
    "org.apache.spark.scheduler.DAGScheduler|WARN|Failed to cancel job group b7f044b1-327a-42ea-8b9c-deccb947bbd9. "
    "Cannot find active jobs for it.",
]
REAL = [
    "org.apache.spark.scheduler.DAGScheduler|INFO|Job 3 finished",
    "org.apache.iceberg.jdbc.JdbcCatalog|WARN|a warning of the same logger about something else",
    "org.apache.spark.SparkContext|ERROR|an error",
]


def pyspark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def log_lines(tmp_path: Path, level: str) -> list[str]:
    """What the driver's log4j configuration prints at `level` for HARMLESS and REAL."""
    classpath = ":".join(str(next(pyspark_jars().glob(f"log4j-{part}-2*.jar"))) for part in ("api", "core"))
    (tmp_path / "LogProbe.java").write_text(PROBE)
    run = subprocess.run(
        [
            java_executable(),
            "-cp",
            classpath,
            f"-Dlog4j2.configurationFile={iceberg.LOG4J2_CONFIG}",
            f"-Dshopstream.spark.log.level={level}",
            "LogProbe.java",
            *HARMLESS,
            *REAL,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    return [line.split(" ", 2)[2] for line in run.stderr.splitlines()]  # without the date and time


def test_local_runs_pass_the_packaged_configuration_and_the_level(monkeypatch):
    assert iceberg.LOG4J2_CONFIG.is_file() and iceberg.LOG4J2_CONFIG.parent == Path(iceberg.__file__).parent
    monkeypatch.delenv("SHOPSTREAM_SPARK_LOG_LEVEL", raising=False)
    options = iceberg.local_driver_java_options().split()
    assert f"-Dlog4j2.configurationFile=file:{iceberg.LOG4J2_CONFIG}" in options
    assert "-Dshopstream.spark.log.level=ERROR" in options and "-XX:+UseG1GC" in options
    monkeypatch.setenv("SHOPSTREAM_SPARK_LOG_LEVEL", "WARN")
    assert "-Dshopstream.spark.log.level=WARN" in iceberg.local_driver_java_options().split()


@pytest.mark.parametrize(
    "level, expected",
    [
        ("ERROR", ["ERROR SparkContext: an error"]),
        (
            "WARN",
            ["WARN JdbcCatalog: a warning of the same logger about something else", "ERROR SparkContext: an error"],
        ),
        (
            "INFO",
            [
                "INFO DAGScheduler: Job 3 finished",
                "WARN JdbcCatalog: a warning of the same logger about something else",
                "ERROR SparkContext: an error",
            ],
        ),
    ],
)
def test_known_harmless_warnings_are_dropped_at_every_level(tmp_path, level, expected):
    assert log_lines(tmp_path, level) == expected


def test_each_silenced_logger_is_a_class_of_the_local_jobs():
    """A logger name that matches no class would silence nothing: every filtered logger of the
    configuration is one of HARMLESS, and each is a class in pyspark's jars or the project's."""
    filtered = set(re.findall(r"^logger\.(\w+)\.filter\.", iceberg.LOG4J2_CONFIG.read_text(), re.M))
    names = dict(re.findall(r"^logger\.(\w+)\.name = (\S+)$", iceberg.LOG4J2_CONFIG.read_text(), re.M))
    assert {names[logger] for logger in filtered} == {line.split("|")[0] for line in HARMLESS}
    classes = set()
    for jar in [*pyspark_jars().glob("*.jar"), *jars(SPARK_JARS)]:
        with zipfile.ZipFile(jar) as archive:
            classes.update(archive.namelist())
    for line in HARMLESS:
        assert line.split("|")[0].replace(".", "/") + ".class" in classes, line
