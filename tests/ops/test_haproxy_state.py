"""A drained server stays drained across an HAProxy reload: the server-state file.

A real HAProxy in master-worker mode (as Debian's haproxy.service runs it, reloaded with
SIGUSR2 as its ExecReload does) in front of two real bridges (echo engine) on loopback; the
state is saved with the real ``xswarm haproxy save-state`` through the admin socket.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner, Result

from tests.support import haproxy as staged_haproxy
from tests.support.bridge import VENV_BIN, BridgeProcess, free_port, start_bridge
from tests.support.waiting import eventually_sync
from xswarm import config as config_module
from xswarm.commands import drain, undrain
from xswarm.commands import haproxy as haproxy_command
from xswarm.errors import XswarmError
from xswarm.ops import haproxy, haproxy_state, install, rolling, units
from xswarm.ops.files import UntrustedPathError
from xswarm.ops.layout import OPT, Layout

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
DEBIAN_UNIT = Path(haproxy_state.DEBIAN_UNIT)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "haproxy"


@pytest.fixture(scope="module")
def bridges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BridgeProcess]]:
    """Two bridges standing in for two hosts behind the front door."""
    folder = tmp_path_factory.mktemp("bridges")
    started: list[BridgeProcess] = []
    try:
        for n in (1, 2):
            started.append(start_bridge(folder, '[voice.bridge]\nengine = "echo"\n', name=f"h{n}"))
        yield started
    finally:
        for bridge in started:
            bridge.stop()


@dataclass
class FrontDoor:
    """HAProxy as haproxy.service runs it (-W), its config and admin socket in a staging root."""

    proc: subprocess.Popen[bytes]
    root: Path
    config: Path
    port: int
    log: Path
    exec_output: str = ""

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def ask(self, line: str) -> str:
        return haproxy.send(haproxy.admin_socket(self.layout), line)

    def worker(self) -> str:
        """The pid of the worker answering the admin socket (a reload starts a new one)."""
        for line in self.ask("show info\n").splitlines():
            if line.startswith("Pid:"):
                return line.split()[1]
        raise AssertionError("no Pid in show info")

    def stats(self) -> dict[str, dict[str, str]]:
        """{server: its `show stat` row} for the voice backend."""
        rows = csv.DictReader(self.ask("show stat\n").lstrip("# ").splitlines())
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == haproxy.BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def states(self) -> dict[str, haproxy_state.ServerState]:
        dump = haproxy_state.parse(self.ask("show servers state\n"))
        return {state.server: state for state in dump.servers}

    def reload(self) -> None:
        """What ExecReload's `kill -USR2 $MAINPID` does; returns once the new worker answers."""
        old = self.worker()
        self.proc.send_signal(signal.SIGUSR2)
        self._wait_for_new_worker(old)

    def reload_as_systemd(self) -> None:
        """``systemctl reload haproxy``: the drop-in's ExecReload= lines, the config check, the
        dump, the signal; returns once the new worker answers."""
        lines = dropin_lines("ExecReload")
        assert lines[0] == "", "the drop-in must reset Debian's ExecReload= first"
        old = self.worker()
        self._run_as_systemd(lines[1:])
        self._wait_for_new_worker(old)

    def _wait_for_new_worker(self, old: str) -> None:
        """Until the new worker answers and the old one has exited: for a moment after a reload
        both accept on the admin socket, and the old one still holds the states it had."""
        eventually_sync(self._worker_or_none, lambda pid: pid not in (None, old), within=20,
                        detail=self.log.read_text)  # fmt: skip
        eventually_sync(lambda: process_gone(int(old)), within=20, detail=self.log.read_text)

    def stop_as_systemd(self) -> None:
        """The drop-in's ExecStop= lines, which systemd runs even when HAProxy's processes
        died on their own or were killed (systemd.service(5))."""
        self._run_as_systemd(dropin_lines("ExecStop"))

    def _run_as_systemd(self, lines: list[str]) -> None:
        """Run unit command lines as systemd would, with this test's paths and executables: a
        line's failure fails the test unless it starts with "-"."""
        for line in lines:
            text = line.replace("${CONFIG}", str(self.config)).replace("$CONFIG", str(self.config))
            text = text.replace("$EXTRAOPTS", "").replace("$MAINPID", str(self.proc.pid))
            text = text.replace(f"{OPT}/current/venv/bin/", f"{VENV_BIN}/")
            argv = shlex.split(text.removeprefix("-"))
            if argv[1:3] == ["haproxy", "save-state"]:
                argv += ["--root", str(self.root)]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            assert done.returncode == 0 or text.startswith("-"), done.stderr
            self.exec_output += done.stdout + done.stderr

    def crash(self) -> None:
        """Every HAProxy process killed at once (kill -9): no ExecStop ran, no dump; the admin
        socket's file stays behind."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def start(self) -> None:
        """A new HAProxy from the same config, as a boot or systemd's Restart= starts it."""
        self.proc = start_haproxy(self.config, self.log)
        eventually_sync(self._worker_or_none, within=10, detail=self.log.read_text)

    def power_loss(self) -> None:
        """Killed, then started again at the boot, with no stop and no dump in between."""
        self.crash()
        self.start()

    def _worker_or_none(self) -> str | None:
        try:
            return self.worker()
        except OSError:
            return None

    def requests(self, count: int) -> None:
        for _ in range(count):
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200

    def drain(self, backend: str) -> Result:
        """``xswarm drain --backend`` against this front door, as an operator runs it."""
        args = ["--root", str(self.root), "--backend", backend, "--timeout", "10"]
        return CliRunner().invoke(drain.command, args)

    def undrain(self, backend: str) -> Result:
        return CliRunner().invoke(undrain.command, ["--root", str(self.root), "--backend", backend])

    def summaries(self) -> dict[str, str]:
        """{server: drain/maint/up/down} as the running HAProxy says."""
        return {name: state.summary for name, state in self.states().items()}

    def save_state(self) -> Result:
        args = ["save-state", "--root", str(self.root), "--haproxy-config", str(self.config)]
        return CliRunner().invoke(haproxy_command.command, args)


