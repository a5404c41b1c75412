"""The front door across hosts: one HAProxy over local instances and bridges on other hosts
(``[haproxy] backends``), plain or TLS to them, and ``xswarm drain``/``undrain`` of one.

The "other hosts" are real bridges (echo engine) on loopback ports; HAProxy is the real
binary, run as the test's own process with its admin socket inside a staging root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from tests.support import haproxy as staged_haproxy
from tests.support.bridge import free_port, start_bridge
from tests.support.calls import TwilioCaller, tone
from tests.support.certs import PrivateCa, make_ca, start_tls_bridge
from tests.support.waiting import eventually, eventually_sync
from xswarm import config as config_module
from xswarm.commands import doctor, drain, install, undrain
from xswarm.errors import ConfigError
from xswarm.ops import haproxy, units
from xswarm.ops.layout import Layout


def haproxy_or_skip() -> str:
    path = shutil.which("haproxy")
    if path is None:
        pytest.skip("haproxy is not installed (`sudo bash deploy/ci/system-deps.sh`)")
    return path


def haproxy_check(text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / "haproxy-check.cfg"
    path.write_text(text)
    return subprocess.run(
        [haproxy_or_skip(), "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )


def with_backends(backends: list[str], ca_file: str = "", **bridge: object) -> config_module.Config:
    return config_module.from_mapping(
        {"voice.bridge": bridge, "haproxy": {"backends": backends, "backend_ca_file": ca_file}}
    )


# -- rendering ------------------------------------------------------------------------------


def test_backends_render_beside_local_instances_and_haproxy_accepts_them(tmp_path: Path) -> None:
    config = with_backends(["10.77.0.2:9998", "[fd00::3]:9998", "LocalHost.:9998"])
    text = units.render_haproxy(config, [1])
    assert "server voice1 127.0.0.1:10001 check\n" in text
    assert "    server 10.77.0.2:9998 10.77.0.2:9998 check\n" in text
    assert "    server fd00::3:9998 [fd00::3]:9998 check\n" in text
    assert "    server localhost:9998 localhost:9998 check\n" in text
    assert "ssl" not in text.split("backend xswarm_voice_instances", 1)[1]
    assert "balance leastconn" in text and "option httpchk GET /readyz" in text
    done = haproxy_check(text, tmp_path)
    assert done.returncode == 0, done.stderr


def test_with_a_ca_every_backend_is_reached_over_verified_tls(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    config = with_backends(["10.77.0.2:9998", "localhost:9998"], str(ca.cert))
    text = units.render_haproxy(config, [])
    verify = f"ssl verify required ca-file {ca.cert}"
    # An IP is checked by verifyhost (no SNI for an IP); a name by SNI, on checks too.
    assert f"server 10.77.0.2:9998 10.77.0.2:9998 check {verify} verifyhost 10.77.0.2\n" in text
    assert (
        f"server localhost:9998 localhost:9998 check {verify} verifyhost localhost "
        "sni str(localhost) check-sni localhost\n"
    ) in text
    assert "server voice" not in text
    done = haproxy_check(text, tmp_path)
    assert done.returncode == 0, done.stderr


def test_public_tls_and_backends_together(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    leaf = ca.leaf("public", 1)
    pem = tmp_path / "haproxy.pem"
    pem.write_bytes(leaf.cert.read_bytes() + leaf.key.read_bytes())
    config = with_backends(["10.77.0.2:9998", "10.77.0.3:9998"], str(ca.cert))
    text = units.render_haproxy(config, [], units.PublicTls(str(pem), 8443))
    assert f"bind :8443 ssl crt {pem} alpn http/1.1" in text
    servers = [line for line in text.splitlines() if line.strip().startswith("server ")]
    assert len(servers) == 2 and all("ssl verify required" in line for line in servers)
    done = haproxy_check(text, tmp_path)
    assert done.returncode == 0, done.stderr


def test_server_names_are_stable_and_safe_for_the_admin_socket() -> None:
    assert haproxy.backend_server("10.77.0.2", 9998) == "10.77.0.2:9998"
    assert haproxy.backend_server("fd00::2", 9998) == "fd00::2:9998"
    assert haproxy.backend_server("fe80::1%eth/0", 1) == "fe80::1_eth_0:1"
    assert haproxy.state_command("10.77.0.2:9998", "drain") == (
        "set server xswarm_voice_instances/10.77.0.2:9998 state drain\n"
    )


def test_no_instances_and_no_backends_is_a_precise_error() -> None:
    with pytest.raises(ConfigError) as caught:
        units.render_haproxy(config_module.defaults(), [])
    assert caught.value.key == "[haproxy] backends"
    assert "--instances N" in caught.value.problem and "--backends" in caught.value.problem


def test_a_backend_that_is_a_local_instance_is_refused() -> None:
    with pytest.raises(ConfigError, match="is also local instance 2's address"):
        units.render_haproxy(with_backends(["127.0.0.1:10002"]), [1, 2])


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("10.0.0.2", "has no port"),
        ("10.0.0.2:0", "expected a port from 1 to 65535"),
        ("10.0.0.2:65536", "expected a port from 1 to 65535"),
        ("10.0.0.2:http", "expected a port from 1 to 65535"),
        ("fd00::2:9998", "IPv6 address in brackets"),
        ("[voice]:9998", "is not an IPv6 address"),
        ("bad_host:9998", "RFC 1123 hostname"),
        ("a b:9998", "control or space characters"),
        ("10.0.0.2:9998\n    server evil 1.2.3.4:80", "control or space characters"),
        ("0.0.0.0:9998", "wildcard address"),
        ("", "has no port"),
    ],
)
def test_bad_backends_in_config_toml_name_the_key(entry: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        with_backends([entry])
    assert caught.value.key == "[haproxy] backends"
    assert words in caught.value.problem
    assert repr(entry) in caught.value.problem


def test_the_same_backend_twice_is_refused_however_it_is_spelled() -> None:
    for pair in (["10.0.0.2:9998", "10.0.0.2:9998"], ["[::1]:9998", "[0::1]:9998"],
                 ["voice2.example.com:9998", "VOICE2.example.com.:9998"]):  # fmt: skip
        with pytest.raises(ConfigError, match="is the same server as"):
            with_backends(pair)
    with_backends(["10.0.0.2:9998", "10.0.0.2:9999"])


def test_backend_ca_file_must_be_a_plain_absolute_path() -> None:
    for bad in ("ca.pem", "/etc/x.pem verify none", "/etc/../ca.pem"):
        with pytest.raises(ConfigError) as caught:
            with_backends(["10.0.0.2:9998"], bad)
        assert caught.value.key == "[haproxy] backend_ca_file"


def test_install_refuses_bad_backends_before_installing(tmp_path: Path) -> None:
    wheel = tmp_path / "xswarm-0-py3-none-any.whl"
    wheel.write_bytes(b"")
    base = ["--root", str(tmp_path / "root"), "--wheel", str(wheel)]
    cases = {
        "--backends: '10.0.0.2:99999': port '99999'": ["--backends", "10.0.0.2:99999"],
        "--backends: 'voice2': has no port": ["--backends", "10.0.0.2:9998,voice2"],
        "is the same server as '10.0.0.2:9998'": ["--backends", "10.0.0.2:9998, 10.0.0.2:9998"],
        "--backends: expected host:port": ["--backends", ""],
        "drop --no-haproxy": ["--no-haproxy", "--backends", "10.0.0.2:9998"],
    }
    for words, flags in cases.items():
        result = CliRunner().invoke(install.command, [*base, *flags])
        assert result.exit_code == 1, result.output
        assert words in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "root").exists()


def test_install_with_backends_renders_them_and_warns_of_plain_tcp(
    wheelhouse: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    args = ["--root", str(root), "--wheelhouse", str(wheelhouse), "--service-user", "nobody"]
    result = CliRunner().invoke(
        install.command, [*args, "--instances", "1", "--backends", "127.0.0.1:9001,localhost:9002"]
    )
    assert result.exit_code == 0, result.output
    layout = Layout(root, "nobody")
    text = layout.haproxy_config.read_text()
    assert "server voice1 127.0.0.1:10001 check" in text
    assert "server 127.0.0.1:9001 127.0.0.1:9001 check" in text
    assert "server localhost:9002 localhost:9002 check" in text
    # A reload keeps the servers' states (drained ones stay drained): the dump before it.
    dropins = layout.unit_dir / "haproxy.service.d"
    assert "xswarm haproxy save-state" in (dropins / "xswarm-server-state.conf").read_text()
    assert (dropins / "xswarm-limits.conf").exists()
    assert "WARNING: HAProxy reaches 127.0.0.1:9001, localhost:9002 over plain TCP" in result.output
    assert "backend_ca_file" in result.output and "xswarm drain --backend" in result.output
    # The new config.toml keeps the list, so that the next install renders it again.
    assert 'backends = ["127.0.0.1:9001", "localhost:9002"]' in layout.config.read_text()
    again = CliRunner().invoke(install.command, [*args, "--instances", "1"])
    assert again.exit_code == 0, again.output
    assert layout.haproxy_config.read_text() == text
    # doctor knows the backends are HAProxy's servers, not strays.
    checked = CliRunner().invoke(doctor.command, ["--root", str(root), "--service-user", "nobody"])
    assert "HAProxy routes to all 3 instances" in checked.output, checked.output
    assert "a reload of HAProxy keeps drained servers drained" in checked.output


# -- a real HAProxy in front of real bridges ------------------------------------------------


@dataclass
class Backend:
    """A bridge standing in for another host's, and how to read its own call count."""

    proc: subprocess.Popen[bytes]
    port: int
    ca: PrivateCa | None

    @property
    def entry(self) -> str:
        return f"127.0.0.1:{self.port}"

    def active_calls(self) -> int:
        scheme = "https" if self.ca else "http"
        context = ssl.create_default_context(cafile=str(self.ca.cert)) if self.ca else None
        url = f"{scheme}://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith("xswarm_active_calls "):
                return int(float(line.split()[1]))
        raise AssertionError(f"no xswarm_active_calls in {url}")


