"""The Spark side of the lake: the one SparkSession builder and table creation from `schema.TABLES`.

Only modules under `shopstream.spark` import pyspark; `shopstream.lake` stays importable without it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from pathlib import Path

from shopstream import schema, settings
from shopstream.lake import CATALOG, LakeSettings, table_properties, table_ref

# The driver's log4j2 configuration in a local run: the level of the log-level setting from the
# JVM's start, and the known harmless warnings dropped at every level.
LOG4J2_CONFIG = Path(__file__).with_name("log4j2.properties")


def log_level(local: bool) -> str:
    return settings.SPARK_LOG_LEVEL.read() or ("ERROR" if local else "WARN")


def local_driver_java_options() -> str:
    """spark.driver.extraJavaOptions of a local run."""
    config = f"-Dlog4j2.configurationFile=file:{LOG4J2_CONFIG}"
    if " " in config:
        config = f'"{config}"'
    return f"-Dderby.system.home=/tmp -XX:+UseG1GC {config} -Dshopstream.spark.log.level={log_level(local=True)}"


def spark_session(lake: LakeSettings, app_name: str, *, extra_conf: dict[str, str] | None = None):
    """The one SparkSession builder. Locally it adds the project's jars, a local master and the
    driver's log4j2 configuration (`LOG4J2_CONFIG`); under spark-submit (a SparkApplication) the
    master, the baked-in jars and Spark's own logging come from there, at the log-level setting
    (WARN unless set) once the session has started."""
    from pyspark.sql import SparkSession

    lake.create_local_folders()
    builder = SparkSession.builder.appName(app_name)
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": settings.SHUFFLE_PARTITIONS.read(),
        "spark.sql.adaptive.enabled": "true",
        # Kafka's columns are declared nullable though never null, and validation guarantees the
        # required event fields; Iceberg's own check would refuse those writes on declaration alone.
        "spark.sql.iceberg.check-nullability": "false",
        **lake.spark_conf(),
    }
    # spark-submit starts the JVM first and hands Python its gateway; a SparkConf read before the
    # session exists cannot tell (it is empty until the JVM is reached), the gateway variable can.
    local = "PYSPARK_GATEWAY_PORT" not in os.environ
    if local:
        from shopstream.runtime import SPARK_JARS, jars

        conf["spark.master"] = settings.SPARK_MASTER.read()
        conf["spark.jars"] = ",".join(str(j) for j in jars(SPARK_JARS))
        conf["spark.driver.memory"] = settings.DRIVER_MEMORY.read()
        conf["spark.ui.enabled"] = settings.SPARK_UI.read()
        conf["spark.ui.showConsoleProgress"] = "false"
        # The embedded default listens on loopback only.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        conf["spark.driver.extraJavaOptions"] = local_driver_java_options()
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(log_level(local))
    return session


def create_table_sql(table: schema.Table) -> str:
    columns = ",\n  ".join(
        f"{c.name} {schema.spark_type(c.type).simpleString()}{'' if not c.required else ' NOT NULL'}"
        + (f" COMMENT '{c.doc}'" if c.doc and "'" not in c.doc else "")
        for c in table.columns
    )
    partition = ""
    if table.partition_day_of:
        by = table.partition_day_of
        partition = f"\nPARTITIONED BY ({by if table.column(by).type == schema.DATE else f'days({by})'})"
    props = ", ".join(f"'{k}'='{v}'" for k, v in table_properties(table.name).items())
    return (
        f"CREATE TABLE IF NOT EXISTS {table_ref(table.name)} (\n  {columns}\n) USING iceberg"
        f"{partition}\nTBLPROPERTIES ({props})"
    )


def existing_tables(spark) -> set[str]:
    """The project's tables that exist, in one listing."""
    # spark.catalog.tableExists also looks for views, which the JDBC catalog's default (v0)
    # schema refuses; listing the namespace asks only for tables.
    from pyspark.errors import AnalysisException

    try:
        return {row.tableName for row in spark.sql(f"SHOW TABLES IN {CATALOG}.{schema.NAMESPACE}").collect()}
    except AnalysisException:
        return set()  # no namespace yet


