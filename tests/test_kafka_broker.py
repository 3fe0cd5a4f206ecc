"""Start-up behaviour of the local broker that does not need a running one."""

import os
import socket

import pytest

from jobs.lib import kafka_broker
from jobs.lib.kafka_broker import BrokerError, LocalBroker, free_port


def test_cluster_id_never_reads_as_an_option(monkeypatch):
    # 0xfb as the first byte is '-' as the first base64 character; the next draw starts with a letter
    draws = iter([bytes([0xFB]) + bytes(15), bytes([0x08]) + bytes(15)])
    monkeypatch.setattr(kafka_broker.uuid, "uuid4", lambda: type("U", (), {"bytes": next(draws)})())
    assert kafka_broker._cluster_id() == "CAAAAAAAAAAAAAAAAAAAAA"


def test_port_taken_fails_with_clear_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        broker = LocalBroker(port, free_port(), tmp_path)
        with pytest.raises(BrokerError, match=f"port {port} is already in use"):
            broker.start()
    assert not broker.pid_file.exists()


def test_missing_java_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nojdk"))
    broker = LocalBroker(free_port(), free_port(), tmp_path)
    with pytest.raises(BrokerError, match="Java not found"):
        broker.start()


def test_down_when_nothing_runs_succeeds(tmp_path):
    assert LocalBroker(free_port(), free_port(), tmp_path).stop() is False


def test_stale_pid_file_of_another_process_is_never_killed(tmp_path):
    broker = LocalBroker(free_port(), free_port(), tmp_path)
    broker.pid_file.write_text(str(os.getpid()))  # alive, but not our broker
    assert broker.running_pid() is None
    assert broker.stop() is False
    assert not broker.pid_file.exists()


def test_session_broker_answers_and_is_ours(kafka_broker):
    pid = kafka_broker.running_pid()
    assert pid is not None
    kafka_broker.wait_ready()  # idempotent readiness check against the live broker
    assert kafka_broker.start() == pid  # starting again is a no-op returning the same process