@dataclass
class FrontDoor:
    port: int
    root: Path
    backends: list[Backend]
    log: Path

    def server_states(self) -> dict[str, tuple[str, str]]:
        """{server: (status, last check)} as HAProxy's statistics say."""
        text = haproxy.send(haproxy.admin_socket(Layout(self.root)), "show stat\n")
        header, *rows = text.lstrip("# ").splitlines()
        names = header.split(",")
        out = {}
        for row in rows:
            fields = dict(zip(names, row.split(","), strict=False))
            if fields.get("pxname") == haproxy.BACKEND and fields["svname"] != "BACKEND":
                out[fields["svname"]] = (fields["status"], fields["check_status"])
        return out


@contextlib.contextmanager
def run_haproxy(
    tmp_path: Path, backends: list[Backend], ca: PrivateCa | None
) -> Iterator[FrontDoor]:
    binary = haproxy_or_skip()
    port = free_port()
    ca_file = str(ca.cert) if ca else ""
    config = with_backends([b.entry for b in backends], ca_file, port=port)
    text = units.render_haproxy(config, [])
    root = tmp_path / "front"
    socket_path = haproxy.admin_socket(Layout(root))
    cfg = staged_haproxy.install_config(text, Layout(root))
    log_path = tmp_path / "haproxy.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, "-f", str(cfg), "-db"], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    door = FrontDoor(port, root, backends, log_path)
    try:
        eventually_sync(
            lambda: staged_haproxy.answers(socket_path), within=10, detail=log_path.read_text
        )
        yield door
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(params=["plain", "tls"])
def front_door(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FrontDoor]:
    """Two bridges as "remote" backends (TLS ones, signed by a CA made here, for "tls"), and
    HAProxy in front of them, both servers up."""
    ca = make_ca(tmp_path / "pki") if request.param == "tls" else None
    backends: list[Backend] = []
    try:
        for n in (1, 2):
            if ca is None:
                toml = '[voice.bridge]\nengine = "echo"\ntrusted_proxies = ["127.0.0.1"]\n'
                bridge = start_bridge(tmp_path, toml, name=f"host{n}")
                backends.append(Backend(bridge.proc, bridge.port, None))
            else:
                leaf = ca.leaf(f"host{n}", n, host="127.0.0.1")
                proc, port = start_tls_bridge(tmp_path / f"host{n}", leaf, ca)
                backends.append(Backend(proc, port, ca))
        with run_haproxy(tmp_path, backends, ca) as door:
            eventually_sync(
                door.server_states,
                lambda states: [s for s, _ in states.values()] == ["UP", "UP"],
                within=30,
                detail=door.log.read_text,
            )
            yield door
    finally:
        for backend in backends:
            stop(backend.proc)


