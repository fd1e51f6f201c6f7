"""What survives a restart (rules of the privacy gate, gate.py rules 3 and 6).

The start policy (`start_state`):

The mic opens at start without a touch of the mute control only if the ledger shows that the last run
stopped cleanly with the mic open (listening, capturing or uploading), or the owner set
mute.at_start = "listening". Every other ending starts muted: muted, error, a start that failed, a
crash or power cut (no stop entry), or a ledger set aside as damaged. A mute switch is not asked:
it starts muted and opens only when it is read at listening (its position is the control).

The voice mute (`KeptVoiceMute`): after "stop listening", `voice-muted` in state_dir holds the mute
across restarts (a crash, the watchdog, a power cut) until the physical control opens the mic.
Simulated pins (gpio.pin_factory = "mock", `physical_control`) have no control to end it with, so
nothing is kept there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tallylight.choices import AtStart, MuteControlKind, PinFactoryName
from tallylight.config import Config, MuteConfig

_LOG = logging.getLogger(__name__)
VOICE_MUTE_FILE = "voice-muted"

# The stop entry's reason after a stop that was asked for (SIGTERM, SIGINT) once the loop ran; any
# other reason (a start that failed, a crash of the loop) is not a clean stop.
CLEAN_STOP = "shutdown"
_OPEN_STATES = ("listening", "capturing", "uploading")


@dataclass(frozen=True)
class Start:
    muted: bool
    reason: str  # the ledger's reason for the state at start


def start_state(mute: MuteConfig, last: dict[str, Any] | None, *, ledger_set_aside: bool, physical: bool) -> Start:
    """The state to start in. `last` is the ledger's newest entry before this start's own; `physical`
    is False with simulated pins (gpio.pin_factory = "mock"), which have no control to press."""
    # Simulated pins first: their "switch" is only ever placed at listening by us, so starting muted
    # and then opening the mic as "mute control" put a move in the ledger that no control made.
    if not physical:
        return Start(False, "at start: simulated pins have no mute control to press")
    if mute.control == MuteControlKind.SWITCH:
        return Start(True, "at start: a mute switch opens the mic once it is read at listening")
    if mute.at_start == AtStart.MUTED:
        return Start(True, 'at start: mute.at_start = "muted"')
    if mute.at_start == AtStart.LISTENING:
        return Start(False, 'at start: mute.at_start = "listening"')
    return Start(*_how_it_stopped(last, ledger_set_aside))


def _how_it_stopped(last: dict[str, Any] | None, ledger_set_aside: bool) -> tuple[bool, str]:
    """(muted, reason) for mute.at_start = "last": open only after a clean stop with the mic open."""
    if ledger_set_aside:
        return True, "at start: the ledger was set aside as damaged, so how the last run stopped is unknown"
    if last is None:
        return True, "at start: the ledger records no earlier run"
    if last.get("event") != "stop":
        what = "a start that failed" if last.get("event") == "start" else "a crash or a power cut: no stop entry"
        return True, f"at start: the last stop was not clean ({what})"
    if last.get("reason") != CLEAN_STOP:
        return True, f"at start: the last stop was not clean ({last.get('reason')})"
    before = last.get("state_before")
    if before in _OPEN_STATES:
        return False, f"at start: {before} when last stopped cleanly"
    return True, f"at start: {before or 'not yet started'} when last stopped"


def physical_control(cfg: Config, pin_factory: Any) -> bool:
    """False only for simulated pins chosen on purpose (gpio.pin_factory = "mock", trying tallylight
    on a laptop) with nothing to press them. A pin factory passed in (tests) stands for real pins, and
    a key on the terminal (mute.control = "key") is a hand on the simulated button: a real control."""
    return cfg.mute.control == MuteControlKind.KEY or not (pin_factory is None and cfg.gpio.pin_factory == PinFactoryName.MOCK)


def place_simulated_switch(mute: MuteConfig, factory) -> None:
    """Simulated pins: close the simulated switch ("listening"), after MuteControl set its pull."""
    if mute.control == MuteControlKind.SWITCH:
        pin = factory.pin(mute.pin)
        pin.drive_low() if mute.pull_up else pin.drive_high()


class KeptVoiceMute:
    """A "stop listening" that holds across restarts until the physical control opens the mic."""

    def __init__(self, state_dir: Path, physical: bool):
        self.path, self._physical = Path(state_dir) / VOICE_MUTE_FILE, physical
        self.held = self.path.exists()
        if self.held and not physical:
            _LOG.warning("simulated GPIO: ignoring the voice mute kept from before this start")
            self.end()
        elif self.held:
            _LOG.warning("muted by voice before this start: press the mute button or move the switch to mute and "
                         "back (kept in %s)", self.path)

    def keep(self) -> None:
        self.held = True
        if not self._physical:
            return  # nothing could end it at the next start
        try:
            _write_durably(self.path, "muted by the voice command 'stop listening'\n")
        except OSError as e:
            _LOG.error("the voice mute may not survive a restart: cannot write %s: %s (check daemon.state_dir)",
                       self.path, e.strerror or e)

    def end(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:  # it stays: the next start is muted until the control is moved (fails closed)
            _LOG.error("cannot remove %s: %s", self.path, e.strerror or e)


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
