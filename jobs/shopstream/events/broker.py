"""A real Apache Kafka broker for the embedded default: one KRaft node (broker and controller)
run from the Maven jars on 127.0.0.1.

    python -m shopstream.events.broker up      # start in the background, create the topics
    python -m shopstream.events.broker status
    python -m shopstream.events.broker down
"""

from __future__ import annotations

import argparse
import base64
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from shopstream import schema, settings
from shopstream.runtime import KAFKA_BROKER, SetupError, alive, jar_dir, java_executable, terminate

DEFAULT_PORT = 9092
DEFAULT_PARTITIONS = 3
HOST = "127.0.0.1"

_LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _require_free(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            raise SetupError(
                f"port {port} on {HOST} is already in use; stop whatever holds it or pick another port"
            ) from None


def _random_cluster_id() -> str:
    # One id in 64 starts with "-": the format command gets it as --cluster-id=<id> for that reason.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class KafkaBroker:
    """One broker process. `start()` returns once the broker answers metadata requests."""

    workdir: Path
    port: int = DEFAULT_PORT
    controller_port: int = 0
    heap: str = "768m"
    log_level: str = "WARN"
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "broker.pid"

    def _write_config(self) -> Path:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(DEFAULT_PARTITIONS),
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Records carry their produce time, so retention never drops simulated history.
            "log.retention.hours": "-1",
        }
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_file, level=self.log_level))
        return path

    def _java(self, main_class: str, *args: str) -> list[str]:
        classpath = str(jar_dir(KAFKA_BROKER) / "*")
        return [
            java_executable(),
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            classpath,
            main_class,
            *args,
        ]

    def start(self, timeout: float = 90.0) -> KafkaBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _require_free(self.port)
        if not self.controller_port:
            self.controller_port = free_port()
        _require_free(self.controller_port)
        config = self._write_config()
        if not (self.workdir / "data" / "meta.properties").exists():
            fmt = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool", "format", f"--cluster-id={_random_cluster_id()}", "-c", str(config)
                ),
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise SetupError("Kafka storage format failed: " + (fmt.stderr or fmt.stdout).strip().splitlines()[-1])
        with open(self.workdir / "broker.out", "ab") as out:
            self.process = subprocess.Popen(
                self._java("kafka.Kafka", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(self.process.pid))
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise SetupError(f"Kafka broker exited with code {self.process.returncode}: {self._last_error()}")
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers, request_timeout_ms=3000, api_version_auto_timeout_ms=3000
                )
                try:
                    admin.describe_cluster()
                    return
                finally:
                    admin.close()
            except (KafkaError, OSError, ValueError) as exc:
                if time.monotonic() > deadline:
                    raise SetupError(
                        f"Kafka broker on {self.bootstrap_servers} not ready after {timeout:.0f}s: {self._last_error()}"
                    ) from exc
                time.sleep(0.5)

    def _last_error(self) -> str:
        for path in (self.workdir / "broker.out", self.log_file):
            if path.exists():
                lines = [
                    line
                    for line in path.read_text(errors="replace").splitlines()
                    if "ERROR" in line or "Exception" in line
                ]
                if lines:
                    return lines[-1].strip()[:300]
        return "no error in the broker log"

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.process.pid if self.process else _read_pid(self.pid_file)
        if pid is not None:
            terminate(pid, timeout)
        if self.process is not None:
            self.process.wait()
            self.process = None
        self.pid_file.unlink(missing_ok=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def create_topics(bootstrap_servers: str, partitions: int = DEFAULT_PARTITIONS) -> list[str]:
    """Create every project topic that is missing; return the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=30000)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name,
                num_partitions=1 if name in schema.COMPACTED_TOPICS else partitions,
                replication_factor=1,
                topic_configs={"cleanup.policy": "compact"} if name in schema.COMPACTED_TOPICS else {},
            )
            for name in schema.ALL_TOPICS
            if name not in existing
        ]
        if wanted:
            admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        admin.close()


def default_workdir() -> Path:
    return settings.home() / "kafka"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shopstream.events.broker",
        description="Run a single-node Apache Kafka broker (KRaft) on 127.0.0.1 from the project's Maven jars.",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"broker state folder (default: <home>/kafka; home: {settings.HOME.variable}, default ./.demo)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="client port (default: %(default)s)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        help="partitions per event topic when creating topics (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    workdir = (args.dir or default_workdir()).resolve()
    broker = KafkaBroker(workdir, port=args.port)
    pid = _read_pid(broker.pid_file)
    running = pid is not None and alive(pid)
    try:
        if args.command == "status":
            print(f"running (pid {pid}) on {broker.bootstrap_servers}" if running else "not running")
            return 0 if running else 3
        if args.command == "down":
            if running:
                broker.stop()
                print(f"stopped Kafka broker (pid {pid})")
            else:
                broker.pid_file.unlink(missing_ok=True)
                print("Kafka broker was not running")
            return 0
        if running:
            print(f"Kafka broker already running (pid {pid}) on {broker.bootstrap_servers}")
        else:
            started = time.monotonic()
            broker.start()
            broker.process = None  # leave it running after this command exits
            print(
                f"Kafka broker up on {broker.bootstrap_servers} in {time.monotonic() - started:.1f}s"
                f" (state in {workdir})"
            )
        created = create_topics(broker.bootstrap_servers, args.partitions)
        print("topics: " + ", ".join(schema.ALL_TOPICS) + (f" (created {len(created)})" if created else ""))
        return 0
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
