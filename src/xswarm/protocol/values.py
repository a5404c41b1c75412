"""Reading JSON values from a peer, and writing our records: the one place that decides what
counts as a number or text, and how a dataclass becomes a JSON object.

Both wires (bridge ⇄ supervisor in ``control``, supervisor ⇄ TUI in ``operator``) read their
fields through these functions, so the three processes agree on what a peer may send. Numbers
must be finite: a NaN or an infinity from a peer is treated as absent, because it would
poison every sort, sum and chart downstream. Booleans are not numbers, though JSON's
``true`` is an ``int`` to Python. Writing (:class:`Encodable`) mirrors reading
(:class:`Lenient`): what one writes from a dataclass's fields, the other reads back.
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
_OMIT_DEFAULT = "xswarm.omit_default"


def nested(kind: type[Lenient] | None = None) -> Any:
    """A record field written under its own key and read from the object there, its defaults
    where the peer sent none: ``limits: MemoryLimits = nested(MemoryLimits)``. Without
    ``kind`` the field is required (a record we only write: ``info: InstanceInfo = nested()``).
    """
    if kind is None:
        return dataclasses.field(metadata={_NESTED: True})
    return dataclasses.field(default_factory=kind, metadata={_NESTED: True})


def omit_default(default: bool | None = None) -> Any:
    """A field the wire leaves out while it holds its default, and writes in its declared
    place otherwise: ``caller: str | None = omit_default()``. For fields a message added
    later, or that mean nothing in most messages: a peer that predates them gets the bytes it
    always got. The default is compared by identity, hence None or a boolean."""
    return dataclasses.field(default=default, metadata={_OMIT_DEFAULT: True})


class Encodable:
    """A record written as the JSON object of its dataclass fields, the way every message of
    the two wires is written: ``type`` first when the class has a ``TYPE``, then each field
    under its own name in declaration order, None written as null, except that

    - a field declared with :func:`omit_default` is left out while it holds its default;
    - a field typed as another ``Encodable`` class is written beside ours (its fields in our
      object); one typed ``Encodable | None``, or declared with :func:`nested`, under its own
      key (null when None). A record inside another is written without its ``type``;
    - a tuple is written as a list (records in it as objects), a ``Mapping`` as a copy.

    These are the mirror of :class:`Lenient`'s rules, so ``decode(encode(x)) == x``. A class
    whose wire order its constructor cannot follow overrides :meth:`body` and says why.

    Encoding is on the per-event path of both services (a ``call_stats`` a second per call, a
    ``text`` per word), so each class's ``encode`` and ``body`` are compiled on first use
    into the dict display a hand-written one would be (as ``dataclasses`` compiles
    ``__init__``), and installed on the class: the rules cost nothing per message.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each class holds its own compiling methods (those below), so that it never runs
        a base class's compiled ones, whose fields may differ; hand-written ones are kept,
        inherited or not."""
        super().__init_subclass__(**kwargs)
        for name in ("encode", "body"):
            if name not in cls.__dict__ and _generic(getattr(cls, name)):
                setattr(cls, name, getattr(Encodable, name))

    def encode(self) -> dict[str, Any]:
        """The message as sent: ``type`` (when the class has one), then the fields."""
        return _compile(type(self)).encode(self)

    def body(self) -> dict[str, Any]:
        """The fields without ``type``: how a record is written inside another."""
        return _compile(type(self)).body(self)


_COMPILED = "_xswarm_compiled"


def _generic(method: object) -> bool:
    """Whether a method is Encodable's compiling one or one compiled from it."""
    return method in (Encodable.encode, Encodable.body) or getattr(method, _COMPILED, False)


