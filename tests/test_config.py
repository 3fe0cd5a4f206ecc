"""Config layering (defaults, file, environment, CLI), declared types and the range rule of every key."""

import pickle
from pathlib import Path

import pytest

from jobs.lib.config import ConfigError, load_config


def test_defaults_load_with_declared_types():
    cfg = load_config(env={})
    assert cfg.kafka.port == 9092
    assert cfg.kafka.flows_topic == "flows"
    assert cfg.spark.conf["spark.sql.session.timeZone"] == "UTC"


def test_layers_env_over_file_over_defaults_and_cli_over_env(tmp_path: Path):
    user = tmp_path / "user.toml"
    user.write_text('[kafka]\nport = 9100\npartitions = 3\nflows_topic = "from-file"\n')
    env = {"FLOWSENTINEL_KAFKA__PORT": "9200", "FLOWSENTINEL_KAFKA__FLOWS_TOPIC": "from-env"}
    cfg = load_config(["kafka.flows_topic=from-cli"], config_file=user, env=env)
    assert (cfg.kafka.port, cfg.kafka.partitions, cfg.kafka.flows_topic) == (9200, 3, "from-cli")


def test_config_file_from_environment_variable(tmp_path: Path):
    user = tmp_path / "user.toml"
    user.write_text("[spark]\nshuffle_partitions = 7\n")
    assert load_config(env={"FLOWSENTINEL_CONFIG": str(user)}).spark.shuffle_partitions == 7


def test_config_survives_pickling_for_spark_closures():
    # A UDF or foreachBatch closure that holds the config is pickled to the workers; before the fix, unpickling
    # looked up __setstate__ through __getattr__ before _data existed and recursed until RecursionError.
    cfg = load_config(["kafka.port=9300"], env={})
    back = pickle.loads(pickle.dumps(cfg))
    assert (back.kafka.port, back.model.batch_size, back.to_dict()) == (9300, cfg.model.batch_size, cfg.to_dict())
    with pytest.raises(AttributeError, match="config has no key kafka.nope"):
        _ = back.kafka.nope


def test_free_form_tables_take_dotted_keys():
    cfg = load_config(["spark.conf.spark.sql.adaptive.enabled=false", "kafka.options.security.protocol=SSL"],
                      env={})
    assert cfg.spark.conf["spark.sql.adaptive.enabled"] == "false"
    assert cfg.kafka.options.to_dict() == {"security.protocol": "SSL"}


@pytest.mark.parametrize(
    ("sets", "env", "message"),
    [
        (["kafka.prot=1"], {}, "unknown config key 'kafka.prot' (from --set)"),
        (["nosuch.key=1"], {}, "unknown config key 'nosuch'"),
        (["kafka.port=abc"], {}, "config key kafka.port: expected int, got 'abc'"),
        ([], {"FLOWSENTINEL_KAFKA__PORTT": "1"}, "unknown config key 'kafka.portt' (from environment"),
        ([], {"FLOWSENTINEL_SPARK__SHUFFLE_PARTITIONS": "0"},
         "config key spark.shuffle_partitions: must be >= 1, got 0"),
        (["kafka=1"], {}, "config key kafka: expected a table"),
        (["kafka.port"], {}, "--set expects section.key=value"),
    ],
)
def test_bad_keys_and_values_fail_naming_the_key(sets, env, message):
    with pytest.raises(ConfigError) as err:
        load_config(sets, env=env)
    assert message in str(err.value)


