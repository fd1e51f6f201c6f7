"""Acting on what was heard: commands, spoken replies, sounds and timer alarms.

The audio thread hands events to `handle()` and calls `poll()` once per block; neither blocks. Actions
run on one worker thread (a `run` program may take seconds), replies play on the speaker's own
thread, and anything that touches the privacy state (the voice "stop listening") comes back to the
audio thread through `poll()`, which calls `voice_mute`. While the speaker plays, wake detection is
suppressed so it cannot wake itself with its own replies.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from tallylight.config import Config
from tallylight.events import Event, IntentMatched, NoMatch, WakeDetected

_LOG = logging.getLogger(__name__)

ALARM_REPEATS = 10  # ~25 s of alarm unless "stop" or "cancel the timer" is heard between rings


class Responder:
    def __init__(self, cfg: Config, pipeline, *, voice_mute: Callable[[], None], pin_factory: Any = None,
                 speaker: Any = None, runner: Any = None):
        from tallylight.actions import ActionRunner
        from tallylight.reply import Speaker

        self._pipeline = pipeline
        self._voice_mute = voice_mute
        self.runner = runner or ActionRunner(cfg.actions, pin_factory=pin_factory)
        self.speaker = speaker or Speaker(cfg.reply, on_start=self._suppress_wake, on_end=self._allow_wake)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tallylight-actions")
        self._pending: list[Future] = []
        self._alarm_left = 0
        self._closed = False

    def _suppress_wake(self) -> None:
        self._pipeline.wake_suppressed = True
        _LOG.info("speaker playing: wake detection suppressed")

    def _allow_wake(self) -> None:
        self._pipeline.wake_suppressed = False
        _LOG.info("speaker done: wake detection back on")

    def handle(self, event: Event) -> None:
        """Audio thread: react to one pipeline event without blocking."""
        if isinstance(event, WakeDetected):
            self.speaker.sound("wake")
        elif isinstance(event, NoMatch):
            self.speaker.sound("no_match")
        elif isinstance(event, IntentMatched) and event.match is not None:
            self._pending.append(self._pool.submit(self.runner.perform, event.match))

    def poll(self) -> None:
        """Audio thread: apply finished actions, ring due timers."""
        if self._pending:
            done = [f for f in self._pending if f.done()]
            self._pending = [f for f in self._pending if not f.done()]
            for f in done:
                self._apply(f.result())
        if self.runner.timers.tick():
            self._alarm_left = ALARM_REPEATS
        if self._alarm_left and not self.speaker.speaking:
            self._alarm_left -= 1
            self.speaker.sound("alarm")

    def _apply(self, result) -> None:
        if result.stop:
            self._alarm_left = 0
            self.speaker.stop()
        if result.mute:
            self._voice_mute()
        if result.reply:
            _LOG.info("reply: %s", result.reply)
            self.speaker.say(result.reply)
        if not result.ok:
            _LOG.warning("action failed: %s", result.detail)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.speaker.close()
        self.runner.close()
