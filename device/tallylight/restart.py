"""What the microphone does at start: the start policy (a rule of the privacy gate, gate.py rule 6).

The mic opens at start without a touch of the mute control only if the ledger shows that the last run
stopped cleanly with the mic open (listening, capturing or uploading), or the owner set
mute.at_start = "listening". Every other ending starts muted: muted, error, a start that failed, a
crash or power cut (no stop entry), or a ledger set aside as damaged. A mute switch is not asked:
it starts muted and opens only when it is read at listening (its position is the control).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tallylight.config import MuteConfig

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
    if mute.control == "switch":
        return Start(True, "at start: a mute switch opens the mic once it is read at listening")
    if not physical:
        return Start(False, "at start: simulated pins have no mute button to press")
    if mute.at_start == "muted":
        return Start(True, 'at start: mute.at_start = "muted"')
    if mute.at_start == "listening":
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
