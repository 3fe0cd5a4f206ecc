"""A real single-node Kafka broker (KRaft, combined broker + controller) run from the Maven-resolved jars.

    python -m jobs.lib.kafka_broker up      # format storage once, start, wait until the broker answers
    python -m jobs.lib.kafka_broker topics  # create the flows and alerts topics from conf/
    python -m jobs.lib.kafka_broker down    # stop exactly the process `up` started (by its pid)

Tests use :class:`LocalBroker` directly on free ports (see tests/conftest.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Mapping
from pathlib import Path

from jobs.lib.config import Config, add_config_args, conf_dir, load_config
from jobs.lib.jvm import REPO_ROOT, kafka_classpath


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding. Like Kafka's Uuid.randomUuid,
    never one that starts with '-': the storage tool would read it as an option (1 start in 64 failed)."""
    while True:
        text = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True


class LocalBroker:
    """One KRaft node. With `sasl_users` (name -> password) it also listens on `sasl_port` with SASL/PLAIN over
    plain TCP, so a secured client setup (conf [kafka.options] and [kafka.client]) can be tested for real; the
    PLAINTEXT listener stays for the broker's own readiness checks."""

    def __init__(self, port: int, controller_port: int, data_dir: str | Path, heap: str = "512m",
                 start_timeout_s: float = 90, sasl_port: int | None = None,
                 sasl_users: Mapping[str, str] | None = None) -> None:
        if (sasl_port is None) != (sasl_users is None):
            raise ValueError("sasl_port and sasl_users go together")
        self.port = port
        self.controller_port = controller_port
        self.data_dir = Path(data_dir).resolve()
        self.heap = heap
        self.start_timeout_s = start_timeout_s
        self.sasl_port = sasl_port
        self.sasl_users = dict(sasl_users or {})

    @classmethod
    def from_config(cls, cfg: Config) -> LocalBroker:
        data_dir = Path(cfg.kafka.data_dir)
        if not data_dir.is_absolute():
            data_dir = REPO_ROOT / data_dir
        return cls(cfg.kafka.port, cfg.kafka.controller_port, data_dir, cfg.kafka.heap, cfg.kafka.start_timeout_s)

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        if self.sasl_port is None:
            raise BrokerError("this broker has no SASL listener (give sasl_port and sasl_users)")
        return f"localhost:{self.sasl_port}"

    def _listener_properties(self) -> list[str]:
        listeners = [f"PLAINTEXT://localhost:{self.port}"]
        protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        extra = []
        if self.sasl_port is not None:
            listeners.append(f"SASL_PLAINTEXT://localhost:{self.sasl_port}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
            extra = ["sasl.enabled.mechanisms=PLAIN",
                     "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                     f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"]
        return [f"listeners={','.join(listeners)},CONTROLLER://localhost:{self.controller_port}",
                f"advertised.listeners={','.join(listeners)}",
                f"listener.security.protocol.map={','.join(protocols)}", *extra]

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    def _java(self) -> str:
        java = shutil.which("java") or (Path(os.environ.get("JAVA_HOME", "/nonexistent")) / "bin" / "java")
        if not Path(java).exists():
            raise BrokerError("Java not found: install a JDK 17+ (java on PATH or JAVA_HOME)")
        return str(java)

    def _write_properties(self) -> None:
        self.properties_file.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@localhost:{self.controller_port}",
                    *self._listener_properties(),
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir / 'logs'}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "message.max.bytes=2097152",
                    "",
                ]
            )
        )

    def _run_java(self, main_class: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [self._java(), f"-Xmx{self.heap}", "-cp", kafka_classpath(),
               f"-Dlog4j2.configurationFile=file:{conf_dir() / 'log4j2.properties'}", main_class, *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    def running_pid(self) -> int | None:
        """The pid from our pid file if that process is still our broker; else None (and a stale file goes)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if _alive(pid) and cmdline.exists() and str(self.properties_file) in cmdline.read_text(errors="replace"):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self) -> int:
        """Start the broker and wait until it answers; idempotent. Returns its pid."""
        pid = self.running_pid()
        if pid is not None:
            self.wait_ready()
            return pid
        for p in (self.port, self.controller_port, *([self.sasl_port] if self.sasl_port else [])):
            if port_in_use(p):
                raise BrokerError(f"port {p} is already in use by another process: stop it or choose another "
                                  f"port (kafka.port / kafka.controller_port, or KAFKA_PORT for make)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            done = self._run_java("kafka.tools.StorageTool", "format", "-t", _cluster_id(),
                                  "-c", str(self.properties_file), "--ignore-formatted")
            if done.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed:\n{done.stdout}\n{done.stderr}")
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
        cmd = [self._java(), f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC", "-cp", kafka_classpath(),
               f"-Dlog4j2.configurationFile=file:{conf_dir() / 'log4j2.properties'}",
               "kafka.Kafka", str(self.properties_file)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.pid_file.write_text(str(proc.pid))
        try:
            self.wait_ready(proc)
        except BrokerError:
            self.stop()
            raise
        return proc.pid

    def wait_ready(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Poll the broker with an admin request until it answers (never a fixed sleep)."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise BrokerError(f"Kafka broker exited with code {proc.returncode}; log tail:\n{self.log_tail()}")
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000,
                                         reconnect_backoff_max_ms=500)
                try:
                    admin.describe_cluster()
                    admin.list_topics()
                finally:
                    admin.close()
                return
            except (KafkaError, OSError, ValueError) as exc:
                last = exc
                time.sleep(0.3)
        raise BrokerError(f"Kafka broker on {self.bootstrap} not ready after {self.start_timeout_s}s ({last}); "
                          f"log tail:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30) -> bool:
        """Stop the process we started (SIGTERM, then SIGKILL). True if one was running."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True


def ensure_topics(bootstrap: str, cfg: Config, topics: list[str] | None = None) -> list[str]:
    """Create the flows and alerts topics (partitions, retention from conf/) unless they exist."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    names = topics or [cfg.kafka.flows_topic, cfg.kafka.alerts_topic]
    admin = KafkaAdminClient(**{**cfg.kafka.client.to_dict(), "bootstrap_servers": bootstrap,
                                "request_timeout_ms": 15000})
    created = []
    try:
        existing = set(admin.list_topics())
        for name in names:
            if name in existing:
                continue
            topic = NewTopic(name, num_partitions=cfg.kafka.partitions,
                             replication_factor=cfg.kafka.replication_factor,
                             topic_configs={"retention.ms": str(cfg.kafka.retention_ms),
                                            "max.message.bytes": "2097152"})
            try:
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status", "topics"])
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.sets, args.config)
    broker = LocalBroker.from_config(cfg)
    try:
        if args.action == "up":
            was = broker.running_pid()
            pid = broker.start()
            created = ensure_topics(broker.bootstrap, cfg)
            state = "already running" if was else "started"
            print(f"kafka broker {state} on {broker.bootstrap} (pid {pid}, data {broker.data_dir}); "
                  f"topics created: {created or 'none (exist)'}")
        elif args.action == "topics":
            print(f"topics created: {ensure_topics(cfg.kafka.bootstrap_servers, cfg) or 'none (exist)'}")
        elif args.action == "down":
            print("kafka broker stopped" if broker.stop() else "kafka broker was not running")
        else:
            running = broker.running_pid()
            print(f"running, pid {running}" if running else "not running")
            return 0 if running else 1
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
