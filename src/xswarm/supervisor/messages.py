"""Operator messages on ``WS /ws``: text in, a typed command or a precise reason out (pure).

Every way a message can be wrong has its own sentence, because the operator reading the
``error`` is usually debugging their own client. Parsing never raises anything but
``BadMessage``, whatever the bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SUGGESTION_CHARS = 1000
PRIORITIES = ("low", "normal", "high")
MAX_ID_CHARS = 128

COMMAND_TYPES = ("auth", "subscribe", "ping", "inject_suggestion", "hangup")


class BadMessage(Exception):
    """An operator message we refuse; ``str()`` is the reason sent back in ``error``."""


@dataclass(frozen=True)
class Auth:
    token: str


@dataclass(frozen=True)
class Subscribe:
    pass


@dataclass(frozen=True)
class Ping:
    id: str | int | None = None


@dataclass(frozen=True)
class InjectSuggestion:
    text: str
    priority: str = "normal"
    call_id: str | None = None
    request_id: str | int | None = None
    instance: str | None = None


@dataclass(frozen=True)
class Hangup:
    call_id: str
    instance: str | None = None


Command = Auth | Subscribe | Ping | InjectSuggestion | Hangup


def parse(raw: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Command:
    """Decode and validate one operator message."""
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise BadMessage(f"message is {size} bytes; the limit is {max_bytes}")
    if isinstance(raw, bytes):
        raise BadMessage("binary messages are not accepted; send JSON text")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise BadMessage(f"invalid JSON: {exc.msg} at {where}") from None
    except RecursionError:
        raise BadMessage("invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise BadMessage(f"expected a JSON object, got {_kind(data)}")
    kind = data.get("type")
    if kind is None:
        raise BadMessage('missing "type"; expected one of ' + ", ".join(COMMAND_TYPES))
    if not isinstance(kind, str):
        raise BadMessage(f'"type" must be a string, got {_kind(kind)}')
    if kind == "auth":
        return Auth(token=_required_str(data, "token"))
    if kind == "subscribe":
        return Subscribe()
    if kind == "ping":
        return Ping(id=_optional_id(data, "id"))
    if kind == "inject_suggestion":
        priority = _optional_str(data, "priority") or "normal"
        if priority not in PRIORITIES:
            raise BadMessage(f'"priority" must be one of {", ".join(PRIORITIES)}, got {priority!r}')
        return InjectSuggestion(
            text=_required_str(data, "text", allow_empty=True),
            priority=priority,
            call_id=_optional_str(data, "call_id"),
            request_id=_optional_id(data, "request_id"),
            instance=_optional_str(data, "instance"),
        )
    if kind == "hangup":
        return Hangup(
            call_id=_required_str(data, "call_id"), instance=_optional_str(data, "instance")
        )
    shown = kind if len(kind) <= 40 else kind[:40] + "…"
    raise BadMessage(f"unknown type {shown!r}; expected one of {', '.join(COMMAND_TYPES)}")


def _kind(value: Any) -> str:
    return {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _required_str(data: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    if key not in data:
        raise BadMessage(f'{data["type"]}: missing "{key}"')
    value = data[key]
    if not isinstance(value, str):
        raise BadMessage(f'{data["type"]}: "{key}" must be a string, got {_kind(value)}')
    if not value and not allow_empty:
        raise BadMessage(f'{data["type"]}: "{key}" must not be empty')
    return value


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadMessage(f'{data["type"]}: "{key}" must be a string, got {_kind(value)}')
    return value


def _optional_id(data: dict[str, Any], key: str) -> str | int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadMessage(
            f'{data["type"]}: "{key}" must be a string or an integer, got {_kind(value)}'
        )
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        raise BadMessage(f'{data["type"]}: "{key}" is longer than {MAX_ID_CHARS} characters')
    return value
