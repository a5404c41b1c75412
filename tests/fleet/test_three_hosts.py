"""A fleet across three hosts, built from network namespaces on this machine (issue 11, item 5).

Two voice hosts (a real ``xswarm-voice``, echo engine, serving TLS itself) and one front host
(HAProxy as the public TLS front door balancing over both, the supervisor watching both over
wss://, a real Prometheus scraping all three with the project's own scrape config and rules),
plus a caller host that places calls through the front door. Every certificate comes from a
CA made here, and each side verifies the other's. The hosts share one /24 through a bridge in
a namespace of its own (tests/support/netns.py), so the traffic never leaves what the test
built. Then one voice host's bridge is killed and started again, and every watcher must see
it: the callers, HAProxy, the supervisor (within 2 s, by its own clock) and Prometheus (``up``,
and XswarmVoiceInstanceDown pending: with the shipped rule's ``for: 1m`` it would fire only
after a minute, longer than this module may take). The bridges' ``control_allow`` names the
front host alone, so that the caller host shows a refusal from a source the rule leaves out.

Needs root and ``ip netns`` (CI has both); HAProxy and Prometheus come with
deploy/ci/system-deps.sh. Without them the module skips and says why, unless
XSWARM_REQUIRE_SYSTEMD=1 (CI's "everything must run"), where that is a failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml

from tests.support import haproxy as staged_haproxy
from tests.support import netns
from tests.support.bridge import VENV_BIN
from tests.support.calls import tone
from tests.support.certs import PrivateCa, make_ca
from tests.support.waiting import eventually_sync
from xswarm import config as xswarm_config
from xswarm.client.carrier_call import CallResult
from xswarm.client.common import client_ssl
from xswarm.client.twilio_call import place_twilio_call
from xswarm.ops import haproxy, haproxy_state, units
from xswarm.ops.scrape_targets import host_targets

CHECKOUT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = CHECKOUT / "deploy/prometheus"
ADDRESSES = {
    "front": "10.77.0.1",
    "voice-a": "10.77.0.2",
    "voice-b": "10.77.0.3",
    "caller": "10.77.0.10",
}
VOICE_PORT = 9998
SUPERVISOR_PORT = 9999
PROMETHEUS_PORT = 9090
PUBLIC_PORT = 443
CONTROL_TOKEN = "three-hosts-control-token"
OPERATOR_TOKEN = "three-hosts-operator-token"
DOWN_WITHIN_S = 2.0  # issue 11: the supervisor shows a dead host down within 2 s
DOWN_ALERT = "XswarmVoiceInstanceDown"
T = TypeVar("T")
SERVER_RUNNING = "2"  # srv_op_state in HAProxy's `show servers state`


def voice_target(host: str) -> str:
    """How HAProxy, the supervisor and Prometheus all name a voice host: address:port."""
    return f"{ADDRESSES[host]}:{VOICE_PORT}"


def required(reason: str) -> None:
    if os.environ.get("XSWARM_REQUIRE_SYSTEMD") == "1":
        pytest.fail(f"XSWARM_REQUIRE_SYSTEMD=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def service_env(runtime_dir: Path, **extra: str) -> dict[str, str]:
    """Our environment (PYTHONPATH included) without another service's settings or sockets."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XSWARM_", "TWILIO_", "NOTIFY_SOCKET", "LISTEN_", "RUNTIME_DIR"))
    }
    env["XSWARM_RUNTIME_DIR"] = str(runtime_dir)
    env.update(extra)
    return env


async def http_get(
    url: str, tls: ssl.SSLContext | bool = True, token: str | None = None
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, ssl=tls, headers=headers) as response,
    ):
        return response.status, await response.text()


async def answers(url: str, tls: ssl.SSLContext | bool = True) -> bool:
    """Whether ``url`` answers 200 (a service still starting answers nothing)."""
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        status, _ = await http_get(url, tls)
        return status == 200
    return False


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- the fleet --------------------------------------------------------------------------------


@dataclass
class OperatorWatch:
    """An operator's subscription to the supervisor's /ws: every event it sent, kept."""

    ws: aiohttp.ClientWebSocketResponse
    session: aiohttp.ClientSession
    events: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(message.data))

    def states(self, instance: str, state: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == "instance_state" and e["instance"] == instance and e["state"] == state
        ]

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
        if self.reader is not None:
            await self.reader


