"""Configuration: one TOML file, validated against a schema, frozen once loaded.

Where the file comes from (first found wins): ``--config PATH``, ``$XSWARM_CONFIG``,
``/opt/xswarm/config.toml``, else the built-in defaults. Secrets never live here: they come
from the environment (``XSWARM_SUPERVISOR_TOKEN``, ``TWILIO_AUTH_TOKEN``), which systemd fills
from ``/opt/xswarm/.env``.

Every key is declared once in ``SCHEMA`` with its type, bounds and whether it can change on a
live reload. Unknown keys are errors (a typo must not silently fall back to a default), and
every error names the file, the key and what was expected, so that start-up can print one line
and exit 78. A reload builds a new ``Config``; ``reload_changes`` says what a live process can
apply and what it must report as needing a restart.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xswarm.errors import ConfigError

DEFAULT_PATH = Path("/opt/xswarm/config.toml")
DEFAULT_STATE_DIR = Path("/var/lib/xswarm")
SUPERVISOR_PORT = 9999
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class Key:
    """One config key: its type, default, bounds and whether a live reload may change it."""

    type: type
    default: Any
    live: bool = True
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    help: str = ""


SCHEMA: dict[str, dict[str, Key]] = {
    "voice.bridge": {
        "host": Key(str, "127.0.0.1", live=False, help="address the bridge binds"),
        "port": Key(int, 9998, live=False, min=1, max=65535, help="port of the bridge"),
        "instance_port_base": Key(
            int, 10000, live=False, min=1, max=65000, help="--instance N listens on base + N"
        ),
        "max_concurrent_calls": Key(int, 300, min=1, max=100000, help="admission limit"),
        "drain_timeout": Key(
            float, 30.0, min=0, max=86400, help="seconds a stop waits for calls to end"
        ),
        "engine": Key(str, "auto", live=False, choices=("auto", "echo", "moshi")),
        "max_message_bytes": Key(
            int, 65536, min=1024, max=16 << 20, help="largest WebSocket message accepted"
        ),
        "send_queue_frames": Key(
            int, 100, min=4, max=10000, help="outbound frames buffered per call before dropping"
        ),
        "status_interval": Key(float, 1.0, min=0.1, max=60, help="seconds between status events"),
        "public_url": Key(
            str, "", help="URL Twilio sees (for X-Twilio-Signature), e.g. wss://voice.example.com"
        ),
        "resampler_quality": Key(
            str,
            "auto",
            live=False,
            choices=("auto", "QQ", "LQ", "MQ", "HQ", "VHQ", "FIR"),
            help="8 kHz <-> 24 kHz resampling; auto: FIR (band-limited, 1.5 ms each way) for "
            "MOSHI, QQ (0.2 ms) for echo",
        ),
    },
    "voice.echo": {
        "delay_ms": Key(int, 0, min=0, max=10000, help="echo engine: delay before audio returns"),
    },
    "voice.suggestions": {
        "min_interval_ms": Key(int, 2000, min=0, max=600000),
        "max_queue": Key(int, 5, min=0, max=1000),
    },
    "voice.moshi": {
        "hf_repo": Key(str, "kyutai/moshiko-pytorch-bf16", live=False),
        "moshi_weights": Key(str, "", live=False, help="local path; empty: from hf_repo"),
        "mimi_weights": Key(str, "", live=False, help="local path; empty: from hf_repo"),
        "tokenizer": Key(str, "", live=False, help="local path; empty: from hf_repo"),
        "config": Key(str, "", live=False, help="model config.json; empty: Kyutai's 7B"),
        "device": Key(str, "cuda", live=False),
        "dtype": Key(str, "bf16", live=False, choices=("bf16", "fp16", "fp32")),
        "slots": Key(int, 0, live=False, min=0, max=4096, help="0: max_concurrent_calls"),
        "context": Key(int, 3000, live=False, min=16, max=100000),
        "temperature": Key(float, 0.8, min=0, max=10),
        "temperature_text": Key(float, 0.7, min=0, max=10),
        "top_k": Key(int, 250, min=1, max=100000),
        "top_k_text": Key(int, 25, min=1, max=100000),
        "greedy": Key(bool, False),
        "cfg_coef": Key(float, 1.0, live=False, min=0, max=100),
        "cuda_graphs": Key(bool, True, live=False),
    },
    "dashboard": {
        "host": Key(str, "127.0.0.1", live=False),
        "port": Key(int, SUPERVISOR_PORT, live=False, min=1, max=65535),
        "instances": Key(list, [], help="control URLs to supervise; empty: the local bridge"),
        "history_limit": Key(int, 100000, min=10, max=100_000_000),
        "stale_after": Key(float, 2.0, min=0.1, max=600),
    },
    "paths": {
        "state_dir": Key(str, "", live=False, help="SQLite and model cache; empty: see docs"),
    },
    "logging": {
        "level": Key(str, "info", choices=("debug", "info", "warning", "error")),
    },
}

# Per-instance overrides under [voice.bridge.instances.N]: only these keys.
INSTANCE_KEYS = ("host", "port", "max_concurrent_calls")


@dataclass(frozen=True)
class Config:
    """A validated configuration. ``get("voice.bridge", "port")`` reads one value."""

    values: Mapping[str, Mapping[str, Any]]
    source: str = "built-in defaults"
    instances: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    def get(self, section: str, key: str) -> Any:
        return self.values[section][key]

    def section(self, name: str) -> Mapping[str, Any]:
        return self.values[name]

    def for_instance(self, instance: int | None) -> Config:
        """The config one bridge process sees: ``--instance N`` moves the port, never onto 9999."""
        if instance is None:
            return self
        bridge = dict(self.values["voice.bridge"])
        bridge["port"] = bridge["instance_port_base"] + instance
        bridge.update(self.instances.get(instance, {}))
        where = f"[voice.bridge.instances.{instance}] port"
        if not 1 <= bridge["port"] <= 65535:
            raise ConfigError(
                self.source, where, f"instance {instance} gives port {bridge['port']}"
            )
        if bridge["port"] == self.values["dashboard"]["port"]:
            raise ConfigError(
                self.source,
                where,
                f"instance {instance} would listen on {bridge['port']}, the supervisor's port; "
                "set instance_port_base or a per-instance port",
            )
        values = dict(self.values)
        values["voice.bridge"] = bridge
        return Config(values=values, source=self.source, instances=self.instances)

    def state_dir(self) -> Path:
        """Where SQLite and caches live: config, then systemd's $STATE_DIRECTORY, then defaults."""
        configured = self.values["paths"]["state_dir"]
        if configured:
            return Path(configured)
        env = os.environ.get("XSWARM_STATE_DIR") or os.environ.get("STATE_DIRECTORY")
        if env:
            return Path(env.split(":")[0])
        if os.access(DEFAULT_STATE_DIR, os.W_OK):
            return DEFAULT_STATE_DIR
        return Path.cwd() / ".xswarm-state"

    def control_urls(self) -> list[str]:
        """The voice instances the supervisor watches; by default the local bridge."""
        urls = list(self.values["dashboard"]["instances"])
        if urls:
            return urls
        bridge = self.values["voice.bridge"]
        host = "127.0.0.1" if bridge["host"] in ("0.0.0.0", "::", "") else bridge["host"]
        return [f"ws://{host}:{bridge['port']}/control"]


