"""Configuration: one TOML file, validated against a schema, frozen once loaded.

Where the file comes from (first found wins): ``--config PATH``, ``$XSWARM_CONFIG``,
``/opt/xswarm/config.toml``, else the built-in defaults. Secrets never live here: they come
from the environment (``XSWARM_SUPERVISOR_TOKEN``, ``XSWARM_CONTROL_TOKEN``,
``TWILIO_AUTH_TOKEN``), which systemd fills from ``/opt/xswarm/.env``.

Every key is declared once, as a field of the frozen dataclass of its TOML section
(``BridgeSection`` is ``[voice.bridge]``), with its Python type, default, bounds and whether it
can change on a live reload. Code reads ``config.bridge.max_concurrent_calls``, so mypy checks
every read. ``SCHEMA`` is derived from those fields and drives validation and the generated
``deploy/config.example.toml``. Unknown keys are errors (a typo must not silently fall back to
a default), and every error names the file, the key and what was expected, so that start-up
can print one line and exit 78. A reload builds a new ``Config``; ``reload_changes`` says what
a live process can apply and what it must report as needing a restart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from xswarm.errors import ConfigError

DEFAULT_PATH = Path("/opt/xswarm/config.toml")
DEFAULT_STATE_DIR = Path("/var/lib/xswarm")
SUPERVISOR_PORT = 9999
MAX_CONFIG_BYTES = 1 << 20
MAX_TABLE_DEPTH = 16  # [voice.bridge.instances.N] is 4; more is a mistake or an attack

_T = TypeVar("_T")
_RULES = "xswarm.config.rules"
_TOML_SECTION = "xswarm.config.section"


@dataclass(frozen=True)
class Key:
    """One config key as TOML sees it: type, default, bounds, and whether reload may change it."""

    type: type
    default: Any
    live: bool = True
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    help: str = ""


@dataclass(frozen=True)
class _Rules:
    live: bool
    min: float | None
    max: float | None
    help: str


def setting(
    default: _T,
    *,
    live: bool = True,
    min: float | None = None,
    max: float | None = None,
    help: str = "",
) -> _T:
    """Declare one key of a section; its type is the field's annotation (Literal: choices)."""
    return field(default=default, metadata={_RULES: _Rules(live, min, max, help)})


