"""sd_notify as systemd receives it: a real datagram socket bound where ``$NOTIFY_SOCKET``
points, and the exact bytes of each message."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from xswarm.sdnotify import Notifier, listen_fds, watchdog_interval


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest.fixture
def notifier(receiver: socket.socket, monkeypatch: pytest.MonkeyPatch) -> Iterator[Notifier]:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.getsockname())
    sent = Notifier()
    yield sent
    sent.close()


def test_ready_with_and_without_a_status(notifier: Notifier, receiver: socket.socket) -> None:
    assert notifier.enabled
    assert notifier.ready("Voice bridge running (0 active calls)")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=Voice bridge running (0 active calls)"
    assert notifier.ready()
    assert receiver.recv(4096) == b"READY=1"


def test_status_stopping_watchdog_and_extend_timeout(
    notifier: Notifier, receiver: socket.socket
) -> None:
    notifier.status("Supervising 2 instances, 1 active calls")
    assert receiver.recv(4096) == b"STATUS=Supervising 2 instances, 1 active calls"
    notifier.stopping("Draining 3 active calls")
    assert receiver.recv(4096) == b"STOPPING=1\nSTATUS=Draining 3 active calls"
    notifier.stopping()
    assert receiver.recv(4096) == b"STOPPING=1"
    notifier.watchdog()
    assert receiver.recv(4096) == b"WATCHDOG=1"
    notifier.extend_timeout(35.5)
    assert receiver.recv(4096) == b"EXTEND_TIMEOUT_USEC=35500000"


def test_reloading_carries_the_monotonic_clock(notifier: Notifier, receiver: socket.socket) -> None:
    """systemd 253+ needs MONOTONIC_USEC with RELOADING=1 (Type=notify-reload)."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = receiver.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    name, value = second.split("=")
    assert name == "MONOTONIC_USEC" and before <= int(value) <= after


def test_an_abstract_socket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"xswarm-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier()
        try:
            assert notifier.ready("up")
            assert receiver.recv(4096) == b"READY=1\nSTATUS=up"
        finally:
            notifier.close()


def test_disabled_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready("up")
    assert not notifier.watchdog()
    notifier.close()


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    assert notifier.enabled and not notifier.status("lost")
    notifier.close()
    assert not notifier.enabled


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("400000", None, 0.2),
        ("20000000", "self", 10.0),
        ("400000", "1", None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval() == expected


def test_listen_fds_for_this_process_start_at_3_and_are_consumed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_FDNAMES", "http:http")
    assert listen_fds() == [3, 4]
    # Not inherited by children, and not taken twice.
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        assert name not in os.environ
    assert listen_fds() == []


@pytest.mark.parametrize(("pid", "count"), [("1", "1"), ("self", "many"), (None, "1")])
def test_listen_fds_meant_for_another_process_or_malformed_are_ignored(
    monkeypatch: pytest.MonkeyPatch, pid: str | None, count: str
) -> None:
    if pid is None:
        monkeypatch.delenv("LISTEN_PID", raising=False)
    else:
        monkeypatch.setenv("LISTEN_PID", str(os.getpid()) if pid == "self" else pid)
    monkeypatch.setenv("LISTEN_FDS", count)
    assert listen_fds() == []
