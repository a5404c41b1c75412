"""Logging to stderr with ``<N>`` syslog priority prefixes, so journald keeps each level.

Records about a call carry its id (``extra={"call_id": ...}`` or a ``CallLogger``), printed as
``call=<id>`` so ``journalctl -u xswarm-voice | grep call=...`` follows one call.

A log line often quotes what a peer sent (a stream id, an event name, a header). Every control
character and line separator in it (C0, DEL, C1, U+2028, U+2029) is written as an escape
(``\n``, ``\x1b``, ``\u2028``), so one record is always one line and no peer can forge a
second, differently prefixed line. Only a traceback, which we produce, spans several lines,
each with the record's priority prefix.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def escape(text: str) -> str:
    """``text`` on one line: control characters and line separators as visible escapes."""
    return _UNPRINTABLE.sub(_escape_one, text)


def _traceback_lines(exc_info: Any) -> list[str]:
    """A traceback, one line per frame line; an exception's own text (which may quote a peer)
    stays on one escaped line."""
    lines: list[str] = []
    for chunk in traceback.TracebackException(*exc_info).format():
        ours = chunk.startswith(("  ", "Traceback ", "\nThe above", "\nDuring handling"))
        if ours:
            lines += [escape(line) for line in chunk.rstrip("\n").split("\n")]
        else:
            lines.append(escape(chunk.rstrip("\n")))
    return lines


class JournalFormatter(logging.Formatter):
    """``<3>xswarm.bridge: call=c1 message`` under systemd; a timestamp when on a terminal."""

    def __init__(self, with_time: bool, with_priority: bool = True) -> None:
        super().__init__()
        self.with_time = with_time
        self.with_priority = with_priority

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        call_id = getattr(record, "call_id", None)
        prefix = f"call={call_id} " if call_id else ""
        lines = [escape(f"{record.name}: {prefix}{record.getMessage()}")]
        if record.exc_info:
            lines += _traceback_lines(record.exc_info)
        if self.with_time:
            level = logging.getLevelName(record.levelno)[:4]
            lines[0] = f"{self.formatTime(record, '%H:%M:%S')} {level} {lines[0]}"
        if not self.with_priority:
            return "\n".join(lines)
        # journald reads a prefix per line: keep multi-line tracebacks at the same level.
        return "\n".join(f"<{priority}>{line}" for line in lines)


def setup(level: str = "info") -> None:
    """Configure the root logger once per process; calling again only changes the level."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JournalFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        under_journal = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
        # Priority prefixes for journald and any pipe or file; a person at a terminal gets
        # timestamps instead.
        on_terminal = sys.stderr.isatty()
        handler.setFormatter(
            JournalFormatter(with_time=not under_journal, with_priority=not on_terminal)
        )
        root.handlers[:] = [handler]
    root.setLevel(level.upper())


class CallLogger(logging.LoggerAdapter):
    """A logger that stamps every record with one call's id."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs.setdefault("extra", {})["call_id"] = self.extra["call_id"] if self.extra else None
        return msg, kwargs
