"""Layered, validated configuration.

`conf/defaults.toml` declares every key and, through its value, the key's type. Layers override it in this
order: an optional user file (``--config`` or ``FLOWSENTINEL_CONFIG``), environment variables
``FLOWSENTINEL_<SECTION>__<KEY>``, then ``--set section.key=value`` flags. A key that the defaults do not
declare, or a value that does not fit the declared type, raises :class:`ConfigError` naming the key, so a
typo fails at start instead of being silently ignored.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from schemas.flows import IDENTIFIER_COLUMNS, WIRE_FORMATS

ENV_PREFIX = "FLOWSENTINEL_"
# String maps passed through as they are: kafka.options and spark.conf (Java names, string values) and
# kafka.client (kafka-python keyword arguments, values keep their TOML type; from text they are parsed).
FREE_FORM_TABLES = {"options", "conf", "client"}
TYPED_FREE_FORM_TABLES = {"client"}


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the key."""


def conf_dir() -> Path:
    """Folder holding defaults.toml: $FLOWSENTINEL_CONF_DIR, the repo's conf/, or ./conf (spark --files)."""
    if env := os.environ.get("FLOWSENTINEL_CONF_DIR"):
        return Path(env)
    for candidate in (Path(__file__).resolve().parents[2] / "conf", Path.cwd() / "conf", Path.cwd()):
        if (candidate / "defaults.toml").is_file():
            return candidate
    raise ConfigError("cannot find conf/defaults.toml; set FLOWSENTINEL_CONF_DIR to the folder holding it")