def defaults() -> Config:
    return Config(
        values={s: {k: _copy(v.default) for k, v in keys.items()} for s, keys in SCHEMA.items()}
    )


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The config file to read, by the documented precedence; None means built-in defaults."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("XSWARM_CONFIG")
    if env:
        return Path(env)
    if DEFAULT_PATH.exists():
        return DEFAULT_PATH
    return None


def load(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config; raises ConfigError naming file, key and expectation."""
    path = resolve_path(explicit)
    if path is None:
        return defaults()
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "(file)", "does not exist; create it or drop --config") from None
    except OSError as exc:
        raise ConfigError(source, "(file)", f"cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(source, "(file)", f"is {len(raw)} bytes; expected at most 1 MiB of TOML")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "(file)", f"is not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", f"invalid TOML: {exc}") from None
    return from_mapping(data, source)


def from_mapping(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML document against ``SCHEMA``."""
    values = {s: {k: _copy(v.default) for k, v in keys.items()} for s, keys in SCHEMA.items()}
    instances: dict[int, dict[str, Any]] = {}
    for section_name, table in _flatten_sections(data, source):
        if section_name.startswith("voice.bridge.instances."):
            number = section_name.rsplit(".", 1)[1]
            if not number.isdigit():
                raise ConfigError(source, f"[{section_name}]", "instance must be a whole number")
            instances[int(number)] = _instance_overrides(table, section_name, source)
            continue
        schema = SCHEMA.get(section_name)
        if schema is None:
            known = ", ".join(f"[{s}]" for s in SCHEMA)
            raise ConfigError(
                source, f"[{section_name}]", f"unknown section; expected one of {known}"
            )
        for key, value in table.items():
            spec = schema.get(key)
            if spec is None:
                raise ConfigError(
                    source,
                    f"[{section_name}] {key}",
                    f"unknown key; expected one of {', '.join(schema)}",
                )
            values[section_name][key] = _check(value, spec, f"[{section_name}] {key}", source)
    config = Config(values=values, source=source, instances=instances)
    _check_cross(config)
    return config


def _flatten_sections(data: Mapping[str, Any], source: str) -> list[tuple[str, dict[str, Any]]]:
    """Turn nested TOML tables into ("voice.bridge", {...}) pairs, leaf keys only."""
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(prefix: str, table: Mapping[str, Any]) -> None:
        leaves = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if prefix and (leaves or prefix in SCHEMA or prefix.startswith("voice.bridge.instances.")):
            out.append((prefix, leaves))
        elif leaves:
            names = ", ".join(leaves)
            raise ConfigError(
                source, names, "keys must sit inside a section such as [voice.bridge]"
            )
        for key, value in table.items():
            if isinstance(value, dict):
                walk(f"{prefix}.{key}" if prefix else key, value)

    walk("", data)
    return out


def _instance_overrides(table: Mapping[str, Any], section: str, source: str) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if key not in INSTANCE_KEYS:
            raise ConfigError(
                source,
                f"[{section}] {key}",
                f"not per-instance; expected one of {', '.join(INSTANCE_KEYS)}",
            )
        out[key] = _check(value, SCHEMA["voice.bridge"][key], f"[{section}] {key}", source)
    return out


_TYPE_NAMES = {
    int: "a whole number",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list",
}


def _check(value: Any, spec: Key, where: str, source: str) -> Any:
    expected = _TYPE_NAMES[spec.type]
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and spec.type is not bool or not isinstance(value, spec.type):
        raise ConfigError(source, where, f"expected {expected}, got {_describe(value)}")
    return _check_value(value, spec, where, source)


def _check_value(value: Any, spec: Key, where: str, source: str) -> Any:
    expected = _TYPE_NAMES[spec.type]
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(
            source, where, f"expected one of {', '.join(spec.choices)}, got {value!r}"
        )
    if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
        raise ConfigError(
            source, where, f"expected {expected} from {spec.min:g} to {spec.max:g}, got {value!r}"
        )
    if spec.type is list:
        for item in value:
            if not isinstance(item, str) or not item.startswith(("ws://", "wss://")):
                raise ConfigError(source, where, f"expected ws:// or wss:// URLs, got {item!r}")
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _check_cross(config: Config) -> None:
    bridge = config.values["voice.bridge"]
    dash_port = config.values["dashboard"]["port"]
    if bridge["port"] == dash_port:
        raise ConfigError(
            config.source,
            "[voice.bridge] port",
            f"{bridge['port']} is also [dashboard] port; the supervisor owns {dash_port}",
        )
    for number, overrides in config.instances.items():
        port = overrides.get("port", bridge["instance_port_base"] + number)
        if port == dash_port:
            raise ConfigError(
                config.source,
                f"[voice.bridge.instances.{number}] port",
                f"instance {number} would listen on {port}, the supervisor's port",
            )


def reload_changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """Compare two configs: (keys applied live, keys that need a restart to take effect)."""
    applied: list[str] = []
    restart: list[str] = []
    for section, keys in SCHEMA.items():
        for key, spec in keys.items():
            if old.values[section][key] != new.values[section][key]:
                (applied if spec.live else restart).append(f"[{section}] {key}")
    return applied, restart