@dataclass
class Fleet:
    """The running hosts and the means to look at them from inside."""

    net: netns.Network
    tmp: Path
    ca: PrivateCa
    voice: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    supervisor: subprocess.Popen[bytes] | None = None

    @property
    def front(self) -> netns.Host:
        return self.net.hosts["front"]

    @property
    def caller(self) -> netns.Host:
        return self.net.hosts["caller"]

    @property
    def tls(self) -> ssl.SSLContext:
        context = client_ssl(self.ca.cert)
        assert isinstance(context, ssl.SSLContext)
        return context

    def logs(self) -> str:
        parts = []
        for path in sorted(self.tmp.glob("*/*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.relative_to(self.tmp)} (last 3000 characters)\n{text[-3000:]}")
        return "\n".join(parts)

    # services --------------------------------------------------------------------------

    def start_voice(self, name: str) -> subprocess.Popen[bytes]:
        folder = self.tmp / name
        proc = self.net.spawn(
            self.net.hosts[name],
            [str(VENV_BIN / "xswarm-voice"), "--config", str(folder / "config.toml")],
            folder / "voice.log",
            env=service_env(folder / "run", XSWARM_CONTROL_TOKEN=CONTROL_TOKEN),
            cwd=folder,
        )
        self.voice[name] = proc
        return proc

    def wait_voice_ready(self, name: str) -> None:
        url = f"https://{voice_target(name)}/readyz"
        proc = self.voice[name]

        def ready() -> bool:
            assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{self.logs()}"
            return self.front.loop.run(answers(url, self.tls))

        self.wait_until(ready, within=60)

    def kill_voice(self, name: str) -> float:
        """SIGKILL the bridge by its PID (no drain, no goodbye); returns the wall time."""
        proc = self.voice[name]
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return killed_at

    # what the front host sees ---------------------------------------------------------

    def supervisor_api(self, path: str) -> Any:
        url = f"http://127.0.0.1:{SUPERVISOR_PORT}{path}"
        status, body = self.front.loop.run(http_get(url, token=OPERATOR_TOKEN))
        assert status == 200, f"GET {path}: {status} {body}"
        return json.loads(body)

    def instances(self) -> dict[str, dict[str, Any]]:
        return {i["name"]: i for i in self.supervisor_api("/api/instances")}

    def supervisor_answers(self) -> bool:
        """The supervisor listens: its API answers (with anything) rather than refusing."""
        try:
            self.supervisor_api("/api/instances")
        except (aiohttp.ClientError, OSError):
            return False
        return True

    def haproxy_running(self) -> dict[str, bool]:
        """HAProxy's own verdict on each backend, from its admin socket: passing its checks?"""
        socket_path = self.tmp / "front" / "haproxy-admin.sock"
        text = haproxy.send(socket_path, f"show servers state {haproxy.BACKEND}\n")
        rows = [line.split() for line in text.splitlines()[1:] if line and line[0] != "#"]
        return {row[3]: row[5] == SERVER_RUNNING for row in rows}

    def prometheus(self, expr: str) -> list[dict[str, Any]]:
        query = urllib.parse.quote(expr)
        url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?query={query}"
        status, body = self.front.loop.run(http_get(url))
        assert status == 200, body
        return list(json.loads(body)["data"]["result"])

    def wait_until(self, probe: Callable[[], T], within: float = 30) -> T:
        """Poll ``probe()`` (which looks inside the hosts itself) until its value is truthy."""
        return eventually_sync(probe, within=within, interval=0.1, detail=self.logs)

    def watch_operator(self) -> OperatorWatch:
        async def open_watch() -> OperatorWatch:
            session = aiohttp.ClientSession()
            ws = await session.ws_connect(
                f"ws://127.0.0.1:{SUPERVISOR_PORT}/ws",
                headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                max_msg_size=16 << 20,
            )
            watch = OperatorWatch(ws, session)
            auth = json.loads((await ws.receive(timeout=10)).data)
            assert auth == {**auth, "type": "auth_result", "success": True}, auth
            await ws.send_str(json.dumps({"type": "subscribe"}))
            snapshot = json.loads((await ws.receive(timeout=10)).data)
            assert snapshot["type"] == "snapshot", snapshot
            watch.reader = asyncio.create_task(watch.read())
            return watch

        return self.front.loop.run(open_watch())

    # calls through the front door ---------------------------------------------------------

    def place_call(self, seconds: float) -> concurrent.futures.Future[CallResult]:
        """A Twilio call from the caller host to the front door, by the project's client."""
        url = f"wss://{ADDRESSES['front']}:{PUBLIC_PORT}/twilio"
        call = place_twilio_call(url, tone(seconds), tail_seconds=0.5, tls=self.tls)
        return self.caller.loop.submit(call)


def write_voice_host(fleet: Fleet, name: str, serial: int) -> None:
    folder = fleet.tmp / name
    folder.mkdir()
    # HAProxy's verifyhost reads DNS names only, Python's check IP addresses: both.
    leaf = fleet.ca.leaf(name, serial, host=ADDRESSES[name], ips=[ADDRESSES[name]])
    (folder / "config.toml").write_text(
        "[voice.bridge]\n"
        f'host = "{ADDRESSES[name]}"\n'
        f"port = {VOICE_PORT}\n"
        'engine = "echo"\n'
        "status_interval = 0.2\n"
        f'tls_cert = "{leaf.cert}"\n'
        f'tls_key = "{leaf.key}"\n'
        f'trusted_proxies = ["{ADDRESSES["front"]}"]\n'
        f'control_allow = ["{ADDRESSES["front"]}/32"]\n'
        f'[paths]\nstate_dir = "{folder / "state"}"\n'
    )


def write_front_host(fleet: Fleet) -> Path:
    """config.toml, haproxy.cfg (rendered by our own code) and prometheus.yml of the front."""
    folder = fleet.tmp / "front"
    folder.mkdir()
    controls = ", ".join(f'"wss://{voice_target(h)}/control"' for h in ("voice-a", "voice-b"))
    backends = ", ".join(f'"{voice_target(h)}"' for h in ("voice-a", "voice-b"))
    config_path = folder / "config.toml"
    config_path.write_text(
        "[haproxy]\n"
        f"backends = [{backends}]\n"
        f'backend_ca_file = "{fleet.ca.cert}"\n'
        "[dashboard]\n"
        f"port = {SUPERVISOR_PORT}\n"
        f"instances = [{controls}]\n"
        f'ca_file = "{fleet.ca.cert}"\n'
        f'[paths]\nstate_dir = "{folder / "state"}"\n'
    )
    public = fleet.ca.leaf("front", 10, host=ADDRESSES["front"], ips=[ADDRESSES["front"]])
    pem = folder / "haproxy.pem"
    pem.write_text(public.cert.read_text() + public.key.read_text())
    pem.chmod(0o600)
    tls = units.PublicTls(str(pem), PUBLIC_PORT, ADDRESSES["front"])
    text = units.render_haproxy(xswarm_config.load(config_path), [], tls)
    # The machine's syslog and /run are not the test's: the admin socket goes in our folder.
    text = text.replace(haproxy.ADMIN_SOCKET, str(folder / "haproxy-admin.sock"))
    # Nor is its server-state file: one left by a real install would decide what is drained.
    text = text.replace(haproxy_state.SERVER_STATE, str(folder / "haproxy-server-state"))
    (folder / "haproxy.cfg").write_text(text.replace(staged_haproxy.SYSLOG_LINE + "\n", ""))
    write_prometheus_config(fleet, folder)
    return folder


def write_prometheus_config(fleet: Fleet, folder: Path) -> None:
    """deploy/prometheus as shipped, with what a test changes: 1 s intervals, the target files
    in our folder, and our CA trusted for the bridges' https. Each host's target file is the
    one ``xswarm targets`` writes from that host's own config."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / "rules/xswarm.rules.yml")]
    targets = folder / "targets"
    targets.mkdir()
    for job in config["scrape_configs"]:
        (sd,) = job["file_sd_configs"]
        sd["files"] = [sd["files"][0].replace("/etc/prometheus/xswarm", str(targets))]
        sd["refresh_interval"] = "1s"
        if job["job_name"] == "xswarm-voice":
            job["tls_config"] = {"ca_file": str(fleet.ca.cert)}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    for name in ("voice-a", "voice-b"):
        voice = xswarm_config.load(fleet.tmp / name / "config.toml")
        files = host_targets(voice, [], ADDRESSES[name], name)
        (targets / files.voice_name).write_text(files.voice)
    files = host_targets(xswarm_config.load(folder / "config.toml"), [], "127.0.0.1", "front")
    (targets / files.dashboard_name).write_text(files.dashboard)


def start_front_host(fleet: Fleet, folder: Path) -> None:
    front = fleet.front
    fleet.net.spawn(
        front,
        [shutil.which("haproxy") or "haproxy", "-db", "-f", str(folder / "haproxy.cfg")],
        folder / "haproxy.log",
    )
    fleet.supervisor = fleet.net.spawn(
        front,
        [str(VENV_BIN / "xswarm-dashboard"), "--config", str(folder / "config.toml")],
        folder / "supervisor.log",
        env=service_env(
            folder / "run",
            XSWARM_CONTROL_TOKEN=CONTROL_TOKEN,
            XSWARM_SUPERVISOR_TOKEN=OPERATOR_TOKEN,
        ),
        cwd=folder,
    )
    fleet.net.spawn(
        front,
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
        ],
        folder / "prometheus.log",
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if (reason := netns.unavailable()) is not None:
        required(reason)
    for tool in ("haproxy", "prometheus"):
        if shutil.which(tool) is None:
            required(f"{tool} is not installed; deploy/ci/system-deps.sh installs it")
    tmp = tmp_path_factory.mktemp("three_hosts")
    with netns.network(f"xsw{os.getpid()}", ADDRESSES) as net:
        fleet = Fleet(net, tmp, make_ca(tmp / "pki"))
        for serial, name in enumerate(("voice-a", "voice-b"), start=1):
            write_voice_host(fleet, name, serial)
            fleet.start_voice(name)
        start_front_host(fleet, write_front_host(fleet))
        for name in ("voice-a", "voice-b"):
            fleet.wait_voice_ready(name)
        fleet.wait_until(fleet.supervisor_answers, within=60)  # a loaded CI host starts slowly
        fleet.wait_until(
            lambda: all(i["state"] == "up" for i in fleet.instances().values()),
        )
        front_door = f"https://{ADDRESSES['front']}:{PUBLIC_PORT}/readyz"
        fleet.wait_until(lambda: fleet.caller.loop.run(answers(front_door, fleet.tls)))
        fleet.wait_until(lambda: staged_haproxy.answers(fleet.tmp / "front" / "haproxy-admin.sock"))
        fleet.wait_until(lambda: all(fleet.haproxy_running().values()))
        yield fleet


# -- the tests --------------------------------------------------------------------------------


def test_the_hosts_are_only_in_namespaces_the_test_made(fleet: Fleet) -> None:
    root = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True)
    assert "10.77.0." not in root.stdout, "a test address leaked into the root namespace"
    ports = subprocess.run(
        ["ip", "-n", fleet.net.switch, "-o", "link", "show", "master", "br0"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(ports.stdout.splitlines()) == len(ADDRESSES)


def test_the_supervisor_watches_both_voice_hosts_over_wss(fleet: Fleet) -> None:
    instances = fleet.instances()
    assert set(instances) == {voice_target("voice-a"), voice_target("voice-b")}
    for name in ("voice-a", "voice-b"):
        seen = instances[voice_target(name)]
        assert seen["url"] == f"wss://{voice_target(name)}/control"
        assert seen["state"] == "up"
        assert seen["engine"] == "echo"
        assert seen["pid"] == fleet.voice[name].pid


def test_prometheus_scrapes_every_host_with_the_shipped_config(fleet: Fleet) -> None:
    def all_up() -> list[dict[str, Any]]:
        up = fleet.prometheus("up == 1")
        return up if len(up) == 3 else []

    up = fleet.wait_until(all_up, within=30)
    seen = {(s["metric"]["job"], s["metric"]["instance"], s["metric"]["role"]) for s in up}
    assert seen == {
        ("xswarm-voice", voice_target("voice-a"), "voice"),
        ("xswarm-voice", voice_target("voice-b"), "voice"),
        ("xswarm-dashboard", f"127.0.0.1:{SUPERVISOR_PORT}", "supervisor"),
    }

    def supervised() -> dict[str, str]:
        rows = fleet.prometheus("xswarm_supervisor_instance_up")
        return {s["metric"]["voice_instance"]: s["value"][1] for s in rows}

    # A scrape of the supervisor may predate its links to both hosts: the next one has them.
    expected = {voice_target("voice-a"): "1", voice_target("voice-b"): "1"}
    eventually_sync(supervised, lambda now: now == expected, within=30, detail=fleet.logs)


async def control_upgrade(url: str, token: str, tls: ssl.SSLContext) -> int:
    """The HTTP status a /control upgrade gets (101 when it is let in)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers, ssl=tls):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def test_a_voice_host_lets_only_the_front_host_with_its_token_into_control(
    fleet: Fleet,
) -> None:
    """[voice.bridge] control_allow names the front host alone: the caller host is refused
    even with the right token, and the front host needs the token too."""
    url = f"wss://{voice_target('voice-b')}/control"
    assert fleet.caller.loop.run(control_upgrade(url, CONTROL_TOKEN, fleet.tls)) == 403
    assert fleet.front.loop.run(control_upgrade(url, "not-the-token", fleet.tls)) == 401
    assert fleet.front.loop.run(control_upgrade(url, CONTROL_TOKEN, fleet.tls)) == 101
    metrics_url = f"https://{voice_target('voice-b')}/metrics"
    status, metrics = fleet.front.loop.run(http_get(metrics_url, fleet.tls))
    assert status == 200
    assert 'xswarm_control_refused_total{reason="source"} 1\n' in metrics, metrics


