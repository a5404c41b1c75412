"""install, doctor, backup, rollback and releases on a real staging root (``--root``).

A real wheel of this checkout is installed into a real venv under a scratch root; no systemd
is needed (that part is proven under nspawn in tests/systemd). systemctl only applies to the
live root. Run as root, install gives the staging tree its real owners, with ``nobody`` as the
service account (``--service-user``: no test creates users on the machine); run as anyone
else, the files keep the test's own user.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from xswarm import config as config_module
from xswarm.commands import backup, doctor, install, rollback, upgrade
from xswarm.ops import releases
from xswarm.ops.install import Report, write_scrape_targets
from xswarm.ops.layout import Layout

SERVICE = "nobody"
STAGING = ["--service-user", SERVICE]


@pytest.fixture(scope="module")
def installed(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    root = tmp_path_factory.mktemp("root")
    (root / "etc" / "prometheus").mkdir(parents=True)  # Prometheus runs on this host
    result = CliRunner().invoke(
        install.command,
        [
            "--root",
            str(root),
            "--wheelhouse",
            str(wheelhouse),
            "--instances",
            "2",
            "--gpu",
            *STAGING,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "xswarm 0.1.0 installed." in result.output
    return Layout(root, SERVICE)


def test_install_builds_the_release_at_its_final_path(installed: Layout) -> None:
    venv = installed.release_dir("0.1.0") / "venv"
    script = venv / "bin" / "xswarm-voice"
    assert script.read_text().splitlines()[0] == f"#!{venv}/bin/python"
    assert os.readlink(installed.current) == "releases/0.1.0"
    assert releases.installed(installed) == ["0.1.0"]
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import xswarm.ops.units as u; print(u.deploy_dir())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.endswith("xswarm/_deploy"), "the wheel must carry its unit templates"
    assert (installed.release_dir("0.1.0") / "units" / "xswarm-voice.service").exists()
    assert (installed.unit_dir / "xswarm-voice@.service.d" / "gpu.conf").exists()
    assert (installed.unit_dir / "xswarm-voice@2.socket.d" / "listen.conf").exists()
    assert "server voice2 127.0.0.1:10002 check" in installed.haproxy_config.read_text()


def test_install_writes_this_hosts_prometheus_targets(installed: Layout) -> None:
    host = socket.gethostname().split(".")[0]
    voice = installed.prometheus_targets / f"voice-{host}.json"
    groups = json.loads(voice.read_text())
    assert [group["targets"] for group in groups] == [["127.0.0.1:10001"], ["127.0.0.1:10002"]]
    assert all(group["labels"]["host"] == host for group in groups)
    assert stat.S_IMODE(voice.stat().st_mode) == 0o644
    dashboard = json.loads((installed.prometheus_targets / f"dashboard-{host}.json").read_text())
    assert dashboard[0]["targets"] == ["127.0.0.1:9999"]


def test_without_prometheus_here_install_says_where_the_targets_go(tmp_path: Path) -> None:
    report = Report()
    write_scrape_targets(Layout(tmp_path), config_module.defaults(), [], report)
    (line,) = report.unchanged
    assert "Prometheus is not on this host" in line and "xswarm targets" in line
    assert not (tmp_path / "etc").exists()


def test_config_and_env_come_from_templates_with_safe_modes(installed: Layout) -> None:
    assert stat.S_IMODE(installed.env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(installed.config.stat().st_mode) == 0o640
    text = installed.config.read_text()
    assert "# max_concurrent_calls = 300" in text
    assert 'instances = ["ws://127.0.0.1:10001/control", "ws://127.0.0.1:10002/control"]' in text


def test_install_twice_changes_nothing(installed: Layout, wheelhouse: Path) -> None:
    installed.config.write_text(installed.config.read_text() + "\n# operator's edit\n")
    before = {p: p.stat().st_mtime_ns for p in installed.unit_dir.rglob("*") if p.is_file()}
    result = CliRunner().invoke(
        install.command,
        [
            "--root",
            str(installed.root),
            "--wheelhouse",
            str(wheelhouse),
            "--instances",
            "2",
            "--gpu",
            *STAGING,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "nothing to change" in result.output
    assert "  + " not in result.output
    assert "# operator's edit" in installed.config.read_text()
    after = {p: p.stat().st_mtime_ns for p in installed.unit_dir.rglob("*") if p.is_file()}
    assert before == after


def run_doctor(layout: Layout) -> tuple[int, str]:
    result = CliRunner().invoke(doctor.command, ["--root", str(layout.root), *STAGING])
    return result.exit_code, result.output


def test_doctor_finds_each_broken_thing_and_its_fix(installed: Layout) -> None:
    code, out = run_doctor(installed)
    assert "FAIL  executable" not in out and "FAIL  units" not in out
    if os.geteuid() == 0:
        assert "FAIL  .env" not in out and "FAIL  permissions" not in out, out
        assert "FAIL  tokens" not in out, out
        os.chown(installed.env_file, pwd.getpwnam(SERVICE).pw_uid, 0)
        code, out = run_doctor(installed)
        os.chown(installed.env_file, 0, 0)
        assert code == 1
        assert f"FAIL  .env: {installed.env_file} is owned by {SERVICE}, not root" in out
        assert f"fix: sudo chown root:root {installed.env_file}" in out

    installed.env_file.chmod(0o644)
    assert "has mode 644" in run_doctor(installed)[1]
    installed.env_file.chmod(0o600)

    unit = installed.unit_dir / "xswarm-voice.service"
    original = unit.read_text()
    unit.write_text(original.replace("MemoryMax=16G", "MemoryMax=8G"))
    assert (
        "installed units differ from release 0.1.0's: xswarm-voice.service"
        in (run_doctor(installed)[1])
    )
    unit.write_text(original)

    script = installed.release_dir("0.1.0") / "venv" / "bin" / "xswarm-dashboard"
    script.chmod(0o644)
    assert f"FAIL  executable: {script}" in run_doctor(installed)[1]
    script.chmod(0o755)

    installed.database.parent.mkdir(parents=True, exist_ok=True)
    installed.database.write_bytes(b"this is not SQLite" * 100)
    assert "FAIL  database" in run_doctor(installed)[1]
    installed.database.unlink()

    good = installed.config.read_text()
    installed.config.write_text(good + "\n[voice.bridge.instances.2]\nport = 12002\n")
    out = run_doctor(installed)[1]
    assert (
        "HAProxy sends voice2's calls to 127.0.0.1:10002, but that instance listens on "
        "127.0.0.1:12002" in out
    )
    assert (
        "xswarm-voice@2.socket listens on 127.0.0.1:10002 but config.toml says "
        "127.0.0.1:12002" in out
    )
    installed.config.write_text(good + "\n[voice.bridge.instances.3]\nport = 9999\n")
    out = run_doctor(installed)[1]
    assert "FAIL  config" in out and "supervisor" in out
    installed.config.write_text(good)


def test_doctor_names_the_process_holding_a_port(installed: Layout) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        good = installed.config.read_text()
        installed.config.write_text(
            good.replace("\n[dashboard]\n", f"\n[dashboard]\nport = {port}\n")
        )
        try:
            out = run_doctor(installed)[1]
        finally:
            installed.config.write_text(good)
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert (
        f"port {port}, needed by xswarm-dashboard.service, is in use by PID {os.getpid()} "
        f"({comm})" in out
    ), out


def test_backup_copies_a_live_database_through_the_backup_api(installed: Layout) -> None:
    installed.database.parent.mkdir(parents=True, exist_ok=True)
    live = sqlite3.connect(installed.database)
    live.execute("CREATE TABLE calls (id TEXT)")
    live.executemany("INSERT INTO calls VALUES (?)", [(f"c{i}",) for i in range(500)])
    live.commit()
    try:
        runner = CliRunner()
        for _ in range(3):
            result = runner.invoke(backup.command, ["--root", str(installed.root), "--keep", "2"])
            assert result.exit_code == 0, result.output
    finally:
        live.close()
    folders = sorted(p for p in installed.backup.iterdir() if p.is_dir())
    assert len(folders) == 2, "keeps the last N"
    newest = folders[-1]
    copy = sqlite3.connect(newest / "xswarm.db")
    assert copy.execute("SELECT count(*) FROM calls").fetchone() == (500,)
    copy.close()
    assert stat.S_IMODE((newest / ".env").stat().st_mode) == 0o600
    assert (newest / "release" / "xswarm-0.1.0-py3-none-any.whl").exists()
    frozen = (newest / "release" / "requirements.txt").read_text()
    assert re.search(r"^xswarm( @ file:|==0\.1\.0)", frozen, re.M), frozen
    assert re.search(r"^aiohttp==", frozen, re.M), frozen
    assert (newest / "units" / "xswarm-voice@2.socket.d" / "listen.conf").exists()
    installed.database.unlink()


def test_rollback_refuses_what_is_not_installed(installed: Layout) -> None:
    result = CliRunner().invoke(rollback.command, ["--root", str(installed.root)])
    assert result.exit_code == 1 and "no earlier release" in result.output
    result = CliRunner().invoke(rollback.command, ["9.9", "--root", str(installed.root)])
    assert result.exit_code == 1 and "release 9.9 is not installed" in result.output


def test_upgrade_to_the_same_release_does_nothing(installed: Layout, wheelhouse: Path) -> None:
    result = CliRunner().invoke(
        upgrade.command, ["--root", str(installed.root), "--wheelhouse", str(wheelhouse)]
    )
    assert result.exit_code == 0, result.output
    assert "already current" in result.output


def test_install_refuses_an_empty_wheelhouse(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(
        install.command, ["--root", str(tmp_path / "r"), "--wheelhouse", str(empty)]
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, releases.ReleaseError)
    assert f"{empty} holds no wheel of an xswarm wheel" in str(result.exception)


def test_switch_previous_and_prune_keep_the_two_that_matter(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    for version in ("1.0", "1.1", "1.2", "2.0"):
        home = layout.release_dir(version)
        home.mkdir(parents=True)
        (home / releases.COMPLETE).write_text(version)
    (layout.release_dir("3.0")).mkdir()
    for version in ("1.0", "2.0", "1.1"):
        releases.switch(layout, version)
    assert releases.current(layout) == "1.1"
    assert releases.previous(layout) == "2.0"
    assert releases.installed(layout) == ["1.0", "1.1", "1.2", "2.0"]
    with pytest.raises(releases.ReleaseError, match="release 3.0 is not installed"):
        releases.switch(layout, "3.0")
    assert releases.prune(layout, keep=2) == ["1.0", "1.2"]
    assert releases.installed(layout) == ["1.1", "2.0"]


def test_wheel_names_are_checked(tmp_path: Path) -> None:
    for hostile in (
        "numpy-2.0-cp311-cp311-linux_x86_64.whl",
        "xswarm-1;rm -rf-py3-none-any.whl",
        "xswarm-$(id)-py3-none-any.whl",
        "xswarm--py3-none-any.whl",
    ):
        with pytest.raises(releases.ReleaseError, match="not an xswarm wheel"):
            releases.wheel_version(tmp_path / hostile)
    for name in ("xswarm-0.9.0-py3-none-any.whl", "xswarm-0.10.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    assert releases.find_wheel(tmp_path).name == "xswarm-0.10.0-py3-none-any.whl"
    assert releases.find_wheel(tmp_path, "0.9.0").name == "xswarm-0.9.0-py3-none-any.whl"


def test_a_failed_build_leaves_no_complete_release(tmp_path: Path) -> None:
    wheel = tmp_path / "xswarm-7.0-py3-none-any.whl"
    wheel.write_bytes(b"not a zip")
    layout = Layout(tmp_path / "root")
    with pytest.raises(releases.ReleaseError, match="installing xswarm-7.0"):
        releases.build(layout, wheel, tmp_path, sys.executable)
    assert releases.installed(layout) == []


as_root = pytest.mark.skipif(os.geteuid() != 0, reason="real ownership needs root")


def owner_and_mode(path: Path) -> tuple[str, str, int]:
    st = path.lstat()
    return (
        pwd.getpwuid(st.st_uid).pw_name,
        grp.getgrgid(st.st_gid).gr_name,
        stat.S_IMODE(st.st_mode),
    )


@as_root
def test_install_gives_root_everything_root_relies_on(installed: Layout) -> None:
    group = grp.getgrgid(pwd.getpwnam(SERVICE).pw_gid).gr_name
    expected = {
        installed.opt: ("root", "root", 0o755),
        installed.releases: ("root", "root", 0o755),
        installed.config: ("root", group, 0o640),
        installed.env_file: ("root", "root", 0o600),
        installed.backup: ("root", "root", 0o700),
        installed.state: (SERVICE, group, 0o750),
        installed.dashboard_state: (SERVICE, group, 0o750),
        installed.logs: (SERVICE, group, 0o750),
        installed.history: ("root", "root", 0o644),
    }
    for path, wanted in expected.items():
        assert owner_and_mode(path) == wanted, path
    assert installed.current.is_symlink() and owner_and_mode(installed.current)[0] == "root"
    assert owner_and_mode(installed.release_dir("0.1.0"))[0] == "root"
    for unit in installed.unit_dir.rglob("*"):
        if unit.is_file():
            assert owner_and_mode(unit) == ("root", "root", 0o644), unit
    leftovers = [p for p in installed.opt.rglob(".*.tmp")]
    assert not leftovers, "every staging file was renamed or linked into place"


def test_a_new_env_holds_strong_separate_tokens(installed: Layout) -> None:
    values = dict(
        line.split("=", 1)
        for line in installed.env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    operators, bridges = values["XSWARM_SUPERVISOR_TOKEN"], values["XSWARM_CONTROL_TOKEN"]
    assert len(operators) >= 43 and len(bridges) >= 43 and operators != bridges
    assert "ok    tokens: XSWARM_SUPERVISOR_TOKEN, XSWARM_CONTROL_TOKEN" in run_doctor(installed)[1]
    original = installed.env_file.read_text()
    installed.env_file.write_text(original.replace(f"={bridges}", "=short"))
    try:
        out = run_doctor(installed)[1]
    finally:
        installed.env_file.write_text(original)
    assert "XSWARM_CONTROL_TOKEN in" in out and "is weak: 5 characters" in out


@as_root
def test_doctor_flags_a_group_writable_config_and_a_service_owned_env(installed: Layout) -> None:
    nobody = pwd.getpwnam(SERVICE)
    installed.config.chmod(0o660)
    os.chown(installed.env_file, nobody.pw_uid, nobody.pw_gid)
    try:
        code, out = run_doctor(installed)
    finally:
        installed.config.chmod(0o640)
        os.chown(installed.env_file, 0, 0)
    assert code == 1
    assert (
        f"FAIL  permissions: {installed.config} has mode 660: someone besides root can change it"
        in out
    )
    assert f"fix: sudo chmod 640 {installed.config}" in out
    assert f"FAIL  .env: {installed.env_file} is owned by {SERVICE}, not root" in out


@as_root
def test_backup_and_rollback_refuse_paths_the_service_account_could_have_swapped(
    installed: Layout,
) -> None:
    nobody = pwd.getpwnam(SERVICE)
    runner = CliRunner()
    os.chown(installed.releases, nobody.pw_uid, nobody.pw_gid)
    try:
        result = runner.invoke(backup.command, ["--root", str(installed.root)])
        assert result.exit_code == 1
        assert f"{installed.releases} is owned by uid {nobody.pw_uid}" in result.output
        result = runner.invoke(rollback.command, ["0.1.0", "--root", str(installed.root)])
        assert result.exit_code == 1 and "root will not use" in result.output
    finally:
        os.chown(installed.releases, 0, 0)
    installed.config.chmod(0o666)
    try:
        result = runner.invoke(rollback.command, ["0.1.0", "--root", str(installed.root)])
    finally:
        installed.config.chmod(0o640)
    assert result.exit_code == 1
    assert "writable by group or others (mode 0666)" in result.output


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from xswarm.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )


ATTACK = "[voice.bridge]\nhost = \"0.0.0.0\\nExecStartPre=/bin/sh -c 'id > /tmp/pwned'\"\n"


def test_install_refuses_a_newline_in_a_host_with_exit_78(tmp_path: Path, wheelhouse: Path) -> None:
    layout = Layout(tmp_path / "root")
    layout.opt.mkdir(parents=True)
    layout.config.write_text(ATTACK)
    done = run_cli("install", "--root", str(layout.root), "--wheelhouse", str(wheelhouse))
    assert done.returncode == 78, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line
    assert line.startswith(f"xswarm: {layout.config}: [voice.bridge] host: expected an IP")
    assert not layout.unit_dir.exists(), "nothing rendered from the refused config"


def test_install_refuses_a_planted_symlink_where_it_creates_a_file(
    tmp_path: Path, wheelhouse: Path
) -> None:
    layout = Layout(tmp_path / "root")
    layout.opt.mkdir(parents=True)
    target = tmp_path / "root-owned-elsewhere"
    layout.env_file.symlink_to(target)
    done = run_cli("install", "--root", str(layout.root), "--wheelhouse", str(wheelhouse))
    assert done.returncode == 1
    assert f"{layout.env_file} is a symbolic link; root will not follow it" in done.stderr
    assert not target.exists(), "nothing was written through the link"
    assert layout.env_file.is_symlink()


def test_install_moves_the_call_history_out_of_the_bridges_directory(
    tmp_path: Path, wheelhouse: Path
) -> None:
    layout = Layout(tmp_path / "root")
    layout.state.mkdir(parents=True)
    layout.legacy_database.write_bytes(b"history")
    result = CliRunner().invoke(
        install.command, ["--root", str(layout.root), "--wheelhouse", str(wheelhouse), *STAGING]
    )
    assert result.exit_code == 0, result.output
    assert layout.database.read_bytes() == b"history"
    assert not layout.legacy_database.exists()