@dataclass(frozen=True, kw_only=True)
class BridgeSection:
    """``[voice.bridge]``: the voice bridge's listener, admission and per-call buffers."""

    host: str = setting("127.0.0.1", live=False, help="address the bridge binds")
    port: int = setting(9998, live=False, min=1, max=65535, help="port of the bridge")
    instance_port_base: int = setting(
        10000, live=False, min=1, max=65000, help="--instance N listens on base + N"
    )
    max_concurrent_calls: int = setting(300, min=1, max=100000, help="admission limit")
    drain_timeout: float = setting(
        30.0, min=0, max=86400, help="seconds a stop waits for calls to end"
    )
    engine: Literal["auto", "echo", "moshi"] = setting("auto", live=False)
    max_message_bytes: int = setting(
        65536, min=1024, max=16 << 20, help="largest WebSocket message accepted"
    )
    send_queue_frames: int = setting(
        100, min=4, max=10000, help="outbound frames buffered per call before dropping"
    )
    output_preroll_ms: int = setting(
        40,
        min=0,
        max=1000,
        help="per-call output jitter buffer for engines whose step is longer than a 20 ms "
        "wire frame (MOSHI): audio is held this long after its step so that a late step is "
        "absorbed, then sent one frame every 20 ms; echo's output is sent as it comes",
    )
    tick_margin_ms: int = setting(
        10,
        min=0,
        max=80,
        help="for engines whose frame is several wire frames (MOSHI, 80 ms): each call holds "
        "back the arrival jitter measured on its own audio (over the last 4 s) plus this, at "
        "most a frame, so that its frames complete before the engine's tick instead of "
        "waiting a whole frame. A call joins with the largest jitter the live calls (or the "
        "last call to end, within 10 minutes) measured plus this (with none, a frame less "
        "20 ms plus this); what it holds beyond its need is skipped while the caller is "
        "silent. The cost is this much latency on every call; "
        "raise it for a path whose jitter comes in rare spikes",
    )
    max_output_age_ms: int = setting(
        100,
        min=20,
        max=10000,
        help="output audio this far behind its play time is dropped (counted as output_late), "
        "and at most this much is queued in a call's write buffer, so a starved host adds "
        "gaps, not seconds of delay",
    )
    status_interval: float = setting(1.0, min=0.1, max=60, help="seconds between status events")
    public_url: str = setting(
        "",
        help="URL at which Twilio reaches the bridge's root, path prefix included, e.g. "
        "wss://voice.example.com or wss://example.com/voice (X-Twilio-Signature); required "
        "when TWILIO_AUTH_TOKEN is set",
    )
    twilio_stream_token: bool = setting(
        False,
        help="require a per-call expiring xswarm_token in each Twilio stream's parameters "
        "(docs/SECURITY.md)",
    )
    busy_message: str = setting(
        "Sorry, all our lines are busy. Please call again in a few minutes.",
        help="what POST /twilio/voice says to a caller (TwiML <Say>, then <Hangup/>) when the "
        "bridge is full, draining or starting, instead of connecting a stream it would refuse",
    )
    web_client: bool = setting(
        False,
        help="serve the browser client at GET / (it calls /api/chat; XSWARM_CALL_TOKEN can "
        "require a token, docs/SECURITY.md)",
    )
    server_names: str = setting(
        "",
        help="host names the supervisor uses in [dashboard] instances to reach /control "
        "(Host header), space-separated; IP literals, localhost and public_url's host always work",
    )
    control_allow: tuple[str, ...] = setting(
        (),
        help="networks (CIDRs or addresses) the supervisor may subscribe to /control from, e.g. "
        '["10.77.0.0/24"]; loopback is always allowed; empty: any source (the token is '
        "required either way); a refused source gets 403 and counts in "
        "xswarm_control_refused_total",
    )
    tls_cert: str = setting(
        "",
        live=False,
        help="PEM certificate chain: the bridge serves wss:// and https:// itself (without "
        "HAProxy in front); SIGHUP re-reads the files, so a renewal needs no restart",
    )
    tls_key: str = setting(
        "", live=False, help="PEM private key of tls_cert; empty: the key is in tls_cert's file"
    )
    resampler_quality: Literal["auto", "QQ", "LQ", "MQ", "HQ", "VHQ", "FIR"] = setting(
        "auto",
        live=False,
        help="8 kHz <-> 24 kHz resampling; auto: FIR (band-limited, 1.5 ms each way) for "
        "MOSHI, QQ (0.2 ms) for echo",
    )
    header_timeout: float = setting(
        10.0,
        live=False,
        min=0.5,
        max=3600,
        help="seconds a connection may take to send its HTTP request headers, and may stay "
        "idle between requests",
    )
    first_media_timeout: float = setting(
        10.0,
        min=0.5,
        max=3600,
        help="seconds a call socket may take from the upgrade to Twilio's start event or the "
        "first Moshi audio",
    )
    inactivity_timeout: float = setting(
        30.0,
        min=0.5,
        max=86400,
        help="seconds without caller audio after which a call is closed (reason inactive); "
        "Twilio and Moshi clients send audio all the time, silence included",
    )
    heartbeat: float = setting(
        20.0,
        min=0.5,
        max=3600,
        help="seconds between WebSocket pings on call sockets; no pong within half of it closes",
    )
    max_calls_per_source: int = setting(
        20,
        min=1,
        max=100000,
        help="concurrent calls from one address (an IPv6 /64); behind a proxy the client's "
        "address from X-Forwarded-For, see trusted_proxies",
    )
    trusted_proxies: tuple[str, ...] = setting(
        (),
        help="proxy addresses or CIDRs whose X-Forwarded-For names the caller (the shipped "
        'HAProxy: ["127.0.0.1"]); from any other peer the header is ignored',
    )
    max_buffered_input_bytes: int = setting(
        262144,
        min=4096,
        max=64 << 20,
        help="input bytes a call may send without producing audio (an Ogg page sequence that "
        "never completes a packet); more closes it with 1009, reason abuse",
    )
    max_audio_speed: float = setting(
        1.5,
        min=1.0,
        max=100,
        help="decoded caller audio per second of wall time, sustained; faster closes with 1008",
    )
    audio_burst_seconds: float = setting(
        3.0,
        min=0.1,
        max=600,
        help="seconds of audio a caller may send ahead of max_audio_speed at once",
    )
    max_messages_per_second: int = setting(
        250,
        min=1,
        max=100000,
        help="WebSocket messages per second a call may send (Twilio sends 50), bursts of 2 s",
    )


