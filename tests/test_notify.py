"""sd_notify over a real unix datagram socket bound to a path, as systemd does."""

import logging
import os
import socket

import pytest

from tallylight.notify import Notifier


@pytest.fixture
def notify_socket(tmp_path):
    """A datagram socket standing in for systemd's; returns (path, receive-all function)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)

    def received() -> list[str]:
        out = []
        while True:
            try:
                out.append(sock.recv(4096).decode())
            except BlockingIOError:
                return out

    yield path, received
    sock.close()


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_ready_status_stopping_reach_the_socket(notify_socket):
    path, received = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled and n.watchdog_interval_s is None
    n.ready("listening")
    n.status("muted by the switch")
    n.stopping()
    assert received() == ["READY=1\nSTATUS=listening", "STATUS=muted by the switch", "STOPPING=1"]
    n.close()
    n.close()  # safe twice
    n.ready()
    assert received() == []


def test_status_cannot_smuggle_another_assignment(notify_socket):
    path, received = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    n.status("bad\nREADY=1")
    assert received() == ["STATUS=bad READY=1"]
    n.close()


def test_watchdog_is_throttled_to_a_quarter_of_the_timeout(notify_socket):
    path, received = notify_socket
    clock = Clock()
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}, clock)
    assert n.watchdog_interval_s == 5.0
    for _ in range(50):  # one audio block every 20 ms for a second
        n.watchdog()
        clock.t += 0.02
    assert received() == ["WATCHDOG=1"]
    clock.t += 1.6  # now 2.6 s after the first ping: past a quarter of the 10 s timeout
    n.watchdog()
    n.watchdog()
    assert received() == ["WATCHDOG=1"]
    n.close()


def test_watchdog_for_another_pid_or_without_usec_is_off(notify_socket):
    path, received = notify_socket
    other = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"})
    none = Notifier({"NOTIFY_SOCKET": path})
    bad = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "soon"})
    for n in (other, none, bad):
        assert n.watchdog_interval_s is None
        n.watchdog()
    assert received() == []


def test_without_notify_socket_everything_is_a_no_op(tmp_path):
    n = Notifier({"WATCHDOG_USEC": "10000000"})
    assert not n.enabled and n.watchdog_interval_s is None
    n.ready("x")
    n.watchdog()
    n.status("x")
    n.stopping()
    n.close()


def test_unreachable_socket_is_logged_once_and_never_raises(tmp_path, caplog):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens"), "WATCHDOG_USEC": "1000"})
    with caplog.at_level(logging.DEBUG, logger="tallylight.notify"):
        n.ready()
        n.watchdog()
        n.stopping()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "nobody-listens" in warnings[0].getMessage()
    assert len(caplog.records) == 3
    n.close()


def test_abstract_socket_address(tmp_path):
    # Abstract names belong to the network namespace; this test shares ours, so it works here.
    name = f"tallylight-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    n = Notifier({"NOTIFY_SOCKET": "@" + name})
    n.ready()
    assert sock.recv(100) == b"READY=1"
    n.close()
    sock.close()


def test_relative_notify_socket_is_ignored():
    n = Notifier({"NOTIFY_SOCKET": "relative/path"})
    assert not n.enabled
    n.ready()
