"""The privacy gate: the one place that decides whether audio flows.

Read this module, and the two it names (restart.py, hardware/mute.py), to audit tallylight. The rest
obeys: the daemon reads the mic only while `mic_open_allowed`; the pipeline keeps audio past the wake
detector only while `capturing`, and wakes only while not `wake_suppressed`; an uplink sends only
the bytes `allow_send` allows.

The rules, each with where it is enforced:
1. More audio (MUTED/ERROR -> LISTENING, LISTENING -> CAPTURING/UPLOADING): the light is driven and
   confirmed, then the ledger entry is durable, and only then does the state change; if either
   fails, ERROR instead (P2, P3, P5). `_open`.
2. Less audio (to MUTED or ERROR, or a capture/upload ending): the state changes first; on a move
   to MUTED or ERROR the mic is closed (`close_mic`, before any fsync: P1) and all audio held is
   wiped (`wipe`, P4), then the ledger and the light follow. A failure there means ERROR. A capture
   or upload that ends normally was handed over and wiped by its caller (P2). `_close`, `fail`.
3. Only the physical control leaves MUTED (P1): `poll_control`/`switch_changed`. Its debounce (a
   mute acts on the first edge, an unmute waits debounce_ms) and its latch after a software mute
   (a switch must be seen at mute, a button pressed) are in hardware/mute.py. A voice "stop
   listening" (`voice_mute`) latches the control and is kept in state_dir across restarts until the
   control opens the mic (restart.KeptVoiceMute); simulated pins have no control, so nothing is kept.
4. ERROR is left only by `recover()`, which re-enters MUTED or LISTENING by rule 1, as the control
   says; a control that cannot be read is an ERROR too (P5).
5. The light is checked before every block while audio is kept, else every full check (`check`):
   a light lost mid-capture stops it before the next block (P2).
6. At start the gate is MUTED; `start` enters the state restart.start_state decided, with its reason.
7. Wake detection is suppressed while our own speaker plays (`suppress_wake`, any thread), unless
   an echo canceller takes the speaker's sound out of the mic first (responder.py, echo.py); a wake
   then opens a capture by rule 1 like any other.
8. Audio goes to disk only if debug recording is on, a capture is open and the ledger names the file
   first (`allow_debug_recording`, P4).
9. An upload (P3): `begin_upload` by rule 1; `allow_send(n)` says yes only while UPLOADING with the
   light still confirmed, and counts the bytes; `end_upload` ledgers destination, bytes and seconds
   (called once the uplink has passed the stream on, so the light is on while it does). An upload cut
   off by a mute or an error is wiped and ledgered with the bytes allowed so far.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from tallylight.errors import TallylightError
from tallylight.pcm import BYTES_PER_SECOND

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


def _nothing(*_: Any) -> None:
    pass


class PrivacyGate:
    """Owns the privacy state. `indicator.show(state, recording=...)` and `indicator.check()` raise
    if the light cannot be driven or confirmed; `ledger.append(...)` raises unless durable.
    `control` is the physical mute control (hardware/mute.py), None where there is none (`tallylight
    listen` reads files); `kept` keeps a voice mute across restarts (restart.KeptVoiceMute)."""

    def __init__(self, indicator, ledger, *, close_mic: Callable[[str], None] = _nothing,
                 wipe: Callable[[], None] = _nothing, on_change: Callable[[State, State, str], None] = _nothing,
                 control=None, kept=None, debug_recording: bool = False, clock: Callable[[], float] = time.monotonic):
        self._indicator, self._ledger, self._clock = indicator, ledger, clock
        self._close_mic, self._wipe, self._on_change = close_mic, wipe, on_change
        self._control, self._kept = control, kept
        self.debug_recording = debug_recording
        self._speaker_playing = threading.Event()
        self._upload: tuple[str, int] | None = None  # (destination, bytes allowed so far)
        self.state = State.MUTED
        self.error_reason = ""
        self._since = clock()
        try:  # the mic starts closed: show it (rule 6); if even that fails we start in ERROR
            indicator.show(State.MUTED)
        except Exception as e:
            self.fail(_why(e))

    # -- what the rest asks ---------------------------------------------------------------------
    @property
    def mic_open_allowed(self) -> bool:
        return self.state in _OPEN

    @property
    def capturing(self) -> bool:
        return self.state is State.CAPTURING

    @property
    def uploading(self) -> bool:
        return self.state is State.UPLOADING

    @property
    def wake_suppressed(self) -> bool:
        return self._speaker_playing.is_set()

    def suppress_wake(self, playing: bool) -> None:
        """Rule 7. From the reply speaker's thread: it starts or stops playing."""
        (self._speaker_playing.set if playing else self._speaker_playing.clear)()

    # -- start and the physical control (rules 3, 4, 6) --------------------------------------------
    def start(self, muted: bool, reason: str) -> None:
        if self._kept is not None and self._kept.held:
            muted, reason = True, "at start: muted by 'stop listening' before this start"
            if self._control is not None:
                self._control.force_muted()
            self.note("voice_mute_kept", reason="'stop listening' before the restart; the mute control unmutes")
        if self.state is State.MUTED:
            self._after_closing(State.MUTED, reason) if muted else self._open(State.LISTENING, reason)

    def poll_control(self) -> None:
        """Ask the physical control; act on a change. An unreadable control fails closed (P5)."""
        if self._control is not None:
            try:
                change = self._control.poll()
            except Exception as e:
                self.fail(_why(e))
                return
            if change is not None:
                self.switch_changed(change)

    def switch_changed(self, muted: bool) -> None:
        if muted:
            if self.state is not State.MUTED:
                self._close(State.MUTED, "mute control")
        elif self.state is State.MUTED and self._open(State.LISTENING, "mute control") and self._kept is not None:
            self._kept.end()  # the control opened the mic: a kept voice mute is over

    def mute(self, reason: str) -> None:
        """Mute from software (shutdown). Never unmutes."""
        if self.state is not State.MUTED:
            self._close(State.MUTED, reason)

    def voice_mute(self) -> None:
        """"stop listening": mute, latch the control, keep the mute across restarts (rule 3)."""
        if self._control is not None:
            self._control.force_muted()
        keep = self._kept.keep if self._kept is not None else _nothing
        if self.state in _OPEN:
            self._close(State.MUTED, "voice command", keep=keep)
        else:
            keep()

    def recover(self, switch_muted: bool | None = None) -> bool:
        """ERROR -> MUTED or LISTENING, as the control says (or `switch_muted` without one)."""
        if self.state is not State.ERROR:
            return True
        if self._control is not None:
            try:
                self._control.poll()
            except Exception as e:  # still cannot be read
                self.fail(_why(e))
                return False
            switch_muted = self._control.muted
        # Not "recovered": nothing is known to work again until the mic has opened (the daemon says so).
        opened = self._open(State.MUTED if switch_muted else State.LISTENING, "retrying after the error")
        if opened and self.state is State.LISTENING and self._kept is not None:
            self._kept.end()
        return opened

    def check(self, full: bool) -> None:
        """Rule 5, before each block is read: the light (every block while audio is kept), and on a
        full check the control too."""
        if full or self.state in (State.CAPTURING, State.UPLOADING):
            try:
                self._indicator.check()
            except Exception as e:
                self.fail(_why(e))
                return
        if full:
            self.poll_control()

    # -- capture, debug recording, upload (rules 8, 9) -----------------------------------------------
    def begin_capture(self) -> bool:
        """LISTENING -> CAPTURING after a wake word. True only if the light is confirmed on and the
        ledger written; the caller must not keep any audio past the wake detector otherwise."""
        return self.state is State.LISTENING and self._open(State.CAPTURING, "wake word")

    def end_capture(self, *, duration_s: float, handed_to: str, end: str) -> None:
        """CAPTURING -> LISTENING. Call only after the audio was handed over and the buffer wiped."""
        if self.state is State.CAPTURING:
            self._close(State.LISTENING, "capture handed over",
                        record=("capture", {"duration_s": round(duration_s, 3), "handed_to": handed_to, "end": end}))

    def allow_debug_recording(self, file: str, duration_s: float) -> bool:
        """True: write this capture to `file` now; the ledger already names it."""
        if not (self.debug_recording and self.capturing):
            return False
        self.note("debug_recording", file=file, duration_s=round(duration_s, 3))
        return self.capturing  # a ledger failure failed closed

    def begin_upload(self, destination: str) -> bool:
        if self.state in (State.LISTENING, State.CAPTURING) and self._open(State.UPLOADING, f"upload to {destination}"):
            self._upload = (destination, 0)
            return True
        return False

    def allow_send(self, nbytes: int) -> bool:
        """True: send these `nbytes` now (they are counted as sent); False: send nothing."""
        if self.state is not State.UPLOADING or self._upload is None:
            return False
        try:
            self._indicator.check()  # P3: the upload light is still confirmed, or nothing leaves
        except Exception as e:
            self.fail(_why(e))
            return False
        self._upload = (self._upload[0], self._upload[1] + nbytes)
        return True

    def end_upload(self, destination: str, nbytes: int, *, end: str = "finished", forwarded: int | None = None) -> None:
        """UPLOADING -> LISTENING, `nbytes` sent to `destination`, its audio handed over and wiped. `forwarded`:
        what the uplink says it passed on (never more than was sent)."""
        if self.state is not State.UPLOADING or self._upload is None:
            return
        to, allowed = self._upload
        if destination != to or nbytes > allowed or (forwarded or 0) > nbytes:
            self.fail(f"the upload to {destination} reports {nbytes} bytes ({forwarded} passed on); {allowed} were "
                      f"allowed to {to}")
            return
        self._upload = None
        record = {"destination": to, "bytes": nbytes, "duration_s": round(nbytes / BYTES_PER_SECOND, 3), "end": end}
        if forwarded is not None:
            record["forwarded"] = forwarded
        self._close(State.LISTENING, "upload finished", record=("upload", record))

    def note(self, event: str, **fields: Any) -> None:
        """Ledger an event that is not a state change. On failure the gate enters ERROR."""
        try:
            self._ledger.append(event, **fields)
        except Exception as e:
            self.fail(_why(e))

    # -- failure ------------------------------------------------------------------------------------
    def fail(self, reason: str) -> None:
        """Enter ERROR: audio stops now (rule 2); the light and the ledger say why if they can."""
        self.error_reason = reason
        if self.state is State.ERROR:
            return
        old, self.state = self.state, State.ERROR
        _LOG.error("microphone closed: %s", reason)
        problem = self._stop_audio(old, "error")
        self._on_change(old, self.state, reason)
        for step in (lambda: self._indicator.show(State.ERROR),
                     lambda: self._ledger.append("state", **self._state_fields(old, State.ERROR, reason))):
            try:
                step()
            except Exception as e:  # best effort: we are already failing closed
                _LOG.error("while failing closed: %s", e)
        self._since = self._clock()
        if problem:
            self.error_reason = f"{reason}; {problem}"

    # -- the two kinds of transition ---------------------------------------------------------------
    def _open(self, new: State, reason: str) -> bool:
        """Rule 1: light, then ledger, then state."""
        old = self.state
        try:
            self._indicator.show(new, recording=self.debug_recording and new is State.CAPTURING)
            self._ledger.append("state", **self._state_fields(old, new, reason))
        except Exception as e:  # any failure to show or record means no audio: fail closed
            self.fail(_why(e))
            return False
        self.state = new
        self._since = self._clock()
        self._on_change(old, new, reason)
        return True

    def _close(self, new: State, reason: str, record: tuple[str, dict] | None = None,
               keep: Callable[[], None] = _nothing) -> None:
        """Rule 2: state, then mic closed and audio wiped, then ledger, then light."""
        old, self.state = self.state, new
        problem = self._stop_audio(old, reason) if new is not State.LISTENING else None
        keep()  # a voice mute is durable before the ledger records it: a power cut cannot lose it
        self._on_change(old, new, reason)
        self._after_closing(old, reason, record)
        if problem:
            self.fail(problem)

    def _stop_audio(self, old: State, reason: str) -> str | None:
        """To MUTED or ERROR: close the mic, wipe all audio, ledger a cut-off upload. The problem, if any."""
        problem = None
        for what, step in (("close the microphone", lambda: self._close_mic(reason)), ("wipe the audio", self._wipe)):
            try:
                step()
            except Exception as e:  # the state already lets no audio flow; say why and fail closed
                _LOG.error("could not %s (%s): %s", what, old.value, _why(e))
                problem = problem or f"could not {what}: {_why(e)}"
        if self._upload is not None:
            to, sent = self._upload
            self._upload = None
            try:
                self._ledger.append("upload", destination=to, bytes=sent, duration_s=round(sent / BYTES_PER_SECOND, 3),
                                    end=f"cut off: {reason}")
            except Exception as e:
                problem = problem or _why(e)
        return problem

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