class Config(Mapping[str, Any]):
    """Read-only nested mapping with attribute access: ``cfg.kafka.port`` or ``cfg["kafka"]["port"]``."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self._data = dict(data)
        self._path = path

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if isinstance(value, Mapping):
            return Config(value, f"{self._path}{key}.")
        return value

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):  # not a config key; and while unpickling, before _data exists, no recursion
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config has no key {self._path}{key}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._data))

    def __repr__(self) -> str:
        return f"Config({self._data!r})"


def _coerce(key: str, default: Any, value: Any, from_text: bool) -> Any:
    """Return `value` as the type of `default`; raise ConfigError otherwise.

    Values from the environment and the CLI are text and get parsed; values from TOML files are typed already
    and must match exactly.
    """
    expected = type(default)
    if from_text and isinstance(value, str) and expected is not str:
        text = value.strip()
        try:
            if expected is bool:
                lowered = text.lower()
                if lowered in {"true", "1", "yes", "on"}:
                    return True
                if lowered in {"false", "0", "no", "off"}:
                    return False
                raise ValueError(text)
            if expected is int:
                return int(text)
            if expected is float:
                return float(text)
            if expected is list:
                parsed = json.loads(text) if text.startswith("[") else [s.strip() for s in text.split(",") if s]
                return _coerce(key, default, parsed, from_text=True)
        except ValueError:
            raise ConfigError(f"config key {key}: expected {expected.__name__}, got {value!r}") from None
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise ConfigError(f"config key {key}: expected bool, got {value!r}")
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
    if expected is list and default:
        item_type = type(default[0])
        return [v if isinstance(v, item_type) else _coerce(f"{key}[{i}]", default[0], v, from_text)
                for i, v in enumerate(value)]
    return value


def _parse_scalar(text: str) -> Any:
    """A free-form value given as text: true/false, an integer, a float, else the text itself."""
    lowered = text.strip().lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def _set(tree: dict[str, Any], defaults: Mapping[str, Any], dotted: str, value: Any, source: str,
         from_text: bool = True) -> None:
    parts = dotted.split(".")
    node, dnode = tree, defaults
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if part not in dnode:
            raise ConfigError(f"unknown config key {here!r} (from {source})")
        if part in FREE_FORM_TABLES and i < len(parts) - 1:
            # The rest of the path is one free-form key, e.g. spark.conf.spark.ui.enabled.
            rest = ".".join(parts[i + 1:])
            if part in TYPED_FREE_FORM_TABLES:
                node[part][rest] = _parse_scalar(value) if from_text and isinstance(value, str) else value
            else:
                node[part][rest] = str(value).lower() if isinstance(value, bool) else str(value)
            return
        if i == len(parts) - 1:
            if isinstance(dnode[part], Mapping):
                if not isinstance(value, Mapping):
                    raise ConfigError(f"config key {here}: expected a table (from {source})")
                for sub, subvalue in value.items():
                    _set(tree, defaults, f"{here}.{sub}", subvalue, source, from_text)
            else:
                node[part] = _coerce(here, dnode[part], value, from_text)
            return
        if not isinstance(dnode[part], Mapping):
            raise ConfigError(f"config key {here} is a value, not a table (from {source})")
        node, dnode = node[part], dnode[part]


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, Mapping) and key not in FREE_FORM_TABLES:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _env_overrides(env: Mapping[str, str]) -> list[tuple[str, str]]:
    out = []
    for name, value in sorted(env.items()):
        if name.startswith(ENV_PREFIX) and "__" in name and name != "FLOWSENTINEL_CONFIG":
            dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
            out.append((dotted, value))
    return out


def load_config(
    sets: Iterable[str] = (),
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    defaults_file: str | Path | None = None,
) -> Config:
    """Build the effective config: defaults < user file < environment < `sets` ("section.key=value")."""
    env = os.environ if env is None else env
    defaults_path = Path(defaults_file) if defaults_file else conf_dir() / "defaults.toml"
    with open(defaults_path, "rb") as fh:
        defaults = tomllib.load(fh)
    tree = json.loads(json.dumps(defaults))  # deep copy

    config_file = config_file or env.get("FLOWSENTINEL_CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                user = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        for dotted, value in _flatten(user):
            _set(tree, defaults, dotted, value, str(config_file), from_text=False)
    for dotted, value in _env_overrides(env):
        _set(tree, defaults, dotted, value, f"environment {ENV_PREFIX}{dotted.upper().replace('.', '__')}")
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        dotted, value = item.split("=", 1)
        _set(tree, defaults, dotted.strip(), value, "--set")
    _validate(tree)
    return Config(tree)


# ------------------------------------------------------------------------------------------- range checks
# One rule per declared key (tests/test_config.py fails on a key without one): the range a type alone cannot
# express. A value outside it fails at start, naming the key, instead of deep inside a Spark or torch call.

_DURATION_UNITS = ("microsecond", "millisecond", "second", "minute", "hour", "day", "week")
_DURATION = re.compile(rf"^\s*(?:interval\s+)?(?:\d+(?:\.\d+)?\s*(?:{'|'.join(_DURATION_UNITS)})s?\s*)+$",
                       re.IGNORECASE)
_JVM_MEMORY = re.compile(r"^\d+[kmgt]?$", re.IGNORECASE)
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^[^\s,:]+:(\d{1,5})$")
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_LOG_LEVELS = ("ALL", "DEBUG", "ERROR", "FATAL", "INFO", "OFF", "TRACE", "WARN")
_SEQUENCE_KEYS = (*IDENTIFIER_COLUMNS, "source_file")

Check = Callable[[Any, Mapping[str, Any]], "str | None"]  # value, whole tree -> what is wrong, or None


def _at_least(low: float) -> Check:
    return lambda v, _: None if v >= low else f"must be >= {low}, got {v!r}"


def _above(low: float) -> Check:
    return lambda v, _: None if v > low else f"must be > {low}, got {v!r}"


def _between(low: float, high: float, high_open: bool = False) -> Check:
    def check(v: Any, _: Mapping[str, Any]) -> str | None:
        inside = low <= v < high if high_open else low <= v <= high
        return None if inside else f"must be in [{low}, {high}{')' if high_open else ']'}, got {v!r}"
    return check


def _one_of(*allowed: str) -> Check:
    return lambda v, _: None if v in allowed else f"expected one of {list(allowed)}, got {v!r}"


def _matches(pattern: re.Pattern[str], what: str, allow_empty: bool = False) -> Check:
    def check(v: Any, _: Mapping[str, Any]) -> str | None:
        return None if (allow_empty and v == "") or pattern.match(v) else f"expected {what}, got {v!r}"
    return check


def _non_empty(v: Any, _: Mapping[str, Any]) -> str | None:
    return None if str(v).strip() else "must not be empty"


def _anything(v: Any, _: Mapping[str, Any]) -> str | None:
    return None


def _port(v: Any, _: Mapping[str, Any]) -> str | None:
    return None if 1 <= v <= 65535 else f"must be a port in [1, 65535], got {v!r}"


def _bootstrap(v: Any, _: Mapping[str, Any]) -> str | None:
    servers = [s.strip() for s in v.split(",")]
    for server in servers:
        match = _HOST_PORT.match(server)
        if not match or not 1 <= int(match.group(1)) <= 65535:
            return f"expected host:port[,host:port...], got {v!r}"
    return None


def _offsets(v: Any, _: Mapping[str, Any]) -> str | None:
    if v in ("earliest", "latest"):
        return None
    try:
        parsed = json.loads(v)
    except ValueError:
        parsed = None
    return None if isinstance(parsed, dict) else f"expected earliest, latest or a JSON object, got {v!r}"


def _feature_set(v: Any, tree: Mapping[str, Any]) -> str | None:
    known = sorted(tree.get("features", {}))
    return None if v in known else f"unknown set {v!r}; known {known}"


def _odd(v: Any, _: Mapping[str, Any]) -> str | None:
    return None if v >= 1 and v % 2 == 1 else f"must be odd and >= 1, got {v!r}"


def _retention(v: Any, _: Mapping[str, Any]) -> str | None:
    return None if v == -1 or v > 0 else f"must be > 0 (or -1: keep forever), got {v!r}"


_DURATION_TEXT = "a duration such as '10 seconds' or '1 minute'"
RULES: dict[str, Check] = {
    "spark.master": _non_empty, "spark.app_name": _non_empty, "spark.shuffle_partitions": _at_least(1),
    "spark.arrow_batch_size": _at_least(1), "spark.log_level": _one_of(*_LOG_LEVELS),
    "spark.driver_memory": _matches(_JVM_MEMORY, "a JVM memory size such as 2g"),
    "kafka.bootstrap_servers": _bootstrap, "kafka.port": _port, "kafka.controller_port": _port,
    "kafka.data_dir": _non_empty, "kafka.heap": _matches(_JVM_MEMORY, "a JVM memory size such as 512m"),
    "kafka.start_timeout_s": _above(0), "kafka.flows_topic": _matches(_TOPIC, "a Kafka topic name"),
    "kafka.flows_format": _one_of(*WIRE_FORMATS),
    "kafka.alerts_topic": _matches(_TOPIC, "a Kafka topic name"), "kafka.partitions": _at_least(1),
    "kafka.replication_factor": _at_least(1), "kafka.retention_ms": _retention,
    "model.arch": _one_of("cnn_lstm", "bilstm"), "model.dir": _non_empty, "model.conv_channels": _at_least(1),
    "model.kernel_size": _odd, "model.pool_size": _at_least(1), "model.lstm_hidden": _at_least(1),
    "model.lstm_layers": _at_least(1), "model.dense": _at_least(1), "model.dropout": _between(0, 1, True),
    "model.input_bins": _at_least(0), "model.embed_width": _at_least(0), "model.threshold": _between(0, 1),
    "model.batch_size": _at_least(1),
    "model.device": _matches(_DEVICE, "auto, cpu, cuda or cuda:N"), "model.threads": _at_least(0),
    "train.seed": _at_least(0), "train.batch_size": _at_least(1), "train.learning_rate": _above(0),
    "train.weight_decay": _at_least(0), "train.max_epochs": _at_least(1), "train.patience": _at_least(0),
    "train.min_delta": _at_least(0), "train.lr_decay_factor": _between(0, 1),
    "train.lr_decay_patience": _at_least(0), "train.class_weighting": _one_of("none", "sqrt", "balanced"),
    "train.type_loss_weight": _at_least(0), "train.max_minutes": _above(0), "train.threads": _at_least(0),
    "train.device": _matches(_DEVICE, "auto, cpu, cuda or cuda:N"), "train.amp": _anything,
    "train.memory_budget_mb": _at_least(1), "train.progress": _anything, "train.fpr_budget": _between(0, 1),
    "prep.feature_set": _feature_set, "prep.sequence_length": _at_least(1),
    "prep.sequence_key": _one_of(*_SEQUENCE_KEYS), "prep.cicids_12h_clock": _anything,
    "prep.nonfinite_policy": _one_of("impute", "drop"), "prep.zscore_transform": _one_of("signed_log1p", "none"),
    "prep.zscore_clip": _above(0), "prep.split_mode": _one_of("hash", "temporal", "random"),
    "prep.split_seed": _anything, "prep.train_fraction": _between(0, 1, True),
    "prep.validation_fraction": _between(0, 1, True), "prep.staging_dir": _anything,
    "stream.out_dir": _non_empty, "stream.checkpoint_dir": _anything, "stream.starting_offsets": _offsets,
    "stream.max_offsets_per_trigger": _at_least(1),
    "stream.trigger_interval": _matches(_DURATION, _DURATION_TEXT + " (or '' for none)", allow_empty=True),
    "stream.watermark_delay": _matches(_DURATION, _DURATION_TEXT),
    "stream.state_idle_timeout_ms": _at_least(1), "stream.host_window": _matches(_DURATION, _DURATION_TEXT),
    "stream.codegen_cache_entries": _at_least(1), "stream.explain_top_k": _at_least(0),
    "stream.publish_alerts": _anything, "stream.query_restarts": _at_least(0), "stream.warmup_flows": _at_least(0),
    "stream.restart_backoff_s": _at_least(0),
}
# Tables whose keys are data, not settings: the feature lists are checked against the flow schema where they
# are resolved (jobs.lib.prep.feature_columns, at the start of every job that uses them).
UNCHECKED_TABLES = ("features",)


def _validate(tree: Mapping[str, Any]) -> None:
    """Range checks that a type alone cannot express; the first failure raises ConfigError naming its key."""
    for dotted, value in _flatten(tree):
        if dotted.split(".")[0] in UNCHECKED_TABLES or dotted.rsplit(".", 1)[-1] in FREE_FORM_TABLES:
            continue
        check = RULES.get(dotted, _anything)  # tests/test_config.py fails on a declared key without a rule
        problem = check(value, tree)
        if problem:
            raise ConfigError(f"config key {dotted}: {problem}")
    prep = tree.get("prep", {})
    if prep.get("train_fraction", 0) + prep.get("validation_fraction", 0) > 1:
        raise ConfigError(f"config key prep.validation_fraction: train_fraction + validation_fraction must be "
                          f"<= 1, got {prep['train_fraction']} + {prep['validation_fraction']}")


def add_config_args(parser: Any) -> None:
    """The two config flags every job accepts."""
    parser.add_argument("--config", help="TOML file layered over conf/defaults.toml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key (repeatable)")
