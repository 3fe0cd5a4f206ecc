"""A real Spark standalone cluster on this machine (a master and two 1-core workers, launched from the classes
pyspark ships), the stream job submitted to it with spark-submit using only what `make package` builds, against
the session's Kafka broker; exact counts in the Delta tables; the cluster stopped by the pids this test started.

`make cluster-test` runs it on the dist/ that `make package` built (FLOWSENTINEL_DIST); inside `make test` it
builds its own dist into a temporary folder with the same function.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from jobs import package
from jobs.lib.config import load_config
from jobs.lib.kafka_broker import ensure_topics, free_port
from jobs.lib.synthetic import synthetic_flows
from jobs.replay_flows import make_producer, send_records
from tests.helpers import random_artifact

# Bounded: about 3 minutes on an idle 2-core machine; the ceiling leaves room for a loaded one.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

N_FLOWS = 3000
MALFORMED = [b"{oops", b"", b"[1, 2]", json.dumps({"flow_duration": "slow"}).encode(), b"\xff\xfe"]
SPARK_HOME = Path(__import__("pyspark").__file__).resolve().parent
PYTHON = str(Path(sys.executable).absolute())  # the venv's interpreter, for the driver and every worker
REPO = Path(__file__).resolve().parents[1]


def _cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYSPARK_GATEWAY", "FLOWSENTINEL_")) and k != "PYTHONPATH"}
    # SPARK_SCALA_VERSION is what bin/load-spark-env.sh exports: without it a worker's launcher looks for a
    # source build ("Cannot find any build directories") when it starts an executor.
    env.update({"SPARK_HOME": str(SPARK_HOME), "SPARK_SCALA_VERSION": "2.13", "SPARK_LOCAL_IP": "127.0.0.1",
                "PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON, "SPARK_NO_DAEMONIZE": "1"})
    return env


def _java(main_class: str, args: list[str], log: Path, heap: str = "256m") -> subprocess.Popen[bytes]:
    cmd = ["java", f"-Xmx{heap}", f"-Dlog4j2.configurationFile=file:{REPO / 'conf' / 'log4j2.properties'}",
           "-cp", f"{SPARK_HOME / 'jars'}/*", main_class, *args]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_cluster_env())


def _master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
        return json.loads(response.read())


def _wait(what: str, check, timeout_s: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1.0)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tails}")


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop exactly what this test started: the JVMs by pid, and whatever they spawned (executors, Python
    workers), found as their descendants before the parents go."""
    victims: list[psutil.Process] = []
    for proc in processes:
        try:
            parent = psutil.Process(proc.pid)
            victims += [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            pass
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.terminate()
    _, alive = psutil.wait_procs(victims, timeout=15)
    for victim in alive:
        victim.kill()
    for proc in processes:
        proc.wait(timeout=15)


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("standalone")
    port, ui_port = free_port(), free_port()
    started: list[subprocess.Popen[bytes]] = []
    logs = [base / "master.log", base / "worker-1.log", base / "worker-2.log"]
    try:
        started.append(_java("org.apache.spark.deploy.master.Master",
                             ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)], logs[0]))
        _wait("the master", lambda: _master_state(ui_port)["status"] == "ALIVE", 90, logs)
        for i in (1, 2):
            work = base / f"work-{i}"
            work.mkdir()
            started.append(_java("org.apache.spark.deploy.worker.Worker",
                                 ["--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                                  "--webui-port", str(free_port()), "--work-dir", str(work),
                                  f"spark://127.0.0.1:{port}"], logs[i]))
        _wait("two workers", lambda: len([w for w in _master_state(ui_port)["workers"]
                                          if w["state"] == "ALIVE"]) == 2, 90, logs)
        yield {"master": f"spark://127.0.0.1:{port}", "ui_port": ui_port, "base": base, "logs": logs,
               "pids": [p.pid for p in started]}
    finally:
        _stop(started)
    assert all(not psutil.pid_exists(p.pid) or psutil.Process(p.pid).status() == psutil.STATUS_ZOMBIE
               for p in started)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """`make package`'s output: the one given by FLOWSENTINEL_DIST, or built now by the same function."""
    if given := os.environ.get("FLOWSENTINEL_DIST"):
        return Path(given).resolve()
    tmp = tmp_path_factory.mktemp("package")
    default = REPO / "models" / "default"
    model = default if (default / "manifest.json").is_file() else random_artifact(tmp / "model", seq_len=2)
    package.build(tmp / "dist", Path(model))
    return tmp / "dist"