def history_of(fleet: Fleet, instance: str, expected: int | None = None) -> list[dict[str, Any]]:
    """The supervisor's records of ``instance``'s ended calls; [] until there are ``expected``."""
    records = [r for r in fleet.supervisor_api("/api/calls?limit=50") if r["instance"] == instance]
    return records if expected is None or len(records) == expected else []


def active_calls(fleet: Fleet) -> dict[str, int]:
    return {name: int(i["active_calls"] or 0) for name, i in fleet.instances().items()}


def test_a_voice_host_dies_and_comes_back(fleet: Fleet) -> None:
    a, b = voice_target("voice-a"), voice_target("voice-b")
    # Calls through the front door, one at a time so that leastconn alternates: both hosts
    # get some. Long enough to outlive everything below; the ones left are cancelled.
    long_calls = []
    for _ in range(4):
        long_calls.append(fleet.place_call(seconds=120))
        fleet.wait_until(lambda: sum(active_calls(fleet).values()) == len(long_calls))
    spread = active_calls(fleet)
    assert spread[a] >= 1 and spread[b] >= 1, f"calls not spread over both hosts: {spread}"

    watch = fleet.watch_operator()
    killed_at = fleet.kill_voice("voice-a")

    # The supervisor: down, by its own clock within 2 s of the kill.
    down = fleet.wait_until(
        lambda: fleet.instances()[a]["state"] == "down" and watch.states(a, "down")
    )
    went_down = epoch(down[0]["ts"])
    assert went_down - killed_at <= DOWN_WITHIN_S, (
        f"the supervisor saw {a} down {went_down - killed_at:.2f} s after the kill"
    )
    assert fleet.instances()[b]["state"] == "up"
    fleet.wait_until(lambda: fleet.haproxy_running() == {a: False, b: True}, within=15)

    # The callers on voice-a: their calls ended (the bridge went away), after echoing audio.
    def ended_calls() -> list[CallResult]:
        done = [c.result() for c in long_calls if c.done()]
        return done if len(done) == spread[a] else []

    ended = fleet.wait_until(ended_calls, within=15)
    assert all(result.payloads for result in ended), "a call on voice-a never heard its echo"
    assert sum(not c.done() for c in long_calls) == spread[b]

    # New calls go to voice-b; they run to their end and the supervisor records them there.
    new_calls = [fleet.place_call(seconds=1.5) for _ in range(2)]
    results = [c.result(30) for c in new_calls]
    assert all(r.payloads and not r.errors for r in results), [r.errors for r in results]
    history = fleet.wait_until(lambda: history_of(fleet, b, expected=len(new_calls)))
    assert all(r["reason"] != "instance_lost" for r in history), history

    # Prometheus: voice-a's up goes 0 and the instance-down alert starts (pending: it fires
    # after the rule's `for: 1m`, longer than this test waits).
    fleet.wait_until(lambda: fleet.prometheus(f'up{{instance="{a}"}} == 0'), within=15)
    pending = fleet.wait_until(
        lambda: fleet.prometheus(f'ALERTS{{alertname="{DOWN_ALERT}",alertstate="pending"}}'),
        within=15,
    )
    assert [p["metric"]["instance"] for p in pending] == [a]

    # voice-a restarts: the supervisor sees it up again, and records how its calls ended.
    restarted = fleet.start_voice("voice-a")
    fleet.wait_voice_ready("voice-a")
    fleet.wait_until(lambda: fleet.instances()[a]["state"] == "up" and watch.states(a, "up"))
    assert fleet.instances()[a]["pid"] == restarted.pid
    fleet.wait_until(lambda: fleet.haproxy_running() == {a: True, b: True}, within=15)
    lost = fleet.wait_until(lambda: history_of(fleet, a, expected=spread[a]))
    assert all(r["reason"] == "instance_lost" for r in lost), lost
    # Ended when the host died, not when it came back (timestamps in milliseconds).
    for record in lost:
        assert killed_at - 0.001 <= epoch(record["ended_at"]) <= killed_at + DOWN_WITHIN_S

    # Prometheus: up again, and the alert gone.
    fleet.wait_until(lambda: fleet.prometheus(f'up{{instance="{a}"}} == 1'), within=15)
    fleet.wait_until(lambda: not fleet.prometheus(f'ALERTS{{alertname="{DOWN_ALERT}"}}'), within=15)
    fleet.front.loop.run(watch.close())

    # The callers still on voice-b hang up: their calls end there, recorded like any other.
    for call in long_calls:
        call.cancel()
    fleet.wait_until(lambda: history_of(fleet, b, expected=len(new_calls) + spread[b]))