def dropin_lines(setting: str) -> list[str]:
    """``setting``'s lines in the haproxy.service drop-in xswarm installs."""
    return units.parse((DEPLOY / "server-state.conf").read_text())["Service"][setting]


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie its parent has not reaped yet counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def entry(bridge: BridgeProcess) -> str:
    return f"127.0.0.1:{bridge.port}"


def start_haproxy(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """HAProxy in master-worker mode, in a process group of its own (a power loss kills it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            ["haproxy", "-W", "-db", "-f", str(config)], stdout=out, stderr=out,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


@contextlib.contextmanager
def front_door(tmp_path: Path, bridges: list[BridgeProcess]) -> Iterator[FrontDoor]:
    port = free_port()
    config = config_module.from_mapping(
        {"voice.bridge": {"port": port}, "haproxy": {"backends": [entry(b) for b in bridges]}}
    )
    root = tmp_path / "front"
    layout = Layout(root)
    # notice: the test reads HAProxy's word on the states it loaded.
    cfg = staged_haproxy.install_config(units.render_haproxy(config, []), layout, "notice")
    log = tmp_path / "haproxy.log"
    door = FrontDoor(start_haproxy(cfg, log), root, cfg, port, log)
    try:
        eventually_sync(door._worker_or_none, within=10, detail=log.read_text)
        eventually_sync(
            lambda: [row["status"] for row in door.stats().values()],
            lambda statuses: statuses == ["UP"] * len(bridges),
            within=30,
            detail=log.read_text,
        )
        yield door
    finally:
        door.proc.terminate()
        try:
            door.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(door.proc.pid, signal.SIGKILL)
            door.proc.wait(5)


def test_a_drained_server_stays_drained_across_a_reload_and_a_ready_one_ready(
    tmp_path: Path, bridges: list[BridgeProcess]
) -> None:
    one, two = (entry(b) for b in bridges)
    with front_door(tmp_path, bridges) as door:
        drained = door.drain(one)
        assert drained.exit_code == 0, drained.output

        # systemctl reload haproxy: the drop-in's ExecReload= lines.
        door.reload_as_systemd()
        assert f"{one} drain, {two} up" in door.exec_output
        path = haproxy_state.state_file(door.layout)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert door.states()[one].summary == "drain"
        assert door.stats()[one]["status"] == "DRAIN"
        assert "remains in forced drain mode" in door.log.read_text()
        # The new workers send it nothing: every request goes to the other server.
        door.requests(6)
        counts = {name: int(row["stot"]) for name, row in door.stats().items()}
        assert counts == {one: 0, two: 6}

        # Back to ready, saved, reloaded: it stays ready and takes requests again.
        back = door.undrain(one)
        assert back.exit_code == 0, back.output
        saved = door.save_state()
        assert f"{one} up, {two} up" in saved.output, saved.output
        door.reload()
        assert door.states()[one].summary == "up"
        assert door.stats()[one]["status"] == "UP"
        door.requests(6)
        assert int(door.stats()[one]["stot"]) > 0


def saved_states(layout: Layout) -> dict[str, str]:
    """{server: drain/maint/up/down} as the state file says."""
    dump = haproxy_state.parse(haproxy_state.state_file(layout).read_text())
    return {state.server: state.summary for state in dump.servers}


def test_the_operators_last_drain_or_undrain_survives_a_power_loss(
    tmp_path: Path, bridges: list[BridgeProcess]
) -> None:
    """No stop and no dump before the next start: HAProxy loads what drain/undrain saved."""
    one, two = (entry(b) for b in bridges)
    with front_door(tmp_path, bridges) as door:
        drained = door.drain(one)
        assert drained.exit_code == 0, drained.output
        assert drained.stderr == ""
        assert saved_states(door.layout) == {one: "drain", two: "up"}
        # The reload saves it drained too; the undrain after it must not leave that file.
        door.reload_as_systemd()
        assert saved_states(door.layout) == {one: "drain", two: "up"}
        back = door.undrain(one)
        assert back.exit_code == 0, back.output
        assert back.stderr == ""
        assert saved_states(door.layout) == {one: "up", two: "up"}

        door.power_loss()
        assert door.summaries() == {one: "up", two: "up"}

        # The reverse: drained for an upgrade of its host, it stays drained after a power loss.
        drained = door.drain(one)
        assert drained.exit_code == 0, drained.output
        assert saved_states(door.layout) == {one: "drain", two: "up"}
        door.power_loss()
        assert door.summaries() == {one: "drain", two: "up"}
        eventually_sync(lambda: door.stats()[one]["status"], lambda s: s == "DRAIN",
                        within=20, detail=door.log.read_text)  # fmt: skip
        eventually_sync(lambda: door.stats()[two]["status"], lambda s: s == "UP",
                        within=20, detail=door.log.read_text)  # fmt: skip
        door.requests(4)
        assert {name: int(row["stot"]) for name, row in door.stats().items()} == {one: 0, two: 4}


def test_a_drain_survives_a_crash_of_haproxy_and_its_restart_by_systemd(
    tmp_path: Path, bridges: list[BridgeProcess]
) -> None:
    """kill -9: systemd runs ExecStop= against the dead socket, then Restart=always starts
    HAProxy again. The dump fails; the file drain saved must still be there for that start."""
    one, two = (entry(b) for b in bridges)
    with front_door(tmp_path, bridges) as door:
        drained = door.drain(one)
        assert drained.exit_code == 0, drained.output
        assert saved_states(door.layout) == {one: "drain", two: "up"}
        path = haproxy_state.state_file(door.layout)
        saved = path.read_text()

        door.crash()
        door.stop_as_systemd()
        assert door.exec_output.count("\n") == 1, door.exec_output
        assert "connection refused, so HAProxy is not running" in door.exec_output
        assert (
            f"HAProxy is dead or hung, so kept {path} as xswarm last saved it, for the next "
            f"start: {one} drain, {two} up; a state set by hand" in door.exec_output
        )
        assert path.read_text() == saved

        door.start()
        assert door.summaries() == {one: "drain", two: "up"}
        eventually_sync(lambda: door.stats()[two]["status"], lambda s: s == "UP",
                        within=20, detail=door.log.read_text)  # fmt: skip
        assert door.stats()[one]["status"] == "DRAIN"
        door.requests(4)
        assert {name: int(row["stot"]) for name, row in door.stats().items()} == {one: 0, two: 4}


def test_a_drain_whose_save_fails_still_holds_and_warns_in_one_line(
    tmp_path: Path, bridges: list[BridgeProcess]
) -> None:
    """The state file's directory is a regular file: no user, root included, can write it."""
    one, two = (entry(b) for b in bridges)
    with front_door(tmp_path, bridges) as door:
        path = haproxy_state.state_file(door.layout)
        path.parent.parent.mkdir(parents=True)
        path.parent.write_text("not a directory\n")
        drained = door.drain(one)
        assert drained.exit_code == 0, drained.output
        assert f"{one}: no calls left" in drained.stdout
        assert drained.stderr == (
            f"warning: {one} is drained in HAProxy now, but not saved for a start after a "
            f"power loss: could not write {path} ({path.parent}: File exists); there is no "
            f"file, so such a start puts every server as {door.config} says; fix that, then "
            "`sudo xswarm haproxy save-state` saves what HAProxy holds now\n"
        )
        assert door.states()[one].summary == "drain"

        back = door.undrain(one)
        assert back.exit_code == 0, back.output
        assert back.stderr.startswith(f"warning: {one} is back in rotation in HAProxy now, but")
        assert back.stderr.count("\n") == 1
        assert door.summaries() == {one: "up", two: "up"}


def test_a_drain_whose_save_is_refused_removes_the_file_it_would_contradict(
    tmp_path: Path, bridges: list[BridgeProcess]
) -> None:
    """The file says drained (the last reload's); the undrain cannot save (a directory others
    could write, refused for root as for anyone): the old file must go, or a start after a
    power loss would bring the server back drained."""
    one, two = (entry(b) for b in bridges)
    with front_door(tmp_path, bridges) as door:
        drained = door.drain(one)
        assert drained.exit_code == 0, drained.output
        path = haproxy_state.state_file(door.layout)
        assert saved_states(door.layout) == {one: "drain", two: "up"}
        path.parent.chmod(0o777)
        back = door.undrain(one)
        assert back.exit_code == 0, back.output
        assert "writable by group or others" in back.stderr
        assert "; removed the previous file, so such a start puts every server as" in back.stderr
        assert not path.exists()
        path.parent.chmod(0o755)
        door.power_loss()
        assert door.summaries() == {one: "up", two: "up"}


def test_a_rolling_restart_saves_the_ready_that_ends_its_drain(tmp_path: Path) -> None:
    """A reload while an instance restarts saves it drained; its return to ready is saved
    too, so a start after a power loss does not leave a local instance drained."""
    layout = Layout(tmp_path / "front")
    config = config_module.from_mapping({"voice.bridge": {"port": free_port()}})
    cfg = staged_haproxy.install_config(units.render_haproxy(config, [1, 2]), layout)
    log = tmp_path / "haproxy.log"
    proc = start_haproxy(cfg, log)
    try:
        eventually_sync(
            lambda: staged_haproxy.answers(haproxy.admin_socket(layout)),
            within=10,
            detail=log.read_text,
        )
        assert haproxy.set_state(layout, "xswarm-voice@2.service", "drain") is None
        haproxy_state.save(layout, cfg)
        assert saved_states(layout)["voice2"] == "drain"
        said: list[str] = []
        rolling._back_in_rotation(layout, "xswarm-voice@2.service", said.append)
        assert said == []
        assert saved_states(layout)["voice2"] not in ("drain", "maint")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_a_dead_server_is_not_retried_as_healthy_after_a_reload(
    tmp_path: Path, bridges: list[BridgeProcess]
) -> None:
    """Up/down carries over too: a new worker does not send the first calls to a server its
    predecessor knew was down (a fresh one starts it up until checks fail)."""
    standin = start_bridge(tmp_path, '[voice.bridge]\nengine = "echo"\n', name="dying")
    try:
        with front_door(tmp_path, [bridges[0], standin]) as door:
            dead = entry(standin)
            standin.stop()
            eventually_sync(lambda: door.stats()[dead]["status"], lambda s: s == "DOWN",
                            within=20, detail=door.log.read_text)  # fmt: skip
            saved = door.save_state()
            assert f"{dead} down" in saved.output, saved.output
            door.reload()
            assert door.states()[dead].op_state == 0
            assert door.stats()[dead]["status"].startswith("DOWN")
            door.requests(4)
            assert int(door.stats()[dead]["stot"]) == 0
    finally:
        standin.stop()


@pytest.mark.parametrize(
    "content",
    [None, "garbage\n", "1\n# be_id be_name\n3 xswarm_voice_instances 1 torn", ""],
    ids=["missing", "no-version", "corrupt-line", "empty"],
)
def test_without_a_usable_state_file_every_server_starts_from_the_config(
    tmp_path: Path, bridges: list[BridgeProcess], content: str | None
) -> None:
    one = entry(bridges[0])
    with front_door(tmp_path, bridges) as door:
        assert haproxy_state.set_backend_state(door.layout, one, "drain", pytest.fail) == one
        path = haproxy_state.state_file(door.layout)
        if content is None:
            path.unlink()
        else:
            path.write_text(content)
        door.reload()
        assert door.proc.poll() is None, door.log.read_text()
        assert door.summaries() == {
            one: "up",
            entry(bridges[1]): "up",
        }


@contextlib.contextmanager
def dead_haproxy(path: Path, how: str) -> Iterator[None]:
    """The admin socket as a dead or hung HAProxy leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        if how != "no-socket":
            sock.bind(str(path))
        if how == "hung":
            sock.listen(1)  # connects, and nobody ever answers
        elif how == "killed":
            sock.close()  # the file stays, as after kill -9: connection refused
        yield


@contextlib.contextmanager
def answering(path: Path, answer: str) -> Iterator[None]:
    """Something on the admin socket that answers, but not with a state dump."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)

        def reply() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(answer.encode())

        thread = threading.Thread(target=reply, daemon=True)
        thread.start()
        yield
        thread.join(10)


def state_file_and_config(tmp_path: Path) -> tuple[Layout, Path, Path, list[str]]:
    """A state file as xswarm saved it (voice1 up, voice2 drained, a backend down), and a
    haproxy.cfg that no longer has that backend; the args of save-state for them."""
    layout = Layout(tmp_path)
    path = haproxy_state.state_file(layout)
    path.parent.mkdir(parents=True)
    path.write_text(DUMP)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "backend xswarm_voice_instances\n"
        "    server voice1 127.0.0.1:10001 check\n"
        "    server voice2 127.0.0.1:10002 check\n"
    )
    args = ["save-state", "--root", str(tmp_path), "--haproxy-config", str(cfg)]
    return layout, path, cfg, args