async def wait_calls(count: int, *backends: Backend) -> None:
    """Until the backends' own call counts add up to ``count``."""

    async def calls() -> int:
        return sum([await asyncio.to_thread(backend.active_calls) for backend in backends])

    def reached(total: int) -> bool:
        return total == count

    await eventually(calls, reached)


async def test_calls_spread_over_backends_and_a_drained_one_keeps_its_call(
    front_door: FrontDoor,
) -> None:
    root = ["--root", str(front_door.root)]
    one, two = front_door.backends
    async with aiohttp.ClientSession() as session:
        url = f"ws://127.0.0.1:{front_door.port}"
        first = TwilioCaller(session, url)
        await first.connect()
        await wait_calls(1, one, two)
        busy, idle = (one, two) if await asyncio.to_thread(one.active_calls) else (two, one)
        second = TwilioCaller(session, url)
        await second.connect()
        # leastconn: the second call goes to the other host; both hosts are reached.
        await wait_calls(1, idle)
        await wait_calls(1, busy)

        # Drain the host that has `second`: its call goes on, so the drain times out ...
        runner = CliRunner()
        args = [*root, "--backend", idle.entry]
        timed_out = await asyncio.to_thread(
            runner.invoke, drain.command, [*args, "--timeout", "0.5"]
        )
        assert isinstance(timed_out.exception, haproxy.HaproxyError), timed_out.output
        assert f"{idle.entry}: 1 call still open" in timed_out.output
        assert "still has 1 open call after 0.5 s; it stays drained" in str(timed_out.exception)
        # ... while new calls all go to the other host.
        more = [TwilioCaller(session, url) for _ in range(2)]
        for caller in more:
            await caller.connect()
        await wait_calls(3, busy)
        assert await asyncio.to_thread(idle.active_calls) == 1
        heard = len(second.media())
        await second.send_audio(tone(0.4))
        await eventually(lambda: len(second.media()) > heard)

        # Its call ends: the drain completes.
        await second.stop()
        await second.wait_closed()
        drained = await asyncio.to_thread(runner.invoke, drain.command, [*args, "--timeout", "30"])
        assert drained.exit_code == 0, drained.output
        assert f"{idle.entry}: no calls left" in drained.output
        assert front_door.server_states()[idle.entry][0] == "DRAIN"

        # Undrained, it takes the next call (it has the fewest).
        back = await asyncio.to_thread(runner.invoke, undrain.command, args)
        assert back.exit_code == 0, back.output
        assert "back in rotation" in back.output
        last = TwilioCaller(session, url)
        await last.connect()
        await wait_calls(1, idle)
        for caller in (first, *more, last):
            await caller.stop()