@dataclass(frozen=True, kw_only=True)
class EchoSection:
    """``[voice.echo]``: the echo engine."""

    delay_ms: int = setting(0, min=0, max=10000, help="echo engine: delay before audio returns")


@dataclass(frozen=True, kw_only=True)
class SuggestionsSection:
    """``[voice.suggestions]``: how often operators may steer a call, and how many may wait."""

    min_interval_ms: int = setting(2000, min=0, max=600000)
    max_queue: int = setting(5, min=0, max=1000)


@dataclass(frozen=True, kw_only=True)
class MoshiSection:
    """``[voice.moshi]``: where the model comes from, where it runs and how it samples."""

    hf_repo: str = setting("kyutai/moshiko-pytorch-bf16", live=False)
    moshi_weights: str = setting("", live=False, help="local path; empty: from hf_repo")
    mimi_weights: str = setting("", live=False, help="local path; empty: from hf_repo")
    tokenizer: str = setting("", live=False, help="local path; empty: from hf_repo")
    config: str = setting("", live=False, help="model config.json; empty: Kyutai's 7B")
    device: str = setting(
        "cuda",
        live=False,
        help='"cpu", "cuda" or "cuda:N", N the GPU\'s index as nvidia-smi -L lists it; '
        "one instance per GPU: [voice.bridge.instances.N] device",
    )
    dtype: Literal["bf16", "fp16", "fp32"] = setting("bf16", live=False)
    slots: int = setting(
        0,
        live=False,
        min=0,
        max=4096,
        help="0: the most that fit memory and step_budget_ms, at most max_concurrent_calls",
    )
    step_budget_ms: float = setting(
        60.0,
        live=False,
        min=1,
        max=80,
        help="with slots 0, the step p99 (of the 80 ms frame) the chosen batch must stay within",
    )
    warmup_steps: int = setting(
        200, live=False, min=1, max=100000, help="steps timed per batch size at warm-up"
    )
    real_time_check: bool = setting(
        True,
        live=False,
        help="false: warm-up times the steps but neither shrinks the batch nor refuses to "
        "start; only for a development machine or a test run on a shared CPU",
    )
    max_failed_steps: int = setting(
        25,
        live=False,
        min=1,
        max=100000,
        help="steps failing in a row before the bridge calls itself broken and exits",
    )
    max_call_seconds: float = setting(
        0.0, min=0, max=86400, help="end a call (reason max_duration) after this; 0: no limit"
    )
    min_word_gap_steps: int = setting(
        2, min=0, max=100, help="80 ms steps of silence between the words of a suggestion"
    )
    barge_in_cancels_suggestion: bool = setting(
        True, help="a caller who starts speaking clears the suggestion being spoken"
    )
    context: int = setting(3000, live=False, min=16, max=100000)
    temperature: float = setting(0.8, min=0, max=10)
    temperature_text: float = setting(0.7, min=0, max=10)
    top_k: int = setting(250, min=1, max=100000)
    top_k_text: int = setting(25, min=1, max=100000)
    greedy: bool = setting(False)
    cfg_coef: float = setting(1.0, live=False, min=0, max=100)
    cuda_graphs: bool = setting(True, live=False)
    random_weights: bool = setting(
        False,
        live=False,
        help="UNTRAINED random weights at the model's real size, no files: for speed "
        "measurement only (make gpu-check), never for calls; callers would hear noise",
    )


