"""Secured Kafka for real: the session broker's SASL/PLAIN listener, configured as docs/operations.md says,
[kafka.options] for Spark (the stream job) and [kafka.client] for kafka-python (pre-flight check, topic creation,
replay, alert consumer). Before the two were separate, the Java-only sasl.jaas.config reached kafka-python as
sasl_jaas_config and the pre-flight check called the broker unreachable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import alert_consumer, replay_flows
from jobs.lib.config import load_config
from jobs.lib.kafka_broker import ensure_topics
from jobs.lib.preflight import PreflightError, check_broker
from tests.conftest import SASL_USER
from tests.helpers import random_artifact

N_FLOWS = 40


def secured_config(folder: Path, password: str = SASL_USER[1]) -> Path:
    user = SASL_USER[0]
    jaas = f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{user}" password="{password}";'
    path = folder / "secured.toml"
    path.write_text(f"""
[kafka]
flows_topic = "sasl-flows"
alerts_topic = "sasl-alerts"

[kafka.options]
"security.protocol" = "SASL_PLAINTEXT"
"sasl.mechanism" = "PLAIN"
"sasl.jaas.config" = '{jaas}'

[kafka.client]
security_protocol = "SASL_PLAINTEXT"
sasl_mechanism = "PLAIN"
sasl_plain_username = "{user}"
sasl_plain_password = "{password}"
client_id = "flowsentinel-test"      # and a setting a tool also sets itself (its own value wins, no clash)
request_timeout_ms = 20000

[stream]
trigger_interval = ""
""")
    return path


def test_preflight_uses_the_client_options_and_names_bad_credentials(kafka_broker, tmp_path):
    good = load_config([f"kafka.bootstrap_servers={kafka_broker.sasl_bootstrap}"],
                       config_file=secured_config(tmp_path), env={})
    check_broker(good.kafka.bootstrap_servers, good.kafka.client.to_dict(), attempts=1)
    # The Java names that Spark needs are not kafka-python arguments: as before the split, they fail.
    with pytest.raises(PreflightError, match="unreachable"):
        check_broker(good.kafka.bootstrap_servers, {k.replace(".", "_"): v for k, v in good.kafka.options.items()},
                     attempts=1, timeout_s=2)
    wrong = load_config([f"kafka.bootstrap_servers={kafka_broker.sasl_bootstrap}"],
                        config_file=secured_config(tmp_path, password="wrong"), env={})
    with pytest.raises(PreflightError, match=f"Kafka broker {kafka_broker.sasl_bootstrap} unreachable"):
        check_broker(wrong.kafka.bootstrap_servers, wrong.kafka.client.to_dict(), attempts=1, timeout_s=2)


def test_replay_spark_kafka_io_and_consumer_over_sasl(spark, kafka_broker, tmp_path, capsys):
    """The short version (make test): replay, Spark's Kafka source and sink with [kafka.options] in batch mode (the
    stream job passes the same options), and the consumer, each over SASL/PLAIN."""
    from pyspark.sql import functions as F

    conf = secured_config(tmp_path)
    sasl = f"kafka.bootstrap_servers={kafka_broker.sasl_bootstrap}"
    topics = ["kafka.flows_topic=sasl-short-flows", "kafka.alerts_topic=sasl-short-alerts"]
    cfg = load_config([sasl, *topics], config_file=conf, env={})
    assert ensure_topics(cfg.kafka.bootstrap_servers, cfg) == ["sasl-short-flows", "sasl-short-alerts"]
    argv = ["--config", str(conf), "--set", sasl, *[x for t in topics for x in ("--set", t)]]
    assert replay_flows.main(["--synthetic", "25", "--hosts", "5", "--no-progress", *argv]) == 0
    capsys.readouterr()

    options = {f"kafka.{k}": v for k, v in cfg.kafka.options.items()}
    flows = (spark.read.format("kafka").option("kafka.bootstrap.servers", cfg.kafka.bootstrap_servers)
             .options(**options).option("subscribe", cfg.kafka.flows_topic).load())
    alert_id = F.concat_ws(":", "partition", "offset")
    (flows.select(alert_id.alias("key"), F.to_json(F.struct(alert_id.alias("alert_id"))).alias("value"))
     .write.format("kafka").option("kafka.bootstrap.servers", cfg.kafka.bootstrap_servers).options(**options)
     .option("topic", cfg.kafka.alerts_topic).save())
    expected = sorted(f"{r.partition}:{r.offset}" for r in flows.select("partition", "offset").collect())
    assert len(expected) == 25

    assert alert_consumer.main(["--group", "sasl-short", "--idle-exit", "3", *argv]) == 0
    received = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert sorted(a["alert_id"] for a in received) == expected


def test_replay_stream_job_and_consumer_over_sasl(spark, kafka_broker, tmp_path, capsys):
    from jobs.lib.prep import sequence_config_overrides
    from jobs.stream_detect import start
    from models.artifact import load_model

    conf = secured_config(tmp_path)
    sasl = f"kafka.bootstrap_servers={kafka_broker.sasl_bootstrap}"
    cfg = load_config([sasl, "spark.shuffle_partitions=2"], config_file=conf, env={})
    assert ensure_topics(cfg.kafka.bootstrap_servers, cfg) == ["sasl-flows", "sasl-alerts"]

    # Replay as a user runs it (its config layered over the defaults, env included: --set wins over make's).
    argv = ["--config", str(conf), "--set", sasl]
    assert replay_flows.main(["--synthetic", str(N_FLOWS), "--hosts", "5", "--seed", "3", "--no-progress", *argv]) == 0
    assert f"replayed {N_FLOWS} flows to sasl-flows" in capsys.readouterr().out

    # The stream job reads and publishes through Spark's Kafka client with [kafka.options]; threshold ~0 makes
    # every flow an alert.
    model_dir = random_artifact(tmp_path / "model", seq_len=1, threshold=1e-9)
    detector = load_model(model_dir, device="cpu")
    model_cfg = load_config([sasl, "spark.shuffle_partitions=2", *sequence_config_overrides(detector.sequence)],
                            config_file=conf, env={})
    query = start(spark, cfg, model_cfg, detector, str(model_dir), tmp_path / "out", available_now=True)
    query.awaitTermination(600)
    assert query.exception() is None
    tables = tmp_path / "out" / "tables"
    assert spark.read.format("delta").load(str(tables / "flows_scored")).count() == N_FLOWS
    alert_ids = sorted(r.alert_id for r in spark.read.format("delta").load(str(tables / "alerts")).collect())
    assert len(alert_ids) == N_FLOWS == len(set(alert_ids))

    # The example consumer, as a user runs it, gets exactly the alerts of the table.
    assert alert_consumer.main(["--group", "sasl-test", "--idle-exit", "5", *argv]) == 0
    received = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert sorted(a["alert_id"] for a in received) == alert_ids