def test_wrong_type_in_file_is_rejected(tmp_path: Path):
    user = tmp_path / "bad.toml"
    user.write_text('[kafka]\npartitions = "two"\n')
    with pytest.raises(ConfigError, match="config key kafka.partitions: expected int, got str 'two'"):
        load_config(config_file=user, env={})


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("kafka.port=70000", "config key kafka.port: must be a port in [1, 65535], got 70000"),
        ("kafka.bootstrap_servers=localhost", "config key kafka.bootstrap_servers: expected host:port"),
        ("kafka.bootstrap_servers=a:1,b:99999", "config key kafka.bootstrap_servers: expected host:port"),
        ("kafka.flows_topic=has space", "config key kafka.flows_topic: expected a Kafka topic name"),
        ("kafka.retention_ms=0", "config key kafka.retention_ms: must be > 0 (or -1: keep forever), got 0"),
        ("kafka.heap=lots", "config key kafka.heap: expected a JVM memory size such as 512m, got 'lots'"),
        ("spark.log_level=LOUD", "config key spark.log_level: expected one of"),
        ("model.arch=transformer", "config key model.arch: expected one of ['cnn_lstm', 'bilstm'], got 'transformer'"),
        ("model.kernel_size=4", "config key model.kernel_size: must be odd and >= 1, got 4"),
        ("model.dropout=1.0", "config key model.dropout: must be in [0, 1), got 1.0"),
        ("model.threshold=1.5", "config key model.threshold: must be in [0, 1], got 1.5"),
        ("model.device=gpu", "config key model.device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("train.device=cuda:x", "config key train.device: expected auto, cpu, cuda or cuda:N, got 'cuda:x'"),
        ("train.learning_rate=0", "config key train.learning_rate: must be > 0, got 0.0"),
        ("train.class_weighting=inverse", "config key train.class_weighting: expected one of"),
        ("prep.feature_set=best", "config key prep.feature_set: unknown set 'best'; known ['all', 'paper13']"),
        ("prep.sequence_length=0", "config key prep.sequence_length: must be >= 1, got 0"),
        ("prep.sequence_key=label", "config key prep.sequence_key: expected one of"),
        ("prep.split_mode=stratified", "config key prep.split_mode: expected one of ['hash', 'temporal', 'random']"),
        ("prep.nonfinite_policy=zero", "config key prep.nonfinite_policy: expected one of ['impute', 'drop']"),
        ("prep.train_fraction=0.9", "train_fraction + validation_fraction must be <= 1, got 0.9 + 0.15"),
        ("stream.trigger_interval=soon", "config key stream.trigger_interval: expected a duration"),
        ("stream.watermark_delay=10", "config key stream.watermark_delay: expected a duration"),
        ("stream.host_window=1 fortnight", "config key stream.host_window: expected a duration"),
        ("stream.starting_offsets=first", "config key stream.starting_offsets: expected earliest, latest or a JSON"),
        ("stream.max_offsets_per_trigger=0", "config key stream.max_offsets_per_trigger: must be >= 1, got 0"),
        ("stream.query_restarts=-1", "config key stream.query_restarts: must be >= 0, got -1"),
        ("stream.warmup_flows=-5", "config key stream.warmup_flows: must be >= 0, got -5"),
    ],
)
def test_out_of_range_values_fail_at_start_naming_the_key(setting, message):
    with pytest.raises(ConfigError) as err:
        load_config([setting], env={})
    assert message in str(err.value)


@pytest.mark.parametrize("setting", [
    "stream.trigger_interval=", "stream.trigger_interval=500 milliseconds", "stream.watermark_delay=1 hour 30 minutes",
    "stream.host_window=2 Minutes", 'stream.starting_offsets={"flows":{"0":42}}', "kafka.retention_ms=-1",
    "kafka.bootstrap_servers=b1.example:9093,10.0.0.2:9093", "model.device=cuda:1", "kafka.heap=2G",
    "prep.train_fraction=0.85",
])
def test_values_in_range_are_accepted(setting):
    key, value = setting.split("=", 1)
    section, name = key.split(".")
    got = load_config([setting], env={})[section][name]
    assert str(got) == value or got == int(value)


def test_every_declared_key_has_a_range_check():
    from jobs.lib import config

    declared = {k for k, _ in config._flatten(load_config(env={}).to_dict())
                if k.split(".")[0] not in config.UNCHECKED_TABLES
                and k.rsplit(".", 1)[-1] not in config.FREE_FORM_TABLES}
    assert sorted(declared - set(config.RULES)) == []  # a new key in defaults.toml needs its rule in RULES
    assert sorted(set(config.RULES) - declared) == []


def test_kafka_client_values_keep_their_type(tmp_path: Path):
    user = tmp_path / "secure.toml"
    user.write_text('[kafka.client]\nsecurity_protocol = "SASL_SSL"\nssl_check_hostname = false\n'
                    '[kafka.options]\n"sasl.jaas.config" = "x required;"\n')
    cfg = load_config(["kafka.client.request_timeout_ms=5000", "kafka.client.sasl_plain_username=alice"],
                      config_file=user, env={})
    assert cfg.kafka.client.to_dict() == {"security_protocol": "SASL_SSL", "ssl_check_hostname": False,
                                          "request_timeout_ms": 5000, "sasl_plain_username": "alice"}
    assert cfg.kafka.options.to_dict() == {"sasl.jaas.config": "x required;"}
