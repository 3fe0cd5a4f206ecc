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
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "FLOWSENTINEL_"
FREE_FORM_TABLES = {"options", "conf"}


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
            node[part][".".join(parts[i + 1:])] = str(value).lower() if isinstance(value, bool) else str(value)
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


def _validate(tree: Mapping[str, Any]) -> None:
    """Range checks that a type alone cannot express."""
    positive = ["spark.shuffle_partitions", "spark.arrow_batch_size", "kafka.partitions", "kafka.port",
                "kafka.replication_factor", "kafka.retention_ms", "kafka.start_timeout_s"]
    for dotted in positive:
        section, _, key = dotted.partition(".")
        value = tree.get(section, {}).get(key)
        if value is not None and value <= 0:
            raise ConfigError(f"config key {dotted}: must be > 0, got {value!r}")


def add_config_args(parser: Any) -> None:
    """The two config flags every job accepts."""
    parser.add_argument("--config", help="TOML file layered over conf/defaults.toml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key (repeatable)")
