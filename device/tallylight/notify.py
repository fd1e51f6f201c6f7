"""systemd's readiness and watchdog protocol (sd_notify), in a few lines over the socket.

systemd passes `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket) and, with `WatchdogSec=`,
`WATCHDOG_USEC` (and `WATCHDOG_PID`) to a `Type=notify` service. The daemon sends datagrams such as
`READY=1` once the mic and the wake engine are live, `WATCHDOG=1` from the audio loop itself (so a
stuck mic or loop stops the pings and systemd restarts us), and `STOPPING=1` on shutdown.

Without `NOTIFY_SOCKET` (run by hand, in tests) every call is a no-op. A failed send is logged once
and otherwise ignored: losing a notification must never take the speaker down. The socket is
non-blocking, so a busy systemd can never stall the audio loop.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to systemd; a no-op when not started by systemd.

    The audio loop may call `watchdog()` on every block: it sends at most one `WATCHDOG=1` per
    `watchdog_interval_s / 2`, which keeps the pings cheap and well inside systemd's deadline.
    """

    def __init__(self, env: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self._warned = False
        self._closed = False
        self._last_ping: float | None = None
        self.enabled: bool = self._address is not None
        # systemd's advice (sd_watchdog_enabled(3)): ping at half the timeout.
        self.watchdog_interval_s: float | None = _watchdog_interval(env) if self.enabled else None

    def ready(self, status: str = "") -> None:
        """Tell systemd start-up is done (the mic and the wake engine are live)."""
        self._send("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def watchdog(self) -> None:
        """Keep-alive from the audio loop; throttled, so calling it on every block is fine."""
        if self.watchdog_interval_s is None:
            return
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_interval_s / 2:
            return
        self._last_ping = now
        self._send("WATCHDOG=1")

    def stopping(self, status: str = "") -> None:
        """Tell systemd we are shutting down (so it does not treat the exit as a crash mid-start)."""
        self._send("STOPPING=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def status(self, text: str) -> None:
        """A one-line status shown by `systemctl status tallylight`."""
        self._send(f"STATUS={_one_line(text)}")

    def close(self) -> None:
        """Close the socket; safe to call twice. Later calls are no-ops."""
        self._closed = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, message: str) -> None:
        if self._address is None or self._closed:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), self._address)
        except OSError as e:
            # Log the first failure loudly, the rest quietly: a watchdog ping comes every few seconds.
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "cannot notify systemd at %s (%s); carrying on without it", _shown(self._address), e)


def _socket_address(value: str) -> str | bytes | None:
    """NOTIFY_SOCKET as an address for sendto: a path, or `@name` for an abstract socket."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("ignoring NOTIFY_SOCKET=%r: neither a path nor an @abstract name", value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC, or None when the watchdog is off or meant for another process."""
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # systemd set it for a parent (a wrapper script), not for us
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the protocol (e.g. a status text "x\nREADY=1").
    return " ".join(text.split())


def _shown(address: str | bytes) -> str:
    return "@" + address[1:].decode(errors="replace") if isinstance(address, bytes) else address
