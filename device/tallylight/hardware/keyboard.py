"""A key on the terminal as the mute control, for trying tallylight on a laptop (mute.control = "key").

A laptop has no GPIO, so the speaker runs on gpiozero's simulated pins (gpio.pin_factory = "mock").
This module is the hand on the button: each press of the key (the space bar by default) presses the
simulated mute button, held a little longer than mute.debounce_ms and then released, as a finger
would press a real one; a finger that sees nothing happen holds on, and so does this one, until the
mute control has looked at the line (the audio loop can be busy for longer than a press lasts, just
after a "stop listening" for one, and a press it never saw held would be lost). So the mute control
(hardware/mute.py, the debounce and the latch) and the gate see a button and treat it as the
physical control: a press mutes at once, a press unmutes, a "stop listening" holds until a press,
also across restarts. Nothing else can unmute: the key is read
from the controlling terminal only, never from the network or a file.

It needs a terminal: started without one (a service, a pipe), it refuses in one line.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from typing import Any, TextIO

from tallylight.choices import MuteKey
from tallylight.errors import SwitchError

_LOG = logging.getLogger(__name__)

# The byte each mute.key choice arrives as in cbreak mode.
KEYS = {MuteKey.SPACE: b" ", MuteKey.M: b"m", MuteKey.ENTER: b"\n"}


class KeyButton:
    """Reads `key` from the terminal `stdin` in a thread and presses the simulated button on `pin`
    (a gpiozero mock pin). `close()` restores the terminal."""

    def __init__(self, pin: Any, key: str = MuteKey.SPACE, hold_s: float = 0.1, stdin: TextIO | None = None,
                 pull_up: bool = True, polls: Callable[[], int] | None = None, max_hold_s: float = 3.0):
        if key not in KEYS:
            raise SwitchError(f"mute.key = {key!r}: choose one of {', '.join(KEYS)}")
        self.key, self._byte, self._pin, self._hold_s = key, KEYS[key], pin, hold_s
        # How many times the mute control has read the line (MuteControl.polls): each half of a press
        # lasts until one more read, at most max_hold_s (a loop stuck that long has failed anyway).
        self._polls, self._max_hold_s = polls, max_hold_s
        # Pressed connects the pin to GND when pulled up, to 3.3 V when pulled down.
        self._down, self._up = (pin.drive_low, pin.drive_high) if pull_up else (pin.drive_high, pin.drive_low)
        stdin = stdin or sys.stdin
        try:
            self._fd = stdin.fileno()
            is_tty = os.isatty(self._fd)
        except (AttributeError, ValueError, OSError):
            is_tty = False
        if not is_tty:
            raise SwitchError('mute.control = "key" needs a terminal to read the key from: run it in one, '
                              'or wire a switch (mute.control = "switch")')
        self._saved = termios.tcgetattr(self._fd)
        # cbreak: each key arrives at once, without Enter; Ctrl-C still interrupts.
        tty.setcbreak(self._fd)
        self.presses = 0
        self._stop = threading.Event()
        self._released = threading.Event()
        self._released.set()
        self._thread = threading.Thread(target=self._read, name="mute-key", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 32)
            except OSError:
                return
            if not data:
                return
            for _ in range(data.count(self._byte)):
                self.press()

    def press(self) -> None:
        """One press of the button: down, held for hold_s, up and left for hold_s (the debounce needs both)."""
        self._released.wait()
        self._released.clear()
        self.presses += 1
        self._down()
        if not self._hold():
            return
        self._up()
        # Let go for as long again before the next press: the control counts a press only after the
        # button was released and steady for mute.debounce_ms.
        self._hold()
        self._released.set()

    def _hold(self) -> bool:
        """Keep the button as it is for hold_s, and then until the control has read it once more.
        False when closed meanwhile."""
        if self._stop.wait(self._hold_s):
            return False
        if self._polls is not None:
            seen, deadline = self._polls(), time.monotonic() + self._max_hold_s
            while self._polls() == seen and time.monotonic() < deadline:
                if self._stop.wait(0.005):
                    return False
        return True

    def close(self) -> None:
        """Safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=1.0)
        try:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
        except termios.error as e:  # the terminal went away: nothing left to restore
            _LOG.debug("could not restore the terminal: %s", e)
