"""`xswarm reloadctl` against the real voice bridge: waits for the outcome, fails on refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tests.support.bridge import running_bridge
from xswarm.commands.reloadctl import command as reloadctl_command
from xswarm.ops import reloadctl

XSWARM = str(Path(sys.executable).parent / "xswarm")


def run_reloadctl(pid: int, runtime: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XSWARM_RUNTIME_DIR": str(runtime)}
    env.pop("RUNTIME_DIRECTORY", None)
    return subprocess.run(
        [XSWARM, "reloadctl", str(pid), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_reload_waits_for_the_bridge_and_reports_a_refusal(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    with running_bridge(
        tmp_path, '[voice.bridge]\nengine = "echo"\n', env={"XSWARM_RUNTIME_DIR": str(runtime)}
    ) as bridge:
        pid = bridge.proc.pid
        first = run_reloadctl(pid, runtime)
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("reloaded")
        state = reloadctl.read_state(runtime / "reload.json")
        assert state is not None and state.generation == 1 and state.ok and state.pid == pid

        good = bridge.config_path.read_text()
        bridge.config_path.write_text(good + '\n[logging]\nlevel = "loud"\n')
        refused = run_reloadctl(pid, runtime)
        assert refused.returncode == 1
        assert "reload refused, old config kept" in refused.stderr
        assert "[logging] level" in refused.stderr
        assert bridge.get("/readyz")[0] == 200

        bridge.config_path.write_text(good)
        again = run_reloadctl(pid, runtime)
        assert again.returncode == 0, again.stderr
        state = reloadctl.read_state(runtime / "reload.json")
        assert state is not None and state.generation == 3


def test_parse_state_rejects_torn_or_foreign_records() -> None:
    assert reloadctl.parse_state('{"generation": 2, "ok": true, "message": "m", "pid": 7}') == (
        reloadctl.ReloadState(2, True, "m", 7)
    )
    for text in (
        "",
        "{",
        "[]",
        '{"generation": "2", "ok": true}',
        '{"generation": 1}',
        '{"generation": true, "ok": true}',
        '{"generation": 1, "ok": "yes"}',
    ):
        assert reloadctl.parse_state(text) is None, text


def test_refuses_without_a_pid_or_runtime_dir(tmp_path: Path) -> None:
    runner = CliRunner()
    no_pid = runner.invoke(reloadctl_command, [], env={"MAINPID": ""})
    assert no_pid.exit_code == 1 and "no PID given" in no_pid.output
    init = runner.invoke(reloadctl_command, ["1"])
    assert init.exit_code == 1 and "refusing to signal PID 1" in init.output
    no_dir = runner.invoke(
        reloadctl_command,
        [str(os.getpid())],
        env={"RUNTIME_DIRECTORY": "", "XSWARM_RUNTIME_DIR": ""},
    )
    assert no_dir.exit_code == 1 and "RUNTIME_DIRECTORY" in no_dir.output


def test_a_process_that_never_reports_times_out(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGHUP, "
            "lambda *a: None); print('ok', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sleeper.stdout is not None and sleeper.stdout.readline().strip() == "ok"
        done = run_reloadctl(sleeper.pid, tmp_path, "--timeout", "0.5")
        assert done.returncode == 1
        assert f"PID {sleeper.pid} did not report on its reload within 0.5 s" in done.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
        sleeper.stdout.close()


def test_a_vanished_process_is_an_error(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    done = run_reloadctl(gone.pid, tmp_path)
    assert done.returncode == 1 and "no process" in done.stderr
