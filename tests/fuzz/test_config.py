"""Config files: whatever mapping or bytes a config.toml holds, loading gives a Config whose
numbers are finite and within bounds, or a ConfigError naming the key; a valid config
round-trips through ``from_mapping``."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import examples, non_finite_numbers
from xswarm import config
from xswarm.errors import ConfigError

SECTION_NAMES = [*config.SCHEMA, "voice.bridge.instances.1", "voice", "nope"]
KEYS = sorted({key for keys in config.SCHEMA.values() for key in keys} | {"nope"})

toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "127.0.0.1",
            "localhost",
            "ws://127.0.0.1:9998/control",
            "wss://x/voice",
            "echo",
            "auto",
            "FIR",
        ]
    )
    | st.datetimes().map(lambda d: d)
    | st.dates()
)
toml_values = toml_scalars | st.lists(toml_scalars, max_size=3)


def _nest(section: str, table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = table
    for part in reversed(section.split(".")):
        out = {part: out}
    return out


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """TOML-ish documents: mostly real sections and keys, with any values."""
    document: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 3))):
        section = draw(st.sampled_from(SECTION_NAMES) | st.text(max_size=12))
        keys = draw(st.lists(st.sampled_from(KEYS) | st.text(max_size=8), max_size=3))
        table = {key: draw(toml_values) for key in keys}
        merged = _nest(section, table) if section else table
        document = _merge(document, merged)
    return document


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _check_loaded(loaded: config.Config) -> None:
    assert not non_finite_numbers(loaded), non_finite_numbers(loaded)
    for section, keys in config.SCHEMA.items():
        values = getattr(loaded, config.SECTIONS[section])
        for key, spec in keys.items():
            value = getattr(values, key)
            if spec.min is not None and not isinstance(value, bool):
                assert spec.min <= value <= spec.max, (section, key, value)


@examples(300)
@given(documents())
def test_any_mapping_loads_or_is_a_config_error(document: dict[str, Any]) -> None:
    try:
        loaded = config.from_mapping(document, "fuzz.toml")
    except ConfigError as exc:
        assert exc.source == "fuzz.toml" and exc.key.strip() and exc.problem
        assert str(exc).startswith("fuzz.toml: ")
        assert "\n" not in exc.key, exc.key  # start-up prints it as one line
        return
    _check_loaded(loaded)


@examples(150)
@given(st.sampled_from([(s, k) for s, keys in config.SCHEMA.items() for k in keys]), toml_values)
def test_a_wrong_value_is_refused_naming_its_key(where: tuple[str, str], value: Any) -> None:
    section, key = where
    try:
        loaded = config.from_mapping(_nest(section, {key: value}), "fuzz.toml")
    except ConfigError as exc:
        assert key in exc.key or key in exc.problem, exc
        return
    _check_loaded(loaded)


# Valid items for each list key: the key's own kind of value, not one shape for all lists.
_LIST_ITEMS = {
    "instances": ["ws://127.0.0.1:9998/control", "wss://voice.example.com/control"],
    "trusted_proxies": ["127.0.0.1", "::1", "10.0.0.0/8"],
    "server_names": ["voice.example.com", "localhost"],
    "control_allow": ["10.0.0.0/24", "127.0.0.1", "2001:db8::/64"],
    "backends": ["10.0.0.2:9998", "[2001:db8::2]:9998", "voice-b.example.com:10001"],
}


def _in_bounds(name: str, spec: config.Key) -> Any:
    if spec.choices is not None:
        return st.sampled_from(spec.choices)
    if spec.type is bool:
        return st.booleans()
    if spec.type is int:
        return st.integers(int(spec.min), int(spec.max))  # type: ignore[arg-type]
    if spec.type is float:
        return st.floats(spec.min, spec.max, allow_nan=False)
    if spec.type is list:
        return st.lists(st.sampled_from(_LIST_ITEMS[name]), max_size=2, unique=True)
    return st.just(spec.default)


@examples(150)
@given(st.data())
def test_valid_configs_round_trip(data: st.DataObject) -> None:
    document: dict[str, Any] = {}
    for section, keys in config.SCHEMA.items():
        chosen = data.draw(st.lists(st.sampled_from(list(keys)), unique=True, max_size=4))
        table = {key: data.draw(_in_bounds(key, keys[key])) for key in chosen}
        document = _merge(document, _nest(section, table))
    try:
        loaded = config.from_mapping(document)
    except ConfigError as exc:
        assert "port" in exc.key  # the only cross-key rule: two services on one port
        return
    for section, keys in config.SCHEMA.items():
        values = dataclasses.asdict(getattr(loaded, config.SECTIONS[section]))
        table = document
        for part in section.split("."):
            table = table.get(part, {})
        for key in keys:
            expected = table.get(key, keys[key].default)
            got = values[key]
            assert (list(got) if isinstance(got, tuple) else got) == expected, (section, key)


@examples(200)
@given(
    st.binary(max_size=300)
    | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | st.sampled_from(
        ["[voice.bridge]\n", "[dashboard]\n", "[voice.bridge.instances.1]\n", ""]
    ).flatmap(
        lambda header: st.lists(
            st.tuples(
                st.sampled_from(KEYS),
                st.sampled_from(
                    [
                        "1",
                        "-1",
                        "nan",
                        "inf",
                        "1e400",
                        '"x"',
                        "true",
                        "[1]",
                        "1979-05-27",
                        '"127.0.0.1\\nX=1"',
                        "0.5",
                    ]
                ),
            ),
            max_size=4,
        ).map(lambda pairs: (header + "".join(f"{k} = {v}\n" for k, v in pairs)).encode())
    )
)
def test_any_file_loads_or_is_a_config_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_bytes(raw)
        try:
            loaded = config.load(path)
        except ConfigError as exc:
            assert exc.source == str(path) and exc.key and exc.problem
            return
    _check_loaded(loaded)


REGRESSIONS: dict[str, dict[str, Any]] = {
    "a superscript instance number": {"voice": {"bridge": {"instances": {"²": {"port": 5}}}}},
    "a 5000-digit instance number": {"voice": {"bridge": {"instances": {"1" * 5000: {"port": 5}}}}},
    "an unclosed IPv6 public_url": {"voice": {"bridge": {"public_url": "http://[::1"}}},
    "a NaN drain_timeout": {"voice": {"bridge": {"drain_timeout": math.nan}}},
    "a NaN temperature": {"voice": {"moshi": {"temperature": math.nan}}},
}


def test_each_found_case_is_a_config_error() -> None:
    for name, document in REGRESSIONS.items():
        try:
            config.from_mapping(document, "fuzz.toml")
        except ConfigError:
            continue
        raise AssertionError(f"{name} was accepted")


def test_an_empty_or_multi_line_key_is_named_on_one_line() -> None:
    for document in ({"": False}, {"voice": {"bridge": {"": 1}}}, {"dashboard": {"a\nb": 1}}):
        try:
            config.from_mapping(document, "fuzz.toml")
        except ConfigError as exc:
            assert exc.key.strip() and "\n" not in exc.key, exc.key
            assert '""' in exc.key or "''" in exc.key or "\\n" in exc.key, exc.key
        else:
            raise AssertionError(f"{document} was accepted")


def test_tables_nested_thousands_deep_are_a_config_error(tmp_path: Path) -> None:
    deep: dict[str, Any] = {}
    table = deep
    for _ in range(3000):
        table["a"] = {}
        table = table["a"]
    for document in (deep,):
        try:
            config.from_mapping(document)
        except ConfigError:
            pass
        else:
            raise AssertionError("3000 nested tables were accepted")
    for body in (
        b"a = " + b"[" * 5000 + b"]" * 5000,
        b"[" + b".".join([b"a"] * 3000) + b"]\nx = 1\n",
    ):
        path = tmp_path / "config.toml"
        path.write_bytes(body)
        try:
            config.load(path)
        except ConfigError:
            continue
        raise AssertionError(f"{body[:20]!r}… was accepted")