@dataclass(frozen=True, kw_only=True)
class DashboardSection:
    """``[dashboard]``: the supervisor's listener, the instances it watches, its history."""

    host: str = setting("127.0.0.1", live=False)
    port: int = setting(SUPERVISOR_PORT, live=False, min=1, max=65535)
    instances: tuple[str, ...] = setting(
        (),
        help="control URLs to supervise: wss://HOST:PORT/control across hosts (ws:// only on "
        "loopback), #NAME at the end names the instance; empty: the local bridge",
    )
    ca_file: str = setting(
        "",
        help="PEM bundle of the CA(s) that signed the bridges' certificates, for wss:// "
        "instances; empty: the system's trust store; hostname checking is always on",
    )
    history_limit: int = setting(100000, min=10, max=100_000_000)
    stale_after: float = setting(2.0, min=0.1, max=600)
    operator_batch_ms: int = setting(
        1000,
        min=10,
        max=60000,
        help="operators that subscribe with batch get per-call updates coalesced this often",
    )
    server_names: str = setting(
        "",
        help="host names operators use to reach the API (Host header), space-separated; IP "
        "literals and localhost always work, any other name is refused (DNS rebinding)",
    )


@dataclass(frozen=True, kw_only=True)
class HaproxySection:
    """``[haproxy]``: the front door (``xswarm install --haproxy``) and the bridges on other
    hosts it balances calls over, besides this host's own instances."""

    backends: tuple[str, ...] = setting(
        (),
        help='bridges on other hosts, as "host:port" ("[v6addr]:port" for IPv6), e.g. '
        '["10.0.0.2:9998", "voice2.example.com:9998"]; each must list this host in its '
        "[voice.bridge] trusted_proxies; xswarm install --backends overrides this list",
    )
    backend_ca_file: str = setting(
        "",
        help="absolute path of the PEM CA that signed the backends' [voice.bridge] tls_cert: "
        "HAProxy then reaches every backend over TLS, verifying the certificate names the "
        "backend's host as written in backends (HAProxy 2.6 matches DNS names and the CN "
        "only: for an IP address, put the IP in a DNS subjectAltName or the CN too); "
        "empty: plain TCP, calls cross the network in clear",
    )


@dataclass(frozen=True, kw_only=True)
class PathsSection:
    """``[paths]``: where state lives."""

    state_dir: str = setting("", live=False, help="SQLite and model cache; empty: see docs")


@dataclass(frozen=True, kw_only=True)
class LoggingSection:
    """``[logging]``."""

    level: Literal["debug", "info", "warning", "error"] = setting("info")


def _section(toml_name: str, kind: type[_T]) -> _T:
    return field(default_factory=kind, metadata={_TOML_SECTION: toml_name})


