"""The config.toml and .env templates, generated from the schema so they cannot drift.

``deploy/config.example.toml`` and ``deploy/env.example`` are these functions' output, checked
in for readers; a test fails when the schema changes and they were not regenerated
(``python -m xswarm.ops.templates`` rewrites them).
"""

from __future__ import annotations

import json
import secrets
import sys
import textwrap
from pathlib import Path
from typing import Any

from xswarm.config import SCHEMA, Key

ENV_KEYS = (
    (
        "XSWARM_SUPERVISOR_TOKEN",
        "Operators' token: the supervisor's API (/ws, /api) and the TUI present it. "
        "`xswarm install` generates it in a new .env. Or name a file holding it with "
        "XSWARM_SUPERVISOR_TOKEN_FILE. Make it long and random: "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
    ),
    (
        "XSWARM_CONTROL_TOKEN",
        "Bridges' token: the supervisor presents it on each voice instance's /control; the "
        "bridges never hold the operators' token. `xswarm install` generates it in a new "
        ".env. Or name a file holding it with XSWARM_CONTROL_TOKEN_FILE.",
    ),
    (
        "TWILIO_AUTH_TOKEN",
        "Twilio account auth token; when set, every /twilio upgrade must carry a valid "
        "X-Twilio-Signature.",
    ),
)
# The tokens `xswarm install` generates into a new .env (and `xswarm doctor` requires).
GENERATED_TOKENS = ("XSWARM_SUPERVISOR_TOKEN", "XSWARM_CONTROL_TOKEN")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _describe(spec: Key) -> str:
    parts = [spec.help] if spec.help else []
    if spec.choices:
        parts.append("one of " + ", ".join(spec.choices))
    elif spec.min is not None and spec.max is not None:
        parts.append(f"{_number(spec.min)} to {_number(spec.max)}")
    if not spec.live:
        parts.append("restart to change")
    return "; ".join(parts)


def config_example(extra: str = "") -> str:
    """Every key, commented out at its default: uncomment a line to change it."""
    out = [
        "# xswarm configuration. Every key is listed at its default, commented out: uncomment",
        "# a line to change it. Secrets do not belong here: they go in /opt/xswarm/.env.",
        "# `systemctl reload xswarm-voice` applies live keys; the others need a restart.",
    ]
    for section, keys in SCHEMA.items():
        out += ["", f"# [{section}]"]
        for name, spec in keys.items():
            note = _describe(spec)
            if note:
                out += [f"# {line}" for line in textwrap.wrap(note, 96)]
            out.append(f"# {name} = {_toml_value(spec.default)}")
        if section == "voice.bridge":
            out += [
                "",
                "# Per-instance overrides for xswarm-voice@N (host, port, max_concurrent_calls,",
                '# and device, e.g. "cuda:0": that instance\'s [voice.moshi] device, one per GPU):',
                "# [voice.bridge.instances.1]",
                "# port = 10001",
            ]
    text = "\n".join(out) + "\n"
    if extra:
        text += "\n" + extra
    return text


def env_example(values: dict[str, str] | None = None) -> str:
    """The .env template; with ``values``, those keys are set (uncommented) to them."""
    values = values or {}
    out = [
        "# xswarm secrets, read by systemd (EnvironmentFile=) for both services, as root.",
        "# Keep this file owned by root, mode 600: the services never read it themselves.",
    ]
    for name, why in ENV_KEYS:
        line = f"{name}={values[name]}" if name in values else f"# {name}="
        out += ["", *(f"# {line}" for line in textwrap.wrap(why, 92)), line]
    return "\n".join(out) + "\n"


def new_env_file() -> str:
    """A fresh .env with strong, separate operator and bridge tokens."""
    return env_example({name: secrets.token_urlsafe(32) for name in GENERATED_TOKENS})


def write_examples(deploy: Path) -> None:
    (deploy / "config.example.toml").write_text(config_example())
    (deploy / "env.example").write_text(env_example())


if __name__ == "__main__":
    write_examples(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("deploy"))