def _compile(cls: type[Encodable]) -> type[Encodable]:
    """Install on ``cls`` its ``encode`` and ``body`` generated from its fields' rules, where
    it still holds the compiling ones (a caller that bound one before finds them installed).
    """
    message_type = getattr(cls, "TYPE", None)
    head = [] if message_type is None else [f"'type': {message_type!r}"]
    sources = {}
    hand_written_body = cls.body is not Encodable.body and not _generic(cls.body)
    if cls.body is Encodable.body:
        sources["body"] = _writer_source(cls, [])
    if cls.encode is Encodable.encode:
        sources["encode"] = (
            "return {" + ", ".join([*head, "**self.body()"]) + "}"
            if hand_written_body
            else _writer_source(cls, head)
        )
    namespace = dict(_CONVERTERS)
    for name, source in sources.items():
        exec(f"def {name}(self):\n    " + source.replace("\n", "\n    "), namespace)
        method = namespace[name]
        method.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(method, _COMPILED, True)
        setattr(cls, name, method)
    return cls


def _writer_source(cls: type[Encodable], head: list[str]) -> str:
    """The body of a generated writer: one dict display while no field may be left out, then
    a statement a field."""
    hints = typing.get_type_hints(cls)
    where = str(getattr(cls, "TYPE", cls.__name__))
    display, lines = list(head), []
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not spec.init:
            continue
        name, hint, value = spec.name, hints[spec.name], f"self.{spec.name}"
        if _is_record(hint) and _NESTED not in spec.metadata:
            if _OMIT_DEFAULT in spec.metadata:
                raise TypeError(f"{where}.{name}: a record written beside ours is never left out")
            item, statement = f"**{value}.body()", f"out.update({value}.body())"
        else:
            convert = _converter(hint)
            if _OMIT_DEFAULT in spec.metadata:
                if spec.default is not None and not isinstance(spec.default, bool):
                    raise TypeError(f"{where}.{name}: omit_default() takes None or a boolean")
                written = "value" if convert is None else f"{convert}(value)"
                lines.append(
                    f"value = {value}\nif value is not {spec.default!r}:\n"
                    f"    out[{name!r}] = {written}"
                )
                continue
            written = value if convert is None else f"{convert}({value})"
            item, statement = f"{name!r}: {written}", f"out[{name!r}] = {written}"
        if lines:
            lines.append(statement)
        else:
            display.append(item)
    if not lines:
        return "return {" + ", ".join(display) + "}"
    return "\n".join(["out = {" + ", ".join(display) + "}", *lines, "return out"])


def _is_record(hint: object) -> bool:
    return isinstance(hint, type) and issubclass(hint, Encodable)


def _converter(hint: object) -> str | None:
    """The name (in ``_CONVERTERS``) of how a value of the declared type becomes JSON; None
    where it already is. Every conversion keeps None."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    inner = args[0] if len(args) == 1 else hint
    if _is_record(inner):
        return "_record_body"
    origin = typing.get_origin(inner)
    if origin is tuple:
        items = typing.get_args(inner)
        return "_records_list" if items and _is_record(items[0]) else "_list"
    if origin is Mapping:
        return "_dict"
    return None


def _record_body(value: Encodable | None) -> dict[str, Any] | None:
    return None if value is None else value.body()


def _records_list(value: tuple[Encodable, ...] | None) -> list[dict[str, Any]] | None:
    return None if value is None else [item.body() for item in value]


def _list(value: tuple[object, ...] | None) -> list[object] | None:
    return None if value is None else list(value)


def _dict(value: Mapping[str, object] | None) -> dict[str, object] | None:
    return None if value is None else dict(value)


_CONVERTERS: dict[str, Any] = {
    "_record_body": _record_body,
    "_records_list": _records_list,
    "_list": _list,
    "_dict": _dict,
}


class Lenient(Encodable):
    """A message read field by field from its dataclass annotations, the way every event of
    the two wires is read: a field of the wrong type, or a number that is not finite, reads
    as absent, so a peer newer or buggier than us does not blind us. A required ``str`` field
    (an event's ``call_id``) is the exception: without it the message means nothing, and
    :class:`BadMessage` says so. A field typed as another ``Lenient`` class is read from the
    same object (its fields sit beside ours on the wire); one typed ``Lenient | None``, or
    declared with ``nested()``, from the object under its own key: where ``encode`` wrote it.
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
