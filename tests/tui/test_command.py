"""``xswarm dashboard`` as an operator types it: options, config, and a run on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.supervisor.support import running_supervisor
from tests.support.bridge import VENV_BIN
from xswarm.errors import ConfigError
from xswarm.tui.endpoint import default_url

TOKEN = "cmd-test-token-77"


def test_default_url_comes_from_the_dashboard_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XSWARM_CONFIG", raising=False)
    config = tmp_path / "config.toml"
    config.write_text('[dashboard]\nhost = "0.0.0.0"\nport = 19999\n')
    assert default_url(str(config)) == "ws://127.0.0.1:19999/ws"
    config.write_text('[dashboard]\nhost = "::1"\nport = 9999\n')
    assert default_url(str(config)) == "ws://[::1]:9999/ws"
    config.write_text('[dashboard]\nport = "high"\n')
    with pytest.raises(ConfigError, match=r"\[dashboard\] port"):
        default_url(str(config))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XSWARM_")}
    return subprocess.run(
        [str(VENV_BIN / "xswarm"), "dashboard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_a_url_that_is_not_a_websocket_is_refused_with_the_fix() -> None:
    result = run_cli("--url", "http://127.0.0.1:9999/ws")
    assert result.returncode == 2
    assert "not a WebSocket URL; expected ws://HOST:PORT/ws" in result.stderr


def test_a_bad_config_is_one_line_and_exit_78(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[dashboard]\nport = 0\n")
    result = run_cli("--config", str(config))
    assert result.returncode == 78
    assert result.stderr.count("\n") == 1 and "[dashboard] port" in result.stderr


def metric(sup_get: object, name: str) -> float:
    status, body = sup_get("/metrics")  # type: ignore[operator]
    assert status == 200
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.parametrize("token_from", ["environment", "file"])
def test_the_command_runs_on_a_terminal_connects_and_quits_on_q(
    tmp_path: Path, token_from: str
) -> None:
    with running_supervisor(tmp_path, [], env={"XSWARM_SUPERVISOR_TOKEN": TOKEN}) as sup:
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("XSWARM_")}
        env |= {
            "TERM": "xterm-256color",
            "COLUMNS": "80",
            "LINES": "24",
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }
        args = ["--url", sup.ws_url]
        if token_from == "environment":
            env["XSWARM_SUPERVISOR_TOKEN"] = TOKEN
        else:
            token_file = tmp_path / "operator.token"
            token_file.write_text(TOKEN + "\n")
            token_file.chmod(0o600)
            args += ["--token-file", str(token_file)]
        proc = subprocess.Popen(
            [str(VENV_BIN / "xswarm"), "dashboard", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        output = bytearray()
        try:
            deadline = time.monotonic() + 60
            # auth_result and then the snapshot: the snapshot needs a successful auth.
            while metric(sup.get, "xswarm_supervisor_messages_sent_total") < 2:
                assert time.monotonic() < deadline, output.decode(errors="replace")[-2000:]
                if select.select([master], [], [], 0.2)[0]:
                    output += os.read(master, 65536)
            assert metric(sup.get, "xswarm_supervisor_auth_failures_total") == 0
            # Pressed again until it exits: a key that arrives while Textual is still talking
            # to the terminal at start-up can be taken as part of the terminal's answer.
            while proc.poll() is None and time.monotonic() < deadline:
                os.write(master, b"q")
                if select.select([master], [], [], 0.5)[0]:
                    try:
                        output += os.read(master, 65536)
                    except OSError:
                        break
            assert proc.wait(10) == 0
            assert b"xswarm dashboard" in output
            saved = json.loads((tmp_path / "config" / "xswarm" / "dashboard.json").read_text())
            assert saved == {"sort_column": None, "sort_reverse": False}
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            os.close(master)


@pytest.mark.parametrize(
    ("args", "expected"), [((), [10]), (("--nice", "3"), [3]), (("--no-nice",), [])]
)
def test_the_dashboard_lowers_its_own_priority_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], expected: list[int]
) -> None:
    from click.testing import CliRunner

    from xswarm.commands import dashboard
    from xswarm.tui.app import XswarmDashboard

    increments: list[int] = []
    monkeypatch.setattr(os, "nice", increments.append)
    monkeypatch.setattr(XswarmDashboard, "run", lambda self: None)
    result = CliRunner().invoke(dashboard.command, ["--url", "ws://127.0.0.1:1/ws", *args])
    assert result.exit_code == 0, result.output
    assert increments == expected


def test_help_says_the_dashboard_runs_niced() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--nice" in result.stdout and "--no-nice" in result.stdout
    assert "lower CPU priority" in " ".join(result.stdout.split())


@pytest.mark.parametrize(("operator_says", "seconds"), [(None, 0.05), ("200", 0.2)])
def test_escape_waits_less_than_textuals_input_poll_unless_the_operator_says(
    operator_says: str | None, seconds: float
) -> None:
    program = (
        "import sys\n"
        "import xswarm.cli\n"
        "assert 'textual' not in sys.modules, 'Textual read ESCDELAY before the command set it'\n"
        "from xswarm.commands import dashboard\n"
        "dashboard.quicker_escape()\n"
        "import textual.constants\n"
        "print(textual.constants.ESCAPE_DELAY)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ESCDELAY"}
    if operator_says is not None:
        env["ESCDELAY"] = operator_says
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", program], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == seconds
