"""The privacy gate: the one place that decides whether audio flows.

Read this module to audit tallylight. Every other part asks the gate and obeys it:
- the daemon opens the microphone only while `mic_open_allowed` and closes it as soon as it is not;
- the pipeline lets audio past the wake detector only while `capturing`;
- the uplink may send audio only while `uploading`.

Rules, in the order the code enforces them:
1. Moving towards MORE audio (MUTED/ERROR -> LISTENING, LISTENING -> CAPTURING/UPLOADING): the light is
   driven and confirmed, then the ledger entry is made durable, and only then does the state change.
   If either fails, the gate enters ERROR instead and no audio flows (P2, P3, P5).
2. Moving towards LESS audio (to MUTED, to ERROR, CAPTURING -> LISTENING): the state changes first, so
   audio stops at once, then the light and the ledger follow. If they fail, the gate enters ERROR.
   A capture or upload cut off (to MUTED or ERROR) is wiped (`wipe`, set by its owner) before the
   light changes; one that ends normally was handed over and wiped by its caller already (P2).
3. Only `switch_changed(muted=False)`, called for the physical control, leaves MUTED (P1). A voice
   command can mute (`mute`) but nothing in software unmutes.
4. ERROR leaves only through `recover()`, which re-enters MUTED or LISTENING by rule 1, as the
   physical control says.
"""

from __future__ import annotations

import logging
import time
from enum import Enum
from typing import Any, Callable

from tallylight.errors import TallylightError

_LOG = logging.getLogger(__name__)


class State(str, Enum):
    MUTED = "muted"  # mic closed by the physical control (or a voice "stop listening")
    LISTENING = "listening"  # mic open; audio only passes the short pre-roll ring and the wake detector
    CAPTURING = "capturing"  # audio kept after a wake word, in RAM, for recognition: light on
    UPLOADING = "uploading"  # audio leaving the device (opt-in uplink): light shows it
    ERROR = "error"  # something we rely on failed: mic closed until it recovers


_OPEN = {State.LISTENING, State.CAPTURING, State.UPLOADING}


def _why(e: Exception) -> str:
    return str(e) if isinstance(e, TallylightError) else f"{type(e).__name__}: {e}"


