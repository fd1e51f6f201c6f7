"""`tallylight run`: the audio daemon's loop.

Concurrency: one owner. The main thread owns the microphone, the gate, the pipeline, the light and
the ledger, and runs the loop below. Other threads only *signal* it: gpiozero's callback thread
records mute-control edges (MuteControl.edge_event), the reply speaker's thread sets
`pipeline.wake_suppressed`, and SIGTERM/SIGINT set `_stopping`. Each loop turn reads one audio block
(20 ms by default) and then asks the mute control again, so a mute edge closes the mic within one
block (P1); a block read while the edge happened is dropped unprocessed.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Sequence

from tallylight import __version__
from tallylight.config import Config
from tallylight.errors import AudioError, EngineError, HardwareError, LedgerError, TallylightError
from tallylight.events import Event
from tallylight.gate import PrivacyGate, State
from tallylight.ledger import Ledger

_LOG = logging.getLogger(__name__)

# Blocks between full checks of the switch level and the light (5 x 20 ms = 100 ms). Edges are not
# waited for: gpiozero's callback sets the mute control's edge_event, which ends a read at once.
_FULL_CHECK_EVERY = 5

# In daemon.state_dir while a "stop listening" holds: only the physical control ends it, also across
# restarts (see Daemon.voice_mute).
VOICE_MUTE_FILE = "voice-muted"


def build_pipeline(cfg: Config, gate: PrivacyGate, consumer=None):
    """The same pipeline for the daemon and for `tallylight listen`."""
    from tallylight.capture import DebugRecorder
    from tallylight.pipeline import Pipeline
    from tallylight.vad import Endpointer, make_voice_detector
    from tallylight.wake import make_wake_detector

    wake = make_wake_detector(cfg.wake)
    endpointer = Endpointer(make_voice_detector(cfg.capture), cfg.capture.end_silence_s, cfg.capture.no_speech_s,
                            cfg.capture.max_s, cfg.audio.block_ms)
    recorder = DebugRecorder(cfg.debug.record_dir) if cfg.debug.record_dir else None
    return Pipeline(gate, wake, endpointer, cfg.capture, consumer=consumer, recorder=recorder)


def last_known_muted(ledger: Ledger) -> bool | None:
    """Whether the mic was muted when the daemon last stopped (for mute.at_start = "last")."""
    last = ledger.last_entry
    if not last:
        return None
    state = last.get("state_before") if last.get("event") == "stop" else last.get("state")
    return None if state is None else state == State.MUTED.value


def _write_durably(path, text: str) -> None:
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


class Daemon:
    """Brings the parts up, runs the loop, fails closed, and shuts down cleanly."""

    def __init__(self, cfg: Config, *, pyaudio_module: Any = None, pin_factory: Any = None, notifier: Any = None,
                 consumer_factory: Callable[[], Any] | None = None, on_event: Callable[[Event], None] | None = None,
                 source_factory: Callable[[Any], Any] | None = None, respond: bool = False):
        self.cfg = cfg
        self._pyaudio_module = pyaudio_module
        self._pin_factory = pin_factory
        self._consumer_factory = consumer_factory
        self._on_event = on_event
        # The audio seam: MicSource over PyAudio by default; anything with open/read/close/is_open.
        self._source_factory = source_factory
        self._respond = respond  # act on commands and speak replies (off for tests of the audio path)
        self.responder = None
        self._ready_sent = False
        self._blocks_since_check = _FULL_CHECK_EVERY
        if notifier is None:
            from tallylight.notify import Notifier
            notifier = Notifier()
        self.notifier = notifier
        self._stopping = threading.Event()
        self.ledger: Ledger | None = None
        self.indicator = None
        self.gate: PrivacyGate | None = None
        self.mute = None
        self.mic = None
        self.pipeline = None
        self.blocks_read = 0
        self.mute_latencies: list[float] = []  # edge -> stream closed, seconds (for scripts/bench)
        self._voice_mute_file = cfg.state_dir / VOICE_MUTE_FILE
        self._voice_muted = False
        self._physical_control = True  # False with simulated pins (gpio.pin_factory = "mock")

    # -- lifecycle -----------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        """Safe from another thread; never from a signal handler (it sets Events: tallylight.signals)."""
        self._stopping.set()
        if self.mute is not None:
            self.mute.edge_event.set()

    def install_signal_handlers(self) -> None:
        from tallylight.signals import call_on_signals

        call_on_signals(self.request_stop)  # SIGTERM, SIGINT

    def run(self) -> int:
        # Hand the interpreter to a waiting thread within 1 ms rather than 5: gpiozero's edge callback
        # must get in while the audio thread is busy, so a mute is seen at once (P1).
        sys.setswitchinterval(0.001)
        try:
            self._bring_up()
            self._loop()
            return 0
        finally:
            self._shut_down()

    def _bring_up(self) -> None:
        """Parts that must work before anything else. A failure here is a one-line error and exit:
        systemd restarts us with backoff, and no mic was ever opened."""
        from tallylight.audio.device import MicSource
        from tallylight.hardware.indicator import make_indicator
        from tallylight.hardware.mute import MuteControl
        from tallylight.hardware.pins import make_pin_factory
        from tallylight.wake import wake_phrase

        cfg = self.cfg
        self.ledger = Ledger(cfg.state_dir / "ledger.jsonl")
        # A ledger set aside as damaged says nothing of how we stopped: start muted then (a button's
        # mute.at_start = "last"), rather than open the mic nobody asked for.
        last_muted = True if self.ledger.restarted else last_known_muted(self.ledger)
        self.ledger.append("start", version=__version__, pid=os.getpid())
        # No GPIO means no way to read the mute control: refuse (P5) unless the owner chose the
        # simulated pins on purpose (gpio.pin_factory = "mock", for trying tallylight on a laptop).
        factory = self._pin_factory or make_pin_factory(cfg.gpio.pin_factory)
        self.indicator = make_indicator(cfg.indicator, pin_factory=factory, wake_phrase=wake_phrase(cfg.wake))
        self.gate = PrivacyGate(self.indicator, self.ledger, debug_recording=bool(cfg.debug.record_dir))
        if cfg.debug.record_dir:
            _LOG.warning("DEBUG RECORDING IS ON: every capture is written to %s (debug.record_dir)", cfg.debug.record_dir)
        start_muted = {"muted": True, "listening": False}.get(cfg.mute.at_start, last_muted if last_muted is not None else False)
        self.mute = MuteControl(cfg.mute, pin_factory=factory, initially_muted=start_muted)
        self._physical_control = not (self._pin_factory is None and cfg.gpio.pin_factory == "mock")
        if self._voice_mute_file.exists() and not self._physical_control:
            # Simulated pins have no control to unmute with: a kept voice mute would never end.
            _LOG.warning("simulated GPIO: ignoring the voice mute kept from before this start")
            self._voice_mute_over()
        elif self._voice_mute_file.exists():
            # "stop listening" was said before this start: only the physical control unmutes (P1),
            # whatever mute.at_start says and wherever a switch stands.
            self._voice_muted = True
            self.mute.force_muted()
            self.gate.note("voice_mute_kept", reason="'stop listening' before the restart; the mute control unmutes")
            _LOG.warning("muted by voice before this start: press the mute button or move the switch to mute and back "
                         "(kept in %s)", self._voice_mute_file)
        if not self._physical_control:
            _LOG.warning("simulated GPIO (gpio.pin_factory = 'mock'): there is no physical mute control")
            if cfg.mute.control == "switch":
                # After MuteControl set the pull-up: close the simulated switch ("listening").
                pin = factory.pin(cfg.mute.pin)
                pin.drive_low() if cfg.mute.pull_up else pin.drive_high()
        consumer = self._consumer_factory() if self._consumer_factory else None
        self.pipeline = build_pipeline(cfg, self.gate, consumer)
        if self._respond:
            from tallylight.responder import Responder

            self.responder = Responder(cfg, self.pipeline, voice_mute=self.voice_mute, pin_factory=factory)
        if self._source_factory is not None:
            self.mic = self._source_factory(cfg.audio)
        else:
            self.mic = MicSource(cfg.audio, pyaudio_module=self._pyaudio_module, interrupt=self.mute.edge_event)
        self._apply_switch(self.mute.muted)

    def _shut_down(self) -> None:
        """Mic closed, audio wiped, light off, ledger flushed; safe after a partial bring-up."""
        self.notifier.stopping()
        state_before = self.gate.state.value if self.gate else None
        if self.pipeline is not None:
            self.pipeline.forget()
        if self.gate is not None:
            self.gate.mute("shutdown")
        if self.mic is not None:
            self.mic.close()
        if self.ledger is not None:
            try:
                self.ledger.append("stop", reason="shutdown", state_before=state_before)
            except TallylightError as e:
                _LOG.error("%s", e)
        for part in (self.responder, self.pipeline, self.mute, self.indicator, self.ledger):
            if part is not None:
                try:
                    part.close()
                except Exception as e:  # keep closing the rest
                    _LOG.error("while closing %s: %s", type(part).__name__, e)

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            self.notifier.watchdog()
            if self.responder is not None:
                self.responder.poll()
            try:
                if self.gate.state is State.ERROR:
                    self._recover()
                else:
                    self._turn()
                    backoff = 0.5
            except (AudioError, HardwareError, LedgerError, EngineError) as e:
                self._fail(str(e))
            self._obey_gate()
            if self.gate.state is State.ERROR:
                self._wait(backoff)
                backoff = min(backoff * 2, self.cfg.daemon.retry_max_s)

    def _turn(self) -> None:
        self._blocks_since_check += 1
        if self._blocks_since_check >= _FULL_CHECK_EVERY or not self.gate.mic_open_allowed:
            # Every ~100 ms even without an edge: catch a missed edge, an unreadable switch (P5)
            # and a light whose blink thread died. Edges themselves are handled at once, below.
            self._blocks_since_check = 0
            self.indicator.check()
            self._poll_switch()
        elif self.gate.capturing:
            # P2 holds for the whole capture, not only its first sample: a light lost mid-capture
            # stops it before the next block is read.
            self.indicator.check()
        if not self.gate.mic_open_allowed:
            self._close_mic()
            if not self._ready_sent:
                self._ready()
            self.mute.edge_event.wait(0.05)
            return
        if not self.mic.is_open:
            if self._voice_muted:  # the gate is open, so the physical control has unmuted since
                self._voice_mute_over()
            self.mic.open()
            _LOG.info("microphone open: %s", getattr(getattr(self.mic, "device", None), "name", "the audio source"))
        block = self.mic.read()  # returns early, empty, when the mute control's edge_event is set
        if self.mute.edge_event.is_set():
            # An edge while reading: decide now; a block read across a mute edge is dropped.
            self._poll_switch()
            if not self.gate.mic_open_allowed:
                self._close_mic()
                return
        if not block:
            return
        self.blocks_read += 1
        if not self._ready_sent:
            self._ready()
        events = self.pipeline.process(block)
        if events:
            self._emit(events)

    def _ready(self) -> None:
        """READY=1 once the first block came from the open mic through the wake engine's input, or
        once we know we are muted: from then on systemd's watchdog expects us every few seconds."""
        self._ready_sent = True
        what = f"listening with {self.cfg.wake.engine} '{self.cfg.wake.model}'" if self.gate.mic_open_allowed else "muted"
        _LOG.info("ready: %s", what)
        self.notifier.ready(what)

    def _poll_switch(self) -> None:
        change = self.mute.poll()
        if change is not None:
            self._apply_switch(change)

    def _apply_switch(self, muted: bool) -> None:
        if muted:
            # P1: the stream closes before the gate records the mute: the ledger's fsync can take
            # tens of ms on a busy SD card, and less audio never waits for the record of it.
            closed_at = self._close_mic("mute control")
            if closed_at is not None and self.mute.last_edge_time is not None:
                self.mute_latencies.append(closed_at - self.mute.last_edge_time)
        self.gate.switch_changed(muted)
        if not self.gate.mic_open_allowed:
            self._close_mic()
            self.pipeline.forget()
        self._emit(self.pipeline.drain())

    def _close_mic(self, why: str = "") -> float | None:
        """Close the stream if it is open; returns when it was closed (time.monotonic), else None."""
        if not self.mic.is_open:
            return None
        # stop() keeps PortAudio initialised: closing takes ~1-2 ms instead of ~5-20 ms.
        (self.mic.stop if hasattr(self.mic, "stop") else self.mic.close)()
        closed_at = time.monotonic()
        _LOG.info("microphone closed (%s)", why or self.gate.state.value)
        return closed_at

    def voice_mute(self) -> None:
        """The "stop listening" command: mute now; only the physical control unmutes, also after a
        restart (a crash, the watchdog, a power cut): the mute is kept in state_dir until then."""
        self.mute.force_muted()
        self._close_mic("voice command")
        self.pipeline.forget()
        if self._physical_control:
            # Kept before the gate records it: a power cut between the two must not lose the mute.
            self._voice_muted = True
            try:
                _write_durably(self._voice_mute_file, "muted by the voice command 'stop listening'\n")
            except OSError as e:
                _LOG.error("the voice mute may not survive a restart: cannot write %s: %s (check daemon.state_dir)",
                           self._voice_mute_file, e.strerror or e)
        self.gate.mute("voice command")

    def _voice_mute_over(self) -> None:
        """The physical control opened the mic: a voice mute from before a restart no longer holds."""
        self._voice_muted = False
        try:
            self._voice_mute_file.unlink(missing_ok=True)
        except OSError as e:  # it stays: the next start is muted until the control is moved (fails closed)
            _LOG.error("cannot remove %s: %s", self._voice_mute_file, e.strerror or e)

    def _obey_gate(self) -> None:
        """The gate can close inside the pipeline: a ledger or light failure as a capture begins or
        ends, or a debug recording that could not be ledgered. Close the mic and wipe the audio in
        this same turn, as _fail does, rather than leave the stream open through the error backoff."""
        if self.gate.mic_open_allowed or not self.mic.is_open:
            return
        self._close_mic()
        self.pipeline.forget()
        if self.gate.state is State.ERROR:
            self.notifier.status(f"error: {self.gate.error_reason}")
        self._emit(self.pipeline.drain())

    def _fail(self, reason: str) -> None:
        self._close_mic("error")
        self.pipeline.forget()
        self.gate.fail(reason)
        self.notifier.status(f"error: {reason}")
        self._emit(self.pipeline.drain())

    def _recover(self) -> None:
        self._poll_switch_raw()
        if self.gate.recover(self.mute.muted):
            _LOG.info("recovered: %s", self.gate.state.value)
            self.notifier.status(self.gate.state.value)
        self._emit(self.pipeline.drain())

    def _poll_switch_raw(self) -> None:
        self.mute.poll()  # raises SwitchError while the control still cannot be read

    def _wait(self, seconds: float) -> None:
        """The error backoff. Timers still ring on time and replies still come (audio out only)."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < deadline:
            self.notifier.watchdog()
            if self.responder is not None:
                self.responder.poll()
            self._stopping.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def _emit(self, events: Sequence[Event]) -> None:
        for ev in events:
            _LOG.info("%s", _describe(ev))
            if self.responder is not None:
                self.responder.handle(ev)
            if self._on_event:
                self._on_event(ev)


def _describe(ev: Event) -> str:
    d = ev.to_dict()
    kind = d.pop("event")
    d.pop("t", None)
    return kind + " " + " ".join(f"{k}={v}" for k, v in d.items())
