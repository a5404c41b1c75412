"""Config: every error names the file, the key and what was expected."""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args, get_origin, get_type_hints

import pytest

from xswarm import config
from xswarm.errors import ConfigError


def test_defaults_match_the_design() -> None:
    c = config.defaults()
    assert c.bridge.port == 9998 and c.dashboard.port == 9999
    assert c.bridge.engine == "auto"
    assert c.for_instance(2).bridge.port == 10002
    assert c.control_urls() == ["ws://127.0.0.1:9998/control"]


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        (
            '[voice.bridge]\nport = "9998"\n',
            "[voice.bridge] port",
            "expected a whole number, got str",
        ),
        (
            "[voice.bridge]\nport = true\n",
            "[voice.bridge] port",
            "expected a whole number, got bool",
        ),
        (
            "[voice.bridge]\nmax_concurrent_calls = 0\n",
            "[voice.bridge] max_concurrent_calls",
            "from 1 to 100000",
        ),
        (
            '[voice.bridge]\nengine = "gpu"\n',
            "[voice.bridge] engine",
            "expected one of auto, echo, moshi",
        ),
        ("[voice.birdge]\nport = 1\n", "[voice.birdge]", "unknown section"),
        ("port = 1\n", "port", "inside a section"),
        ('[dashboard]\ninstances = ["http://x"]\n', "[dashboard] instances", "ws:// or wss://"),
        (
            "[voice.bridge.instances.two]\nport = 1\n",
            "[voice.bridge.instances.two]",
            "whole number",
        ),
        (
            '[voice.bridge.instances.2]\nengine = "echo"\n',
            "[voice.bridge.instances.2] engine",
            "not per-instance",
        ),
        (
            "[voice.bridge.instances.2]\nport = 9999\n",
            "[voice.bridge.instances.2] port",
            "supervisor's port",
        ),
    ],
)
def test_bad_values_name_key_and_expectation(toml: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as error:
        config.from_mapping(__import__("tomllib").loads(toml), "/etc/x.toml")
    assert error.value.key == key
    assert words in str(error.value)
    assert str(error.value).startswith("/etc/x.toml: ")
    assert error.value.exit_status == 78


def test_files_that_are_not_toml_or_too_big_are_refused(tmp_path) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(binary)
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (2 << 20))
    with pytest.raises(ConfigError, match="at most 1 MiB"):
        config.load(huge)


def test_precedence_flag_then_env_then_default(tmp_path, monkeypatch) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("[voice.bridge]\nport = 1111\n")
    b.write_text("[voice.bridge]\nport = 2222\n")
    monkeypatch.setenv("XSWARM_CONFIG", str(b))
    assert config.load(a).bridge.port == 1111
    assert config.load(None).bridge.port == 2222


def test_per_instance_ports_and_reload_changes() -> None:
    c = config.from_mapping({"voice": {"bridge": {"instances": {"3": {"port": 12000}}}}})
    assert c.for_instance(3).bridge.port == 12000
    assert c.for_instance(4).bridge.port == 10004
    new = config.from_mapping({"voice": {"bridge": {"max_concurrent_calls": 5, "port": 1234}}})
    applied, restart = config.reload_changes(c, new)
    assert applied == ["[voice.bridge] max_concurrent_calls"]
    assert restart == ["[voice.bridge] port"]


def _python_type_ok(value: object, hint: object) -> bool:
    """Whether ``value`` is what a field annotated ``hint`` promises (bool is not an int here)."""
    if get_origin(hint) is Literal:
        return isinstance(value, str) and value in get_args(hint)
    if get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(isinstance(item, str) for item in value)
    assert isinstance(hint, type)
    return type(value) is hint


@pytest.mark.parametrize(
    "source",
    [
        {},
        {
            "voice.bridge": {"drain_timeout": 5, "engine": "echo", "max_concurrent_calls": 9},
            "voice.moshi": {"greedy": True, "temperature": 1, "dtype": "fp32"},
            "dashboard": {"instances": ["ws://a:1/control", "wss://b/control"]},
        },
    ],
    ids=["defaults", "from-toml"],
)
def test_every_schema_key_is_a_typed_attribute(source: dict[str, dict[str, object]]) -> None:
    c = config.from_mapping(source)
    for section, keys in config.SCHEMA.items():
        typed = getattr(c, config.SECTIONS[section])
        hints = get_type_hints(type(typed))
        assert set(hints) == set(keys), section
        for key in keys:
            value = getattr(typed, key)
            assert _python_type_ok(value, hints[key]), f"[{section}] {key} = {value!r}"


