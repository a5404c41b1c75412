"""Strategies shared by the fuzz tests: any JSON value, and typed messages built from hints."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

SCALE = max(1, int(os.environ.get("XSWARM_FUZZ_SCALE", "1")))


def examples(n: int) -> settings:
    """Per-test settings: ``n`` examples (times XSWARM_FUZZ_SCALE), profile otherwise."""
    return settings(max_examples=n * SCALE, deadline=None)


# What Python's json module can hand a decoder: it also reads NaN and ±Infinity, and
# integers of any size (up to the 4300-digit conversion limit).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=24)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)
finite_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=10,
)


def objects_with(fields: typing.Iterable[str], type_names: typing.Iterable[str] = ()) -> Any:
    """JSON objects with an optional ``type`` from ``type_names`` (or any), and any of
    ``fields`` holding any JSON value: the shape a hostile or buggy peer would send."""
    names = list(type_names)
    type_values = (st.sampled_from(names) if names else st.nothing()) | json_values
    return st.fixed_dictionaries(
        {},
        optional={"type": type_values, **{name: json_values for name in fields}},
    )


def non_finite_numbers(value: object, path: str = "") -> list[str]:
    """Where in a decoded value (dataclasses, mappings, sequences) a NaN or infinity hides."""
    found: list[str] = []
    if isinstance(value, float) and not math.isfinite(value):
        found.append(path or "<value>")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for spec in dataclasses.fields(value):
            found += non_finite_numbers(getattr(value, spec.name), f"{path}.{spec.name}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found += non_finite_numbers(item, f"{path}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found += non_finite_numbers(item, f"{path}[{index}]")
    return found


def _for_hint(hint: Any, overrides: Mapping[type, Any]) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_for_hint(arm, overrides) for arm in typing.get_args(hint)))
    if hint in overrides:
        return overrides[hint]
    if hint is type(None):
        return st.none()
    if hint is str:
        return st.text(max_size=24)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(min_value=-(2**63), max_value=2**63)
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if origin is tuple:
        return st.lists(_for_hint(typing.get_args(hint)[0], overrides), max_size=3).map(tuple)
    if origin in (Mapping, dict, typing.Mapping):
        arguments = typing.get_args(hint)
        values = _for_hint(arguments[1], overrides) if arguments else finite_json_values
        return st.dictionaries(st.text(max_size=12), values, max_size=3)
    if hint is Any:
        return finite_json_values
    if dataclasses.is_dataclass(hint):
        return typed(hint, overrides)
    raise TypeError(f"no strategy for {hint!r}")


def typed(cls: type, overrides: Mapping[type, Any] | None = None, **fields: Any) -> Any:
    """Instances of the message dataclass ``cls``, every field drawn from its annotation;
    ``fields`` fixes the strategy of named fields, ``overrides`` of whole types."""
    hints = typing.get_type_hints(cls)
    strategies = {}
    for spec in dataclasses.fields(cls):
        if not spec.init:
            continue
        if spec.name in fields:
            strategies[spec.name] = fields[spec.name]
        else:
            strategies[spec.name] = _for_hint(hints[spec.name], overrides or {})
    return st.builds(cls, **strategies)
