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
        ([], {"FLOWSENTINEL_SPARK__SHUFFLE_PARTITIONS": "0"}, "spark.shuffle_partitions: must be > 0"),
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