class PrivacyGate:
    """Owns the privacy state. `indicator.show(state, recording=...)` must raise on failure to drive or
    confirm the light; `ledger.append(...)` must raise on failure to write durably."""

    def __init__(self, indicator, ledger, *, debug_recording: bool = False, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[State, State, str], None] | None = None):
        self._indicator = indicator
        self._ledger = ledger
        self._clock = clock
        self._on_change = on_change
        self.debug_recording = debug_recording
        self.wipe: Callable[[], None] | None = None  # drops all audio held past the wake detector
        self.state = State.MUTED
        self.error_reason = ""
        self._since = clock()
        # The mic starts closed. Show it; if even that fails we start in ERROR. `start` records why.
        try:
            indicator.show(State.MUTED)
        except Exception as e:
            self.fail(_why(e))

    def start(self, muted: bool, reason: str) -> None:
        """The state at start, as restart.py decided: MUTED, recorded with why, or LISTENING (rule 1)."""
        if self.state is State.MUTED:
            self._after_closing(State.MUTED, reason) if muted else self._open(State.LISTENING, reason)

    # -- what the rest of the daemon asks -------------------------------------------------------
    @property
    def mic_open_allowed(self) -> bool:
        return self.state in _OPEN

    @property
    def capturing(self) -> bool:
        return self.state is State.CAPTURING

    @property
    def uploading(self) -> bool:
        return self.state is State.UPLOADING

    # -- the physical control: the only way out of MUTED -----------------------------------------
    def switch_changed(self, muted: bool) -> None:
        if muted:
            if self.state is not State.MUTED:
                self._close(State.MUTED, "mute control")
        elif self.state is State.MUTED:
            self._open(State.LISTENING, "mute control")

    def mute(self, reason: str) -> None:
        """Mute from software (the voice command "stop listening", shutdown). Never unmutes."""
        if self.state is not State.MUTED:
            self._close(State.MUTED, reason)

    # -- capture and upload -----------------------------------------------------------------------
    def begin_capture(self) -> bool:
        """LISTENING -> CAPTURING after a wake word. True only if the light is confirmed on and the
        ledger written; the caller must not keep any audio past the wake detector otherwise."""
        return self.state is State.LISTENING and self._open(State.CAPTURING, "wake word")

    def end_capture(self, *, duration_s: float, handed_to: str, end: str) -> None:
        """CAPTURING -> LISTENING. Call only after the audio was handed over and the buffer wiped."""
        if self.state is State.CAPTURING:
            self._close(State.LISTENING, "capture handed over",
                        record=("capture", {"duration_s": round(duration_s, 3), "handed_to": handed_to, "end": end}))

    def begin_upload(self, destination: str) -> bool:
        return self.state in (State.LISTENING, State.CAPTURING) and self._open(
            State.UPLOADING, f"upload to {destination}")

    def end_upload(self, *, destination: str, nbytes: int) -> None:
        if self.state is State.UPLOADING:
            self._close(State.LISTENING, "upload finished",
                        record=("upload", {"destination": destination, "bytes": nbytes}))

    def note(self, event: str, **fields: Any) -> None:
        """Ledger an event that is not a state change (debug recording, voice mute ...). On failure the
        gate enters ERROR, like any ledger failure."""
        try:
            self._ledger.append(event, **fields)
        except Exception as e:
            self.fail(_why(e))

    # -- failure and recovery ---------------------------------------------------------------------
    def fail(self, reason: str) -> None:
        """Enter ERROR: audio stops now; the light and the ledger say why if they can."""
        self.error_reason = reason
        if self.state is State.ERROR:
            return
        old, self.state = self.state, State.ERROR
        _LOG.error("microphone closed: %s", reason)
        self._cut_off(old)
        self._notify(old, reason)
        for step in (lambda: self._indicator.show(State.ERROR),
                     lambda: self._ledger.append("state", **self._state_fields(old, State.ERROR, reason))):
            try:
                step()
            except Exception as e:  # best effort: we are already failing closed
                _LOG.error("while failing closed: %s", e)
        self._since = self._clock()

    def recover(self, switch_muted: bool) -> bool:
        """ERROR -> MUTED or LISTENING, as the physical control says. False if still failing."""
        if self.state is not State.ERROR:
            return True
        target = State.MUTED if switch_muted else State.LISTENING
        return self._open(target, "recovered")

    # -- the two kinds of transition ---------------------------------------------------------------
    def _open(self, new: State, reason: str) -> bool:
        """Towards more audio: light, then ledger, then state."""
        old = self.state
        try:
            self._indicator.show(new, recording=self.debug_recording and new is State.CAPTURING)
            self._ledger.append("state", **self._state_fields(old, new, reason))
        except Exception as e:  # any failure to show or record means no audio: fail closed
            self.fail(_why(e))
            return False
        self.state = new
        self._since = self._clock()
        self._notify(old, reason)
        return True

    def _close(self, new: State, reason: str, record: tuple[str, dict] | None = None) -> None:
        """Towards less audio: state first, then ledger, then light."""
        old, self.state = self.state, new
        unwiped = self._cut_off(old) if new is not State.LISTENING else None
        self._notify(old, reason)
        self._after_closing(old, reason, record)
        if unwiped:
            self.fail(f"could not wipe the audio: {unwiped}")

    def _cut_off(self, old: State) -> str | None:
        """Wipe a capture or upload that is cut off; the reason if that failed, else None."""
        if old in (State.CAPTURING, State.UPLOADING) and self.wipe is not None:
            try:
                self.wipe()
            except Exception as e:  # the state already lets no audio flow; say why and fail closed
                _LOG.error("could not wipe the audio of the %s: %s", old.value, _why(e))
                return _why(e)
        return None

    def _after_closing(self, old: State, reason: str, record: tuple[str, dict] | None = None) -> None:
        try:
            if record:
                self._ledger.append(record[0], **record[1])
            self._ledger.append("state", **self._state_fields(old, self.state, reason))
            self._indicator.show(self.state)
        except Exception as e:
            self.fail(_why(e))
            return
        self._since = self._clock()

    def _state_fields(self, old: State, new: State, reason: str) -> dict[str, Any]:
        return {"state": new.value, "from": old.value, "previous_s": round(self._clock() - self._since, 3),
                "reason": reason}

    def _notify(self, old: State, reason: str) -> None:
        if self._on_change and old is not self.state:
            self._on_change(old, self.state, reason)