def test_the_named_reads_are_typed_attributes() -> None:
    c = config.from_mapping({"voice.echo": {"delay_ms": 40}, "paths": {"state_dir": "/s"}})
    assert c.bridge.max_concurrent_calls == 300 and c.bridge.port == 9998
    assert c.echo.delay_ms == 40 and c.suggestions.min_interval_ms == 2000
    assert c.moshi.slots == 0 and c.dashboard.port == 9999
    assert c.paths.state_dir == "/s" and c.logging.level == "info"
    assert c.dashboard.instances == () and c.bridge.drain_timeout == 30.0


def test_for_instance_carries_the_overrides_in_bridge() -> None:
    c = config.from_mapping(
        {
            "voice.bridge": {"max_concurrent_calls": 50},
            "voice.bridge.instances.3": {"host": "0.0.0.0", "max_concurrent_calls": 8},
        }
    )
    three = c.for_instance(3)
    assert three.bridge.port == 10003 and three.bridge.host == "0.0.0.0"
    assert three.bridge.max_concurrent_calls == 8
    assert c.for_instance(4).bridge.max_concurrent_calls == 50
    assert c.bridge.port == 9998 and c.bridge.host == "127.0.0.1"
    assert three.moshi == c.moshi and three.source == c.source and three.instances == c.instances
    assert c.for_instance(None) is c


def test_config_and_its_sections_are_frozen() -> None:
    c = config.defaults()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.bridge.max_concurrent_calls = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.bridge = c.for_instance(1).bridge  # type: ignore[misc]
    with pytest.raises(AttributeError):
        c.dashboard.instances.append("ws://x/control")  # type: ignore[attr-defined]


def test_an_instance_device_pins_that_instance_engine_only() -> None:
    c = config.from_mapping(
        {
            "voice.bridge.instances.1": {"device": "cuda:0"},
            "voice.bridge.instances.2": {"device": "cuda:1", "port": 12002},
            "voice.bridge.instances.3": {"device": "cpu"},
        }
    )
    assert c.for_instance(1).moshi.device == "cuda:0"
    two = c.for_instance(2)
    assert two.moshi.device == "cuda:1" and two.bridge.port == 12002
    assert c.for_instance(3).moshi.device == "cpu"
    assert c.for_instance(4).moshi.device == "cuda" and c.moshi.device == "cuda"
    assert two.moshi.dtype == c.moshi.dtype and two.moshi.slots == c.moshi.slots
    # A GPU is not swapped under live calls: the moved device needs a restart.
    applied, restart = config.reload_changes(c.for_instance(1), two)
    assert "[voice.moshi] device" in restart and "[voice.moshi] device" not in applied


@pytest.mark.parametrize("device", ["gpu0", "cuda:", "cuda:x", "CUDA:0", "cuda:0 ", "mps", ""])
def test_an_instance_device_must_name_cpu_or_a_cuda_index(device: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.from_mapping({"voice.bridge.instances.2": {"device": device}}, "c.toml")
    assert str(caught.value) == (
        'c.toml: [voice.bridge.instances.2] device: expected "cpu", "cuda" or "cuda:N" (N the '
        f'GPU\'s index as nvidia-smi -L lists it), got {device!r}; e.g. device = "cuda:0"'
    )


def test_an_instance_device_of_the_wrong_type_and_unknown_instance_keys_are_named() -> None:
    with pytest.raises(ConfigError, match=r"instances.1\] device: expected a string, got int"):
        config.from_mapping({"voice.bridge.instances.1": {"device": 0}})
    with pytest.raises(
        ConfigError, match="expected one of host, port, max_concurrent_calls, device"
    ):
        config.from_mapping({"voice.bridge.instances.1": {"dtype": "fp32"}})