def test_drain_names_what_is_wrong(tmp_path: Path) -> None:
    runner = CliRunner()
    nothing = runner.invoke(drain.command, ["--root", str(tmp_path), "--backend", "10.0.0.2:9998"])
    assert nothing.exit_code != 0
    assert isinstance(nothing.exception, haproxy.HaproxyError)
    assert "no HAProxy admin socket at" in str(nothing.exception)
    bad = runner.invoke(undrain.command, ["--root", str(tmp_path), "--backend", "10.0.0.2"])
    assert isinstance(bad.exception, haproxy.HaproxyError)
    assert str(bad.exception).startswith("--backend '10.0.0.2': has no port")


def test_an_unknown_backend_is_refused_by_name(
    front_door: FrontDoor,
) -> None:
    root = front_door.root
    result = CliRunner().invoke(undrain.command, ["--root", str(root), "--backend", "10.9.9.9:1"])
    assert isinstance(result.exception, haproxy.HaproxyError)
    message = str(result.exception)
    assert "refused to set 10.9.9.9:1 to ready: No such server." in message
    for backend in front_door.backends:
        assert backend.entry in message


def test_a_backend_whose_certificate_names_another_host_gets_no_calls(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    good_leaf = ca.leaf("good", 1, host="127.0.0.1")
    # Signed by the same CA, but for "localhost": HAProxy's verifyhost 127.0.0.1 refuses it.
    wrong_leaf = ca.leaf("wrong", 2, host="localhost")
    procs = []
    try:
        good_proc, good_port = start_tls_bridge(tmp_path / "good", good_leaf, ca)
        procs.append(good_proc)
        wrong_proc, wrong_port = start_tls_bridge(tmp_path / "wrong", wrong_leaf, ca)
        procs.append(wrong_proc)
        backends = [Backend(good_proc, good_port, ca), Backend(wrong_proc, wrong_port, ca)]
        good, wrong = (backend.entry for backend in backends)
        with run_haproxy(tmp_path, backends, ca) as door:
            # Both bridges serve (the good one passes its checks); the wrong one fails in TLS
            # (L6), not in connecting (L4): the handshake is what refuses it.
            eventually_sync(
                door.server_states,
                lambda s: s[good][0] == "UP" and s[wrong][0] == "DOWN" and s[wrong][1][:2] == "L6",
                within=30,
                detail=lambda: f"{door.server_states()}\n{door.log.read_text()}",
            )
    finally:
        for proc in procs:
            stop(proc)