@dataclass(frozen=True)
class Config:
    """A validated configuration, one typed section per TOML section: ``config.bridge.port``."""

    bridge: BridgeSection = _section("voice.bridge", BridgeSection)
    echo: EchoSection = _section("voice.echo", EchoSection)
    suggestions: SuggestionsSection = _section("voice.suggestions", SuggestionsSection)
    moshi: MoshiSection = _section("voice.moshi", MoshiSection)
    dashboard: DashboardSection = _section("dashboard", DashboardSection)
    haproxy: HaproxySection = _section("haproxy", HaproxySection)
    paths: PathsSection = _section("paths", PathsSection)
    logging: LoggingSection = _section("logging", LoggingSection)
    source: str = "built-in defaults"
    instances: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    def with_bridge(self, **changes: Any) -> Config:
        """This config with ``[voice.bridge]`` keys replaced (already validated by the caller)."""
        return dataclasses.replace(self, bridge=dataclasses.replace(self.bridge, **changes))

    def for_instance(self, instance: int | None) -> Config:
        """The config one bridge process sees: ``--instance N`` moves the port, never onto 9999."""
        if instance is None:
            return self
        overrides: dict[str, Any] = {"port": self.bridge.instance_port_base + instance}
        overrides.update(self.instances.get(instance, {}))
        device = overrides.pop("device", None)
        port = overrides["port"]
        where = f"[voice.bridge.instances.{instance}] port"
        if not 1 <= port <= 65535:
            raise ConfigError(self.source, where, f"instance {instance} gives port {port}")
        if port == self.dashboard.port:
            raise ConfigError(
                self.source,
                where,
                f"instance {instance} would listen on {port}, the supervisor's port; "
                "set instance_port_base or a per-instance port",
            )
        view = self.with_bridge(**overrides)
        if device is None:
            return view
        return dataclasses.replace(view, moshi=dataclasses.replace(view.moshi, device=device))

    def state_dir(self) -> Path:
        """Where SQLite and caches live: config, then systemd's $STATE_DIRECTORY, then defaults."""
        if self.paths.state_dir:
            return Path(self.paths.state_dir)
        env = os.environ.get("XSWARM_STATE_DIR") or os.environ.get("STATE_DIRECTORY")
        if env:
            return Path(env.split(":")[0])
        if os.access(DEFAULT_STATE_DIR, os.W_OK):
            return DEFAULT_STATE_DIR
        return Path.cwd() / ".xswarm-state"

    def control_urls(self) -> list[str]:
        """The voice instances the supervisor watches; by default the local bridge."""
        if self.dashboard.instances:
            return list(self.dashboard.instances)
        host = self.bridge.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return [f"ws://{host}:{self.bridge.port}/control"]


def _as_mapping(section: Any) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}


def _toml_key(hint: Any, spec: dataclasses.Field[Any]) -> Key:
    """The TOML view of one declared field: a tuple is a TOML array, a Literal a choice."""
    rules: _Rules = spec.metadata[_RULES]
    choices = None
    kind = hint
    default = spec.default
    if get_origin(hint) is Literal:
        choices = tuple(str(choice) for choice in get_args(hint))
        kind = str
    elif get_origin(hint) is tuple and isinstance(default, tuple):
        kind, default = list, list(default)
    return Key(kind, default, rules.live, rules.min, rules.max, choices, rules.help)


def _schema() -> tuple[dict[str, str], dict[str, type[Any]], dict[str, dict[str, Key]]]:
    sections: dict[str, str] = {}
    kinds: dict[str, type[Any]] = {}
    schema: dict[str, dict[str, Key]] = {}
    for section in dataclasses.fields(Config):
        toml_name = section.metadata.get(_TOML_SECTION)
        if toml_name is None:
            continue
        kind = get_type_hints(Config)[section.name]
        hints = get_type_hints(kind)
        sections[toml_name] = section.name
        kinds[toml_name] = kind
        schema[toml_name] = {f.name: _toml_key(hints[f.name], f) for f in dataclasses.fields(kind)}
    return sections, kinds, schema


# TOML section name -> Config attribute ("voice.bridge" -> "bridge"), -> its dataclass, and
# every key's rules: all derived from the section dataclasses above.
SECTIONS, _SECTION_TYPES, SCHEMA = _schema()

# Per-instance overrides under [voice.bridge.instances.N]: only these keys, each with the
# section whose key it replaces for that instance (``device`` pins its engine to one GPU).
INSTANCE_SECTIONS = {
    "host": "voice.bridge",
    "port": "voice.bridge",
    "max_concurrent_calls": "voice.bridge",
    "device": "voice.moshi",
}
INSTANCE_KEYS = tuple(INSTANCE_SECTIONS)

