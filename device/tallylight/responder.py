"""Acting on what was heard: commands, spoken replies, sounds and timer alarms.

The audio thread hands events to `handle()` and calls `poll()` once per block (and while the daemon
waits out an error); neither blocks. Most actions run on one worker thread (a `run` program may take
seconds) and their results are applied in `poll()`. "stop listening" and "stop" only set flags,
and are applied at once on the audio thread: "stop listening" must never wait behind a slow program
with the mic open. Replies play on the speaker's own thread.

With echo cancellation (`[frontend] echo_cancel`, the default) the speaker publishes what it plays
to the echo canceller, which takes it out of the mic: wake detection stays on while it plays, and
"okay nabu" said over a reply or the alarm cuts it short (barge-in) and opens a capture as always.
Without it, wake detection is suppressed while the speaker plays, so it cannot wake itself with its
own replies; a timer's alarm rings in short bursts with ALARM_GAP_S of quiet between them, in which
"okay nabu, stop" is heard, and the wake chime never plays over a command.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tallylight.actions import ACTIONS, ActionRunner
from tallylight.config import Config
from tallylight.events import Event, IntentMatched, NoMatch, WakeDetected
from tallylight.hardware.mute import spoken_name
from tallylight.reply import Speaker

_LOG = logging.getLogger(__name__)

ALARM_REPEATS = 10  # rings of ~2.3 s: about 45 s of alarm, unless "stop" or "cancel the timer" is heard
# Quiet between two rings, with wake detection on: time to say "okay nabu" (about 1 s) and be heard.
# No ring starts while a capture is open (the command after the wake word must not be drowned).
ALARM_GAP_S = 2.0
ALARM_RING_S = 2.3  # one ring of reply.make_sounds()["alarm"]
NOT_CONNECTED = "Home Assistant is not connected."
# Actions whose spec says `immediate` (mute, stop: they only set flags) are applied on the audio
# thread as soon as they are heard. Not timer_cancel: it must not overtake a "set a timer" still
# queued behind a slow program; while an alarm rings it is handled at once, in handle.

# The wake chime waits this much audio after the detection, and plays only if the capture has heard
# no speech by then. The detector fires 0.25-0.6 s after "okay nabu" ends, so someone saying the
# command in the same breath is already speaking: a chime then plays over the command and, with the
# speaker beside the mic, reaches the recognizer (3 of 7 one-breath commands failed that way). Someone
# who paused after the wake word still gets "I'm listening" (and the capture light says so at once).
WAKE_CHIME_WAIT_S = 0.3


class Responder:
    def __init__(self, cfg: Config, pipeline, *, voice_mute: Callable[[], None], pin_factory: Any = None,
                 speaker: Any = None, runner: Any = None, clock: Callable[[], float] = time.monotonic,
                 to_home_assistant: Callable[[str], bool] | None = None, reference: Any = None):
        self._pipeline = pipeline
        # With an echo canceller fed from `reference` (echo.ReferenceRing), the mic no longer hears
        # the speaker: no wake suppression while it plays, and a wake word cuts it short.
        self.echo_cancel = reference is not None
        self._voice_mute = voice_mute
        # Hands text to the uplink (the daemon's UplinkPort): False when it could not go. None: no Home Assistant.
        self._to_home_assistant = to_home_assistant
        self.runner = runner or ActionRunner(cfg.actions, pin_factory=pin_factory, mute_control=spoken_name(cfg.mute))
        self.speaker = speaker or Speaker(cfg.reply, on_start=self._suppress_wake, on_end=self._allow_wake,
                                          reference=reference)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tallylight-actions")
        self._pending: list[Future] = []
        self._clock = clock
        self._alarm_left = 0  # rings still to come
        self._ringing = False  # from a timer's end until its last ring has played, or it is stopped
        self._ring_now = False
        self._quiet_since: float | None = None  # when the speaker last went quiet during an alarm
        self._chime_due: float | None = None  # audio time (pipeline.t) when a pending wake chime may play
        self._closed = False

    def _suppress_wake(self) -> None:
        if self.echo_cancel:
            _LOG.info("speaker playing: its echo is cancelled, wake detection stays on")
            return
        self._pipeline.gate.suppress_wake(True)
        _LOG.info("speaker playing: wake detection suppressed")

    def _allow_wake(self) -> None:
        if self.echo_cancel:
            return
        self._pipeline.gate.suppress_wake(False)
        _LOG.info("speaker done: wake detection back on")

    def handle(self, event: Event) -> None:
        """Audio thread: react to one pipeline event without blocking."""
        if isinstance(event, WakeDetected):
            barge_in = self.speaker.speaking
            if barge_in:
                # Barge-in (only possible with echo cancellation): the owner talks over a reply or a
                # ring; cut it so the command is heard. An alarm rings on after the capture unless
                # the command stops it.
                _LOG.info("wake word over the speaker: playback cut")
                self.speaker.stop()
            # "I'm listening" only when it is true: the gate may have refused the capture (a light
            # that cannot be confirmed on, P5), and then nothing is being listened to. With echo
            # cancellation the chime comes at once, even over a command said in the same breath; after
            # a barge-in the sound cut short (and the light) says it heard, and no chime covers "stop".
            if self._pipeline.gate.capturing and not barge_in:
                self._chime_due = self._pipeline.t + (0.0 if self.echo_cancel else WAKE_CHIME_WAIT_S)
        elif isinstance(event, NoMatch):
            self.speaker.sound("no_match")
        elif isinstance(event, IntentMatched) and event.match is not None:
            action = event.match.command.action
            if action == "timer_cancel" and self._ringing:
                # The timer that rang is the one meant; it has already ended, so there is nothing
                # for the runner to cancel (other timers keep running): silence its alarm.
                _LOG.info("alarm stopped by %r", event.match.command.name)
                self._stop_alarm()
            elif action in ACTIONS and ACTIONS[action].immediate:
                self._apply(self.runner.perform(event.match))
            else:
                self._pending.append(self._pool.submit(self.runner.perform, event.match))

    def poll(self) -> None:
        """Audio thread: apply finished actions, ring due timers, play a wake chime that is due."""
        if self._chime_due is not None:
            self._wake_chime()
        if self._pending:
            done = [f for f in self._pending if f.done()]
            self._pending = [f for f in self._pending if not f.done()]
            for f in done:
                self._apply(f.result())
        if self.runner.timers.tick():
            self._alarm_left = ALARM_REPEATS
            self._ringing = True
            self._ring_now = True  # the first ring at once
        if not self._ringing:
            return
        if self.speaker.speaking:  # a ring, or a reply: the quiet starts when it is over
            self._quiet_since = None
            return
        if self._pipeline.gate.capturing:
            return  # no ring over a command being spoken, not even the first
        now = self._clock()
        if not self._alarm_left:
            self._ringing = False  # the last ring has played
        elif self._ring_now:
            self._ring()
        elif self._quiet_since is None:
            self._quiet_since = now
        elif now - self._quiet_since >= ALARM_GAP_S:
            self._ring()

    def ring(self, rings: int) -> None:
        """Ring the alarm `rings` times (a Home Assistant timer), stopped by "stop" like a local one."""
        self._alarm_left = max(self._alarm_left, rings)
        self._ringing = True
        self._ring_now = True

    def _wake_chime(self) -> None:
        over_speech = self._pipeline.endpointer.speech_started and not self.echo_cancel
        if not self._pipeline.gate.capturing or over_speech:
            self._chime_due = None  # the capture is over, or the command is being spoken: no chime over it
            _LOG.debug("no wake chime: the command came at once")
        elif self._pipeline.t >= self._chime_due:
            self._chime_due = None
            self.speaker.sound("wake")

    def _ring(self) -> None:
        self._alarm_left -= 1
        self._ring_now = False
        self._quiet_since = None
        self.speaker.sound("alarm")

    def _stop_alarm(self) -> None:
        self._alarm_left = 0
        self._ringing = False
        self.speaker.stop()

    def _apply(self, result) -> None:
        if result.stop:
            self._stop_alarm()
        if result.mute:
            self._voice_mute()
        if result.to_home_assistant is not None:
            if self._to_home_assistant is None:
                _LOG.warning("a home_assistant command was heard, but [home_assistant] enabled is false")
                self.speaker.say("Home Assistant is not set up.")
            elif not self._to_home_assistant(result.to_home_assistant):
                self.speaker.say(NOT_CONNECTED)
        if result.reply:
            _LOG.info("reply: %s", result.reply)
            self.speaker.say(result.reply)
        if not result.ok:
            _LOG.warning("action failed: %s", result.detail)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.speaker.stop()  # silence first: an action still running below must not keep the alarm going
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.speaker.close()
        self.runner.close()
