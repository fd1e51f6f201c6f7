"""Run a callback on SIGTERM / SIGINT without running it inside a signal handler.

Python runs a signal handler on the main thread between two bytecodes, wherever that thread is. The
daemon's main thread spends most of its time inside `threading.Event.wait()`, and at some of those
moments it holds that Event's own lock; a handler that sets the Event then waits for a lock its own
thread holds, for ever (seen: Ctrl-C or a systemd stop hung `tallylight run` about one time in ten,
until systemd's SIGKILL, with the mic never closed cleanly and no "stop" in the ledger).

So the Python-level handler does nothing at all. Python's C-level handler still writes the signal's
number to the wakeup fd (`signal.set_wakeup_fd`, async-signal-safe), and a thread of ours blocked
on the other end of that pipe calls the callback, where taking locks is fine.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _ignore(signum: int, frame: object) -> None:
    """Installed so that Python neither dies of the signal nor raises KeyboardInterrupt; the wakeup
    fd has the signal already."""


def call_on_signals(callback: Callable[[int], None], signals: Iterable[int] = STOP_SIGNALS) -> None:
    """Call `callback(signum)` on a thread of its own each time one of `signals` arrives. Call from the
    main thread (Python allows signal handlers and the wakeup fd only there), once per process."""
    wanted = frozenset(int(s) for s in signals)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block; a full pipe drops a byte
    for fd in (read_fd, write_fd):
        os.set_inheritable(fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for s in wanted:
        signal.signal(s, _ignore)

    def watch() -> None:
        while True:
            data = os.read(read_fd, 64)
            if not data:
                return
            for signum in data:
                if signum in wanted:
                    try:
                        callback(signum)
                    except Exception:  # noqa: BLE001 - the next signal must still be heard
                        log.exception("handling signal %d failed", signum)

    threading.Thread(target=watch, name="tallylight-signals", daemon=True).start()