# How the save names each way a dead or hung HAProxy leaves its socket.
DEAD_SAYS = {
    "no-socket": "no HAProxy admin socket at",
    "killed": "HAProxy admin socket {}: connection refused, so HAProxy is not running",
    "hung": "HAProxy admin socket {}: no answer within 2 s, so HAProxy is hung or overloaded",
}


@pytest.mark.parametrize("how", ["no-socket", "killed", "hung"])
def test_a_dead_haproxy_keeps_the_file_xswarm_saved_and_says_so(tmp_path: Path, how: str) -> None:
    """ExecStop= after a crash: HAProxy's states are gone with it, and the file holds the
    last ones xswarm set; removing it would put every drained server back in rotation. It is
    still checked against the config about to be loaded: the backend gone from it goes."""
    layout, path, cfg, args = state_file_and_config(tmp_path)
    with dead_haproxy(haproxy.admin_socket(layout), how):
        result = CliRunner().invoke(haproxy_command.command, args)
    assert isinstance(result.exception, haproxy.HaproxyError), result.output
    message = str(result.exception)
    said = DEAD_SAYS[how].format(haproxy.admin_socket(layout))
    assert message.startswith(f"server states not saved ({said}")
    assert "\n" not in message
    assert (
        f"; HAProxy is dead or hung, so kept {path} as xswarm last saved it, for the next "
        "start: voice1 up, voice2 drain; left out (moved or gone in haproxy.cfg, they start "
        "from it): xswarm_voice_instances/10.0.0.2:9998; a state set by hand on the admin "
        "socket since then is not in it, set it again once HAProxy runs"
    ) in message
    assert saved_states(layout) == {"voice1": "up", "voice2": "drain"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

    # A file that is not one xswarm wrote is not vouched for: it goes.
    path.write_text("garbage\n")
    with dead_haproxy(haproxy.admin_socket(layout), how):
        result = CliRunner().invoke(haproxy_command.command, args)
    message = str(result.exception)
    assert f"{path} is not a state file xswarm wrote" in message
    assert f"removed the previous {path}" in message
    assert "drain again" in message
    assert not path.exists()
    with dead_haproxy(haproxy.admin_socket(layout), how):
        again = CliRunner().invoke(haproxy_command.command, args)
    assert "HAProxy is dead or hung, so no state file: HAProxy starts every server as" in str(
        again.exception
    )


def test_an_answer_that_is_not_a_dump_removes_the_old_file_and_says_so(tmp_path: Path) -> None:
    """Something answers on the socket, but we cannot read its states: we cannot tell
    whether the file describes it, and the next save gets the same answer."""
    layout, path, cfg, args = state_file_and_config(tmp_path)
    with answering(haproxy.admin_socket(layout), "Unknown command.\n"):
        result = CliRunner().invoke(haproxy_command.command, args)
    assert isinstance(result.exception, haproxy.HaproxyError), result.output
    message = str(result.exception)
    assert message.startswith("server states not saved (HAProxy answered 'show servers state'")
    assert "not a version 1 state dump" in message
    assert f"removed the previous {path}" in message
    assert "every server as" in message and "drain again" in message
    assert not path.exists()
    with answering(haproxy.admin_socket(layout), "Unknown command.\n"):
        again = CliRunner().invoke(haproxy_command.command, args)
    assert "; no state file:" in str(again.exception)


def test_a_state_directory_others_can_write_is_refused(
    tmp_path: Path, bridges: list[BridgeProcess]
) -> None:
    with front_door(tmp_path, bridges) as door:
        folder = haproxy_state.state_file(door.layout).parent
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        with pytest.raises(UntrustedPathError, match="writable by group or others"):
            haproxy_state.save(door.layout, door.config)
        saved = door.save_state()
        assert isinstance(saved.exception, XswarmError)
        assert "writable by group or others" in str(saved.exception)
        assert not haproxy_state.state_file(door.layout).exists()


# A dump as HAProxy 2.6 writes it: voice1 up, voice2 drained, a backend down.
DUMP = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 xswarm_voice_instances 1 voice1 127.0.0.1 2 0 1 1 7 15 3 4 6 0 0 0 - 10001 - 0 0 - - 0
3 xswarm_voice_instances 2 voice2 127.0.0.1 2 8 1 1 9 15 3 4 6 0 0 0 - 10002 - 0 0 - - 0
3 xswarm_voice_instances 3 10.0.0.2:9998 10.0.0.2 0 0 1 1 2 8 2 0 6 0 0 0 - 9998 - 0 0 - - 0
"""  # noqa: E501


def test_a_server_moved_or_gone_in_the_new_config_is_left_out() -> None:
    """HAProxy would restore the recorded port; a server whose port changed is another
    endpoint and starts from the config."""
    dump = haproxy_state.parse(DUMP)
    assert [(s.server, s.summary) for s in dump.servers] == [
        ("voice1", "up"),
        ("voice2", "drain"),
        ("10.0.0.2:9998", "down"),
    ]
    config = units.render_haproxy(
        config_module.from_mapping(
            {
                "voice.bridge.instances.2": {"port": 12002},
                "haproxy": {"backends": ["[fd00::3]:9998"]},
            }
        ),
        [1, 2],
    )
    ports = haproxy_state.configured_ports(config)
    assert ports == {"voice1": 10001, "voice2": 12002, "fd00::3:9998": 9998}
    kept, left = haproxy_state.carried(dump, ports)
    assert [s.server for s in kept] == ["voice1"]
    assert left == ["xswarm_voice_instances/voice2", "xswarm_voice_instances/10.0.0.2:9998"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Unknown command.\n", "not a version 1 state dump"),
        ("2\n# be_id be_name\n", "not a version 1 state dump"),
        ("1\n# be_id be_name srv_id srv_name\n", "no srv_op_state, srv_admin_state, srv_port"),
        (DUMP.replace(" - - 0\n3 xswarm", "\n3 xswarm", 1), "torn line"),
        (DUMP.replace(" 2 8 1 1", " 2 x 1 1"), "bad number"),
    ],
)
def test_an_unexpected_answer_is_refused_by_name(text: str, words: str) -> None:
    with pytest.raises(haproxy.HaproxyError, match=words):
        haproxy_state.parse(text)


def test_the_drop_in_repeats_debians_reload_lines_around_the_dump() -> None:
    """The drop-in empties ExecReload= and lists it again: it must keep Debian's own lines,
    in order, with the dump between the config check and the signal."""
    if not DEBIAN_UNIT.exists():
        pytest.skip(f"{DEBIAN_UNIT} is not here (Debian's haproxy package)")
    debian = units.parse(DEBIAN_UNIT.read_text())["Service"]["ExecReload"]
    ours = units.parse((DEPLOY / "server-state.conf").read_text())["Service"]
    dump = "-/opt/xswarm/current/venv/bin/xswarm haproxy save-state --haproxy-config ${CONFIG}"
    assert ours["ExecReload"] == ["", debian[0], dump, *debian[1:]]
    assert debian[-1] == "/bin/kill -USR2 $MAINPID"
    assert ours["ExecStop"] == [dump]
    assert install.HAPROXY_DROPINS["server-state.conf"] == haproxy_state.DROPIN