def test_stream_job_on_a_standalone_cluster(spark, kafka_broker, standalone_cluster, dist, tmp_path):
    sets = [f"kafka.bootstrap_servers={kafka_broker.bootstrap}", "kafka.flows_topic=cluster-flows",
            "kafka.alerts_topic=cluster-alerts", "spark.shuffle_partitions=2", "stream.trigger_interval=",
            "stream.max_offsets_per_trigger=2000"]
    cfg = load_config(sets, env={})
    ensure_topics(kafka_broker.bootstrap, cfg)
    producer = make_producer(kafka_broker.bootstrap, cfg)
    try:
        sent = send_records(producer, cfg.kafka.flows_topic, synthetic_flows(N_FLOWS, seed=3, hosts=50),
                            cfg.prep.sequence_key, progress=False)
        for value in MALFORMED:
            producer.send(cfg.kafka.flows_topic, key=b"bad", value=value)
        producer.flush()
    finally:
        producer.close()
    assert sent == N_FLOWS

    # The driver runs here (client mode) in a folder of its own, with the model unpacked as ./model exactly as
    # --archives unpacks it in every executor's working directory: `--model model` means the same on both.
    run = tmp_path / "driver"
    run.mkdir()
    with tarfile.open(dist / package.MODEL_ARCHIVE) as tar:
        tar.extractall(run / package.MODEL_ALIAS, filter="data")
    out = tmp_path / "out"
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", standalone_cluster["master"],
           "--deploy-mode", "client", "--name", "flowsentinel-cluster-test",
           "--driver-memory", "768m", "--executor-memory", "640m", "--total-executor-cores", "2",
           "--conf", f"spark.pyspark.python={PYTHON}", "--conf", f"spark.pyspark.driver.python={PYTHON}",
           "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=2",
           "--driver-java-options",
           f"-Dlog4j2.configurationFile=file:{dist / 'conf' / 'log4j2.properties'} -Xss32m",
           *package.submit_args(dist),
           str(dist / "launch.py"), "jobs.stream_detect", "--model", package.MODEL_ALIAS, "--out", str(out),
           "--available-now", *[arg for s in sets for arg in ("--set", s)]]
    env = _cluster_env() | {"FLOWSENTINEL_CONF_DIR": str(dist / "conf")}
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"spark-submit failed ({seconds:.0f}s):\n{result.stderr[-6000:]}"

    # The code came from the shipped zip, not from this checkout.
    py_zip = next(dist.glob("flowsentinel-*.zip"))
    # spark-submit's PythonRunner merges the driver's stderr into its own stdout.
    output = (result.stdout + result.stderr).splitlines()
    running = [line for line in output if line.startswith("flowsentinel: running")]
    assert running == [f"flowsentinel: running jobs.stream_detect from {py_zip}/jobs/__init__.py"], running

    tables = out / "tables"
    scored = spark.read.format("delta").load(str(tables / "flows_scored"))
    quarantine = spark.read.format("delta").load(str(tables / "quarantine"))
    alerts = spark.read.format("delta").load(str(tables / "alerts"))
    n_scored, n_quarantined = scored.count(), quarantine.count()
    assert n_scored + n_quarantined == N_FLOWS + len(MALFORMED)
    assert n_quarantined == len(MALFORMED)
    assert scored.select("partition", "offset").distinct().count() == N_FLOWS  # each flow exactly once
    assert alerts.count() == scored.where("is_attack = 1").count()
    assert sorted(r.raw for r in quarantine.select("raw").collect() if r.raw and not r.raw.startswith("base64:")) \
        == sorted(v.decode() for v in MALFORMED if v and v != b"\xff\xfe")

    # Both workers ran executors of this application, and each got the model from the archive.
    app_dirs = [d for i in (1, 2) for d in (standalone_cluster["base"] / f"work-{i}").glob("app-*/*")]
    assert len({d.parents[1].name for d in app_dirs}) == 2, app_dirs
    assert all((d / package.MODEL_ALIAS / "manifest.json").is_file() for d in app_dirs)
    # The application ran on this cluster and ended cleanly (the master records it once the driver leaves).
    _wait("the application to complete",
          lambda: [a["name"] for a in _master_state(standalone_cluster["ui_port"])["completedapps"]]
          == ["flowsentinel-cluster-test"], 30, standalone_cluster["logs"])
    print(f"spark-submit on the standalone cluster: {seconds:.0f}s for {N_FLOWS + len(MALFORMED)} messages")