# What an instance's ``device`` may name: the engine refuses anything else at start, but a
# per-instance device is written by install and pins a GPU, so it is checked at load.
_DEVICE = re.compile(r"cpu|cuda(:[0-9]{1,4})?")


def defaults() -> Config:
    return Config()


def _python(value: Any) -> Any:
    """A checked TOML value as its section field holds it: arrays become tuples (frozen)."""
    return tuple(value) if isinstance(value, list) else value


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
    except RecursionError:
        raise ConfigError(
            source, "(syntax)", "invalid TOML: arrays or tables nested too deeply"
        ) from None
    return from_mapping(data, source)


def from_mapping(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML document against ``SCHEMA``."""
    values: dict[str, dict[str, Any]] = {name: {} for name in SCHEMA}
    instances: dict[int, dict[str, Any]] = {}
    for section_name, table in _flatten_sections(data, source):
        if section_name.startswith("voice.bridge.instances."):
            number = section_name.rsplit(".", 1)[1]
            if not (number.isascii() and number.isdigit() and len(number) <= 5):
                raise ConfigError(
                    source,
                    f"[{_key_name(section_name)}]",
                    "instance must be a whole number 0 to 99999",
                )
            instances[int(number)] = _instance_overrides(table, section_name, source)
            continue
        schema = SCHEMA.get(section_name)
        if schema is None:
            known = ", ".join(f"[{s}]" for s in SCHEMA)
            raise ConfigError(
                source, f"[{_key_name(section_name)}]", f"unknown section; expected one of {known}"
            )
        for key, value in table.items():
            spec = schema.get(key)
            if spec is None:
                raise ConfigError(
                    source,
                    f"[{section_name}] {_key_name(key)}",
                    f"unknown key; expected one of {', '.join(schema)}",
                )
            checked = _check(value, spec, f"[{section_name}] {key}", source)
            values[section_name][key] = _python(checked)
    sections = {SECTIONS[name]: _SECTION_TYPES[name](**keys) for name, keys in values.items()}
    config = Config(**sections, source=source, instances=instances)
    _check_cross(config)
    return config


def _flatten_sections(data: Mapping[str, Any], source: str) -> list[tuple[str, dict[str, Any]]]:
    """Turn nested TOML tables into ("voice.bridge", {...}) pairs, leaf keys only."""
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(prefix: str, table: Mapping[str, Any], depth: int) -> None:
        if depth > MAX_TABLE_DEPTH:
            raise ConfigError(
                source,
                f"[{_key_name(prefix)}]",
                f"tables nested more than {MAX_TABLE_DEPTH} deep; no section is deeper than 4",
            )
        leaves = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if prefix and (leaves or prefix in SCHEMA or prefix.startswith("voice.bridge.instances.")):
            out.append((prefix, leaves))
        elif leaves:
            names = ", ".join(_key_name(key) for key in leaves)
            raise ConfigError(
                source, names, "keys must sit inside a section such as [voice.bridge]"
            )
        for key, value in table.items():
            if isinstance(value, dict):
                walk(f"{prefix}.{key}" if prefix else key, value, depth + 1)

    walk("", data, 0)
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _key_name(key: str) -> str:
    """An unknown key or section as the error shows it: bare if TOML would write it bare (dots
    joining its parts), else quoted, escaped and cut to 64 characters, so an empty name or one
    holding a line break still reads as one line."""
    return key if _BARE_KEY.fullmatch(key) else repr(key[:64])


def _instance_overrides(table: Mapping[str, Any], section: str, source: str) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if key not in INSTANCE_KEYS:
            raise ConfigError(
                source,
                f"[{section}] {_key_name(key)}",
                f"not per-instance; expected one of {', '.join(INSTANCE_KEYS)}",
            )
        where = f"[{section}] {key}"
        out[key] = _check(value, SCHEMA[INSTANCE_SECTIONS[key]][key], where, source)
        if key == "device" and not _DEVICE.fullmatch(value):
            raise ConfigError(
                source,
                where,
                f'expected "cpu", "cuda" or "cuda:N" (N the GPU\'s index as nvidia-smi -L '
                f'lists it), got {value[:64]!r}; e.g. device = "cuda:0"',
            )
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
    if spec.type is float and not math.isfinite(value):
        # NaN passes every bound check (all comparisons are false), so it is refused here.
        raise ConfigError(source, where, f"expected a finite number, got {value!r}")
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
            if not isinstance(item, str):
                raise ConfigError(source, where, f"expected strings, got {item!r}")
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def host_problem(host: str) -> str | None:
    """Why ``host`` is neither an IP literal nor an RFC 1123 hostname; None when it is one.

    Hosts are written into unit files and haproxy.cfg by root, so anything else (a newline,
    a space, a quote) is refused here rather than escaped there.
    """
    if not host:
        return "expected an IP address or a hostname, got an empty string"
    if not host.isascii() or not host.isprintable() or any(c.isspace() for c in host):
        return f"expected an IP address or a hostname, got {host!r} (control or space characters)"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in name.split(".")):
        return f"expected an IP address or an RFC 1123 hostname, got {host!r}"
    return None


def _check_hosts(config: Config) -> None:
    hosts = [
        ("[voice.bridge] host", config.bridge.host),
        ("[dashboard] host", config.dashboard.host),
    ]
    for number, overrides in config.instances.items():
        if "host" in overrides:
            hosts.append((f"[voice.bridge.instances.{number}] host", overrides["host"]))
    for where, host in hosts:
        problem = host_problem(host)
        if problem:
            raise ConfigError(config.source, where, problem)
    for url in config.dashboard.instances:
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(
                config.source,
                "[dashboard] instances",
                f"expected ws:// or wss:// URLs, got {url!r}",
            )
        problem = url_host_problem(url)
        if problem:
            raise ConfigError(config.source, "[dashboard] instances", problem)


def url_host_problem(url: str) -> str | None:
    """Why a control URL's host or port is unusable; None when both are sound."""
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        return f"{url!r} holds control or space characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if port is not None and not 1 <= port <= 65535:
        return f"{url!r} has port {port}; expected 1 to 65535"
    problem = host_problem(parts.hostname or "")
    return f"{url!r}: {problem}" if problem else None


def backend_address(entry: str) -> tuple[str, int]:
    """One of ``[haproxy] backends`` as (host, port), the host in one canonical spelling (an
    IP compressed, a name in lower case) so that two spellings of one server are one server.
    Raises ValueError saying what is wrong with ``entry`` and how it should look."""
    example = "such as 10.0.0.2:9998, voice2.example.com:9998 or [fd00::2]:9998"
    if not entry.isascii() or not entry.isprintable() or any(c.isspace() for c in entry):
        raise _bad_backend(entry, f"expected host:port {example} (control or space characters)")
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise _bad_backend(entry, f"expected [IPv6]:port {example}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad_backend(entry, f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, colon, port_text = entry.rpartition(":")
        if not colon:
            raise _bad_backend(entry, f"has no port; expected host:port {example}")
        if ":" in host:
            raise _bad_backend(entry, f"write an IPv6 address in brackets, {example}")
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise _bad_backend(entry, f"port {port_text!r}: expected a port from 1 to 65535")
    problem = host_problem(host)
    if problem:
        raise _bad_backend(entry, problem)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip("."), int(port_text)
    if address.is_unspecified:
        raise _bad_backend(entry, "is a wildcard address; name the host HAProxy connects to")
    return str(address), int(port_text)


def _bad_backend(entry: str, problem: str) -> ValueError:
    return ValueError(f"{entry!r}: {problem}")


def backend_addresses(entries: tuple[str, ...] | list[str]) -> list[tuple[str, int]]:
    """Every backend parsed (``backend_address``), each once; ValueError names the first wrong
    one or the first listed twice."""
    seen: dict[tuple[str, int], str] = {}
    for entry in entries:
        address = backend_address(entry)
        if address in seen:
            raise ValueError(
                f"{entry!r} is the same server as {seen[address]!r}; list each backend once"
            )
        seen[address] = entry
    return list(seen)


_CA_PATH = re.compile(r"/[A-Za-z0-9_./+@-]+")


def _check_haproxy(config: Config) -> None:
    try:
        backend_addresses(config.haproxy.backends)
    except ValueError as exc:
        raise ConfigError(config.source, "[haproxy] backends", str(exc)) from None
    ca_file = config.haproxy.backend_ca_file
    if ca_file and (not _CA_PATH.fullmatch(ca_file) or ".." in ca_file.split("/")):
        raise ConfigError(
            config.source,
            "[haproxy] backend_ca_file",
            f"expected an absolute path of letters, digits and ._+@/- such as "
            f"/etc/xswarm/fleet-ca.pem, got {ca_file!r}",
        )


def require_public_url(config: Config, twilio_auth_token: str | None) -> None:
    """With ``TWILIO_AUTH_TOKEN`` set, the bridge needs ``public_url``: the only other source
    of the URL Twilio signed is the request itself, X-Forwarded-* included, which the caller
    chooses. Called by the bridge at start and on reload."""
    if twilio_auth_token and not config.bridge.public_url:
        raise ConfigError(
            config.source,
            "[voice.bridge] public_url",
            "is required because TWILIO_AUTH_TOKEN is set: the URL at which Twilio reaches this "
            "bridge, e.g. wss://voice.example.com (X-Twilio-Signature is checked against it)",
        )


def _check_public_url(config: Config) -> None:
    """``public_url`` is what Twilio signs: a ws(s)/http(s) URL with a host and at most a path."""
    url = config.bridge.public_url
    if not url:
        return
    where = "[voice.bridge] public_url"
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # an unclosed "[" of an IPv6 literal, say
        hostname = None
    if (
        not hostname  # first: ``parts`` is unset when urlsplit refused the URL
        or parts.scheme not in ("wss", "ws", "https", "http")
        or parts.query
        or parts.fragment
        or any(ord(ch) < 0x21 or 0x7F <= ord(ch) <= 0x9F for ch in url)
    ):
        raise ConfigError(config.source, where, f"expected wss://HOST[/PREFIX], got {url!r}")


def _check_networks(config: Config, key: str, entries: tuple[str, ...], example: str) -> None:
    """Each entry of a list of addresses or CIDRs parses, or the key is named with an example."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                config.source,
                key,
                f"expected IP addresses or CIDRs such as {example}, got {entry!r}",
            ) from None


def _check_tls(config: Config) -> None:
    if config.bridge.tls_key and not config.bridge.tls_cert:
        raise ConfigError(
            config.source,
            "[voice.bridge] tls_key",
            "is set without tls_cert; set tls_cert to the certificate chain's PEM file",
        )


def _check_cross(config: Config) -> None:
    _check_hosts(config)
    _check_tls(config)
    _check_public_url(config)
    _check_networks(
        config,
        "[voice.bridge] trusted_proxies",
        config.bridge.trusted_proxies,
        "127.0.0.1 or 10.0.0.0/8",
    )
    _check_haproxy(config)
    _check_networks(
        config, "[voice.bridge] control_allow", config.bridge.control_allow, "10.77.0.0/24"
    )
    bridge, dash_port = config.bridge, config.dashboard.port
    if bridge.port == dash_port:
        raise ConfigError(
            config.source,
            "[voice.bridge] port",
            f"{bridge.port} is also [dashboard] port; the supervisor owns {dash_port}",
        )
    for number, overrides in config.instances.items():
        port = overrides.get("port", bridge.instance_port_base + number)
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
        before = _as_mapping(getattr(old, SECTIONS[section]))
        after = _as_mapping(getattr(new, SECTIONS[section]))
        for key, spec in keys.items():
            if before[key] != after[key]:
                (applied if spec.live else restart).append(f"[{section}] {key}")
    return applied, restart