def table_exists(spark, name: str) -> bool:
    return name in existing_tables(spark)


def ensure_tables(spark, names) -> None:
    """Create the named tables (and the namespace) where missing."""
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {CATALOG}.{schema.NAMESPACE}")
    for name in names:
        spark.sql(create_table_sql(schema.TABLES[name]))


# -- write-audit-publish: a job writes to a branch of each table, checks it, then publishes -----------


def snapshot_ids(spark, names, ref: str = "main") -> dict[str, int | None]:
    """The snapshot `ref` points at in each table (None where it has no such ref: a table never
    written has no main), read in one query: each metadata-table read is a Spark job."""
    names = list(names)
    if not names:
        return {}
    query = " UNION ALL ".join(
        f"SELECT '{name}' AS table_name, snapshot_id FROM {table_ref(name)}.refs WHERE name = '{ref}'" for name in names
    )
    found = {row.table_name: row.snapshot_id for row in spark.sql(query).collect()}
    return {name: found.get(name) for name in names}


def branch_ref(name: str, branch: str) -> str:
    """The table's branch as Spark reads and writes it."""
    return f"{table_ref(name)}.branch_{branch}"


# The gold job's audit branches: the day audited and when the branch was made (UTC), so that one left
# behind by a killed run can be told from one still being written.
AUDIT_BRANCH = re.compile(r"^audit_\d{8}_at_(?P<made>\d{8}T\d{6})_[0-9a-f]+$")
AUDIT_BRANCH_MADE = "%Y%m%dT%H%M%S"  # the time in the name, UTC


def audit_branch(day: dt.date, made: dt.datetime) -> str:
    """A new audit branch's name for `day`, made at `made`."""
    return f"audit_{day:%Y%m%d}_at_{made.astimezone(dt.UTC):{AUDIT_BRANCH_MADE}}_{uuid.uuid4().hex[:8]}"


def audit_branches_made_before(spark, name: str, cutoff: dt.datetime) -> list[str]:
    """The table's audit branches made before `cutoff`, by their names."""
    refs = spark.sql(f"SELECT name FROM {table_ref(name)}.refs WHERE type = 'BRANCH'").collect()
    stale = []
    for ref in refs:
        found = AUDIT_BRANCH.match(ref.name)
        if found and dt.datetime.strptime(found["made"], AUDIT_BRANCH_MADE).replace(tzinfo=dt.UTC) < cutoff:
            stale.append(ref.name)
    return sorted(stale)


def create_branches(spark, names, branch: str) -> None:
    """A branch at each table's current snapshot. A table never written gets an empty first commit,
    so that every branch has an ancestor on main to be cherry-picked onto."""
    for name, head in snapshot_ids(spark, names).items():
        if head is None:
            spark.table(table_ref(name)).limit(0).writeTo(table_ref(name)).append()
        spark.sql(f"ALTER TABLE {table_ref(name)} CREATE BRANCH `{branch}`")


def publish(spark, names, branch: str) -> None:
    """Put each branch's last commit on its table's main. A cherry-pick, not a fast-forward: main may
    have moved since the branch was made (another day's run published meanwhile); Iceberg replays
    the branch's partition overwrite on it, and refuses when the same partitions changed on main since."""
    for name, head in snapshot_ids(spark, names, branch).items():
        if head is None:
            raise RuntimeError(f"{table_ref(name)} has no branch {branch} to publish")
        qualified = schema.TABLES[name].qualified
        spark.sql(f"CALL {CATALOG}.system.cherrypick_snapshot(table => '{qualified}', snapshot_id => {head})")


def drop_branch(spark, name: str, branch: str) -> None:
    spark.sql(f"ALTER TABLE {table_ref(name)} DROP BRANCH IF EXISTS `{branch}`")
