"""Reading JSON values from a peer: the one place that decides what counts as a number or text.

Both wires (bridge ⇄ supervisor in ``control``, supervisor ⇄ TUI in ``operator``) read their
fields through these functions, so the three processes agree on what a peer may send. Numbers
must be finite: a NaN or an infinity from a peer is treated as absent, because it would
poison every sort, sum and chart downstream. Booleans are not numbers, though JSON's
``true`` is an ``int`` to Python.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Callable, Mapping
from typing import Any, Self

from xswarm.errors import ProtocolError

INVALID_DATA = 1007  # WebSocket close code: invalid frame payload data


class BadMessage(ProtocolError):
    """A message we refuse; ``str()`` is the sentence sent back, ``field`` the culprit, if any."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message, INVALID_DATA)


def kind(value: object) -> str:
    """What a JSON value is, in words, for error messages ("a number", "an array", "null")."""
    return {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def load_object(raw: str | bytes, max_bytes: int) -> dict[str, Any]:
    """One JSON text message as an object with a string ``type``; BadMessage says what is off."""
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise BadMessage(f"message is {size} bytes; the limit is {max_bytes}")
    if isinstance(raw, bytes):
        raise BadMessage("binary messages are not accepted; send JSON text")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise BadMessage(f"invalid JSON: {exc.msg} at {where}") from None
    except ValueError:
        # int() refuses more than sys.get_int_max_str_digits() digits (CVE-2020-10735).
        raise BadMessage("invalid JSON: an integer has more than 4300 digits") from None
    except RecursionError:
        raise BadMessage("invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise BadMessage(f"expected a JSON object, got {kind(data)}")
    return data


def _refuse_constant(name: str) -> Any:
    """Python's json reads NaN and ±Infinity, which JSON has not: a message carrying one is
    refused, so that no decoder can hand it on (a ``ping`` id is echoed as it came)."""
    raise BadMessage(f"invalid JSON: {name} is not a JSON number")


def message_type(data: Mapping[str, Any], expected: tuple[str, ...]) -> str:
    """The ``type`` of a decoded object; BadMessage when it is missing or not a string."""
    value = data.get("type")
    if value is None:
        raise BadMessage('missing "type"; expected one of ' + ", ".join(expected), "type")
    if not isinstance(value, str):
        raise BadMessage(f'"type" must be a string, got {kind(value)}', "type")
    return value


def unknown_type(value: str, expected: tuple[str, ...]) -> BadMessage:
    shown = value if len(value) <= 40 else value[:40] + "…"
    return BadMessage(f"unknown type {shown!r}; expected one of {', '.join(expected)}", "type")


def finite_number(value: object) -> int | float | None:
    """The value when it is a finite JSON number (kept as int or float), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def whole_number(value: object) -> int | None:
    """The value when it is a JSON integer (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def required_text(data: Mapping[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
    """A string field that must be there; BadMessage names the message, the field and the fix."""
    if key not in data:
        raise BadMessage(f'{where}: missing "{key}"', key)
    value = data[key]
    if not isinstance(value, str):
        raise BadMessage(f'{where}: "{key}" must be a string, got {kind(value)}', key)
    if not value and not allow_empty:
        raise BadMessage(f'{where}: "{key}" must not be empty', key)
    return value


def optional_text(data: Mapping[str, Any], key: str, where: str) -> str | None:
    """A string field that may be absent or null; any other type is refused."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadMessage(f'{where}: "{key}" must be a string, got {kind(value)}', key)
    return value


def optional_id(data: Mapping[str, Any], key: str, where: str, max_chars: int) -> str | int | None:
    """A correlation id: a string of at most ``max_chars`` or an integer, or absent."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadMessage(f'{where}: "{key}" must be a string or an integer, got {kind(value)}', key)
    if isinstance(value, str) and len(value) > max_chars:
        raise BadMessage(f'{where}: "{key}" is longer than {max_chars} characters', key)
    return value


def mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


MAX_FREE_FORM_DEPTH = 32


def finite_mapping(value: object) -> dict[str, Any] | None:
    """A free-form object (``engine_details``) as a copy in which every NaN or infinity, and
    anything nested deeper than ``MAX_FREE_FORM_DEPTH``, reads as null; None if not an object.

    The supervisor relays such objects to operators as they came, so a non-finite number in
    one would reach every chart downstream, and ``json.dumps`` would write invalid JSON.
    """
    if not isinstance(value, Mapping):
        return None
    return {key: _finite(item, MAX_FREE_FORM_DEPTH - 1) for key, item in value.items()}


def _finite(value: object, depth: int) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping | list | tuple) and depth <= 0:
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item, depth - 1) for item in value]
    return value


def identifier(value: object) -> str | int | None:
    """A correlation id as a peer sent it (a string or an integer), else None."""
    if isinstance(value, str) or whole_number(value) is not None:
        return value  # type: ignore[return-value]
    return None


def counts(value: object) -> dict[str, int] | None:
    """Counts by name; entries that are not a name and a whole number are left out."""
    if not isinstance(value, Mapping):
        return None
    out = {}
    for name, count in value.items():
        number = whole_number(count)
        if isinstance(name, str) and number is not None:
            out[name] = number
    return out


def _flag(value: object) -> bool:
    return value is True


# How a field of each declared type is read from a peer, leniently: a value of another type
# reads as absent, never as an error.
_LENIENT: dict[object, Callable[[object], object]] = {
    str | None: text,
    int | None: whole_number,
    float | None: finite_number,
    bool: _flag,
    str | int | None: identifier,
    Mapping[str, Any] | None: finite_mapping,
    Mapping[str, int] | None: counts,
}

Reader = Callable[[Mapping[str, Any]], object]

_NESTED = "xswarm.nested"


def nested(kind: type[Lenient]) -> Any:
    """A ``Lenient`` field read from the object under its own key, its defaults where the peer
    sent none: ``limits: MemoryLimits = nested(MemoryLimits)``."""
    return dataclasses.field(default_factory=kind, metadata={_NESTED: True})


class Lenient:
    """A message read field by field from its dataclass annotations, the way every event of
    the two wires is read: a field of the wrong type, or a number that is not finite, reads
    as absent, so a peer newer or buggier than us does not blind us. A required ``str`` field
    (an event's ``call_id``) is the exception: without it the message means nothing, and
    :class:`BadMessage` says so. A field typed as another ``Lenient`` class is read from the
    same object (its fields sit beside ours on the wire); one typed ``Lenient | None``, or
    declared with ``nested()``, from the object under its own key.
    """

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> Self:
        return cls(**{name: read(data) for name, read in _readers(cls)})

    @classmethod
    def decode_optional(cls, value: object) -> Self | None:
        """The object under a key, or None when the peer sent no object there."""
        return cls.decode(value) if isinstance(value, Mapping) else None


_READERS: dict[type[Lenient], tuple[tuple[str, Reader], ...]] = {}


def _readers(cls: type[Lenient]) -> tuple[tuple[str, Reader], ...]:
    """Each field's reader, worked out once per class from its annotations."""
    found = _READERS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        where = str(getattr(cls, "TYPE", cls.__name__))
        found = _READERS[cls] = tuple(
            (spec.name, _reader(spec.name, hints[spec.name], where, _NESTED in spec.metadata))
            for spec in dataclasses.fields(cls)  # type: ignore[arg-type]
            if spec.init
        )
    return found


def _reader(name: str, hint: object, where: str, under_key: bool = False) -> Reader:
    if hint is str:
        return lambda data: required_text(data, name, where)
    if isinstance(hint, type) and issubclass(hint, Lenient):
        if under_key:
            kind = hint
            return lambda data: kind.decode_optional(data.get(name)) or kind()
        return hint.decode
    nested = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if len(nested) == 1 and isinstance(nested[0], type) and issubclass(nested[0], Lenient):
        inner = nested[0]
        return lambda data: inner.decode_optional(data.get(name))
    lenient = _LENIENT.get(hint)
    if lenient is None:
        raise TypeError(f"{where}.{name}: no lenient reader for {hint!r}")
    return lambda data: lenient(data.get(name))
