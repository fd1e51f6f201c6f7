"""`tallylight run`: the audio daemon's loop.

Concurrency: one owner. The main thread owns the microphone, the gate, the pipeline, the light and
the ledger, and runs the loop below. Other threads only *signal* it: gpiozero's callback thread
records mute-control edges (MuteControl.edge_event), the reply speaker's thread tells the gate it
plays (`gate.suppress_wake`), and SIGTERM/SIGINT set `_stopping`. Each loop turn reads one audio
block (20 ms by default) and then has the gate ask the mute control again, so a mute edge closes the
mic within one block (P1); a block read while the edge happened is dropped unprocessed. What may
flow is decided in gate.py; this loop opens the mic when the gate allows and reads.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tallylight import __version__
from tallylight.choices import HomeAssistantMode, MuteControlKind
from tallylight.config import Config
from tallylight.errors import AudioError, EngineError, HardwareError, LedgerError, TallylightError
from tallylight.events import Event, StateChanged
from tallylight.gate import PrivacyGate, State
from tallylight.ledger import Ledger
from tallylight.restart import CLEAN_STOP, KeptVoiceMute, physical_control, place_simulated_switch, start_state
from tallylight.statedir import StateDirLock

_LOG = logging.getLogger(__name__)

# Blocks between full checks of the switch level and the light (5 x 20 ms = 100 ms). Edges are not
# waited for: gpiozero's callback sets the mute control's edge_event, which ends a read at once.
_FULL_CHECK_EVERY = 5



def build_pipeline(cfg: Config, make_gate: Callable[..., PrivacyGate], consumer=None, reference=None):
    """The same pipeline for the daemon and for `tallylight listen`. `make_gate(wipe=, on_change=)`
    builds its gate: the gate calls the pipeline's wipe and hears of its state changes. With
    `reference` (the speaker's echo.ReferenceRing), an echo canceller fed by it comes first."""
    from tallylight.capture import DebugRecorder
    from tallylight.ears import make_wake_detector
    from tallylight.pipeline import Pipeline
    from tallylight.vad import Endpointer, make_voice_detector

    wake = make_wake_detector(cfg.wake, cfg.frontend)
    endpointer = Endpointer(make_voice_detector(cfg.capture), cfg.capture.end_silence_s, cfg.capture.no_speech_s,
                            cfg.capture.max_s, cfg.audio.block_ms)
    recorder = DebugRecorder(cfg.debug.record_dir) if cfg.debug.record_dir else None
    echo = None
    if reference is not None:
        from tallylight.echo import EchoCanceller

        echo = EchoCanceller(reference, tail_ms=cfg.frontend.echo_tail_ms, delay_ms=cfg.frontend.echo_delay_ms)
    return Pipeline(make_gate, wake, endpointer, cfg.capture, consumer=consumer, recorder=recorder, echo=echo)


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
        self.uplink = None  # the UplinkPort, only with [home_assistant] enabled: otherwise no socket at all
        self._names_wanted = None  # Home Assistant's names not built into the grammar yet
        self._rebuild: threading.Thread | None = None
        self._rebuilt = None  # (names, the consumer built with them), to swap in between captures
        self.exposed_names: tuple = ((), ())  # the names of Home Assistant's in the grammar in use
        self._ready_sent = False
        self._blocks_since_check = _FULL_CHECK_EVERY
        if notifier is None:
            from tallylight.notify import Notifier
            notifier = Notifier()
        self.notifier = notifier
        self._stopping = threading.Event()
        self.state_lock = StateDirLock(cfg.state_dir)  # one daemon per state_dir: held from bring-up to shutdown
        self.ledger: Ledger | None = None
        self.indicator = None
        self.gate: PrivacyGate | None = None
        self.mute = None
        self.key_button = None  # mute.control = "key": the terminal's key on the simulated button
        self._reopening = False  # out of an error into LISTENING, the microphone not open again yet
        self.mic = None
        self.pipeline = None
        self.blocks_read = 0
        self.mute_latencies: list[float] = []  # edge -> stream closed, seconds (for scripts/bench)

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
        ending = "start failed"  # the stop entry's reason: only a clean stop may reopen the mic at start
        try:
            self._bring_up()
            ending = "the loop crashed"
            self._loop()
            ending = CLEAN_STOP
            return 0
        finally:
            self._shut_down(ending)

    def _bring_up(self) -> None:
        """Parts that must work before anything else. A failure here is a one-line error and exit:
        systemd restarts us with backoff, and no mic was ever opened."""
        from tallylight.audio.device import MicSource
        from tallylight.hardware.indicator import make_indicator
        from tallylight.hardware.mute import MuteControl
        from tallylight.hardware.pins import make_pin_factory
        from tallylight.wake import wake_phrase

        cfg = self.cfg
        self.state_lock.acquire()  # first: a second daemon must not touch the ledger at all
        self.ledger = Ledger(cfg.state_dir / "ledger.jsonl")
        physical = physical_control(cfg, self._pin_factory)
        start = start_state(cfg.mute, self.ledger.last_entry, ledger_set_aside=self.ledger.restarted, physical=physical)
        self.ledger.append("start", version=__version__, pid=os.getpid())
        self.ledger.write_witness()
        # No GPIO means no way to read the mute control: refuse (P5) unless the owner chose the
        # simulated pins on purpose (gpio.pin_factory = "mock", for trying tallylight on a laptop).
        factory = self._pin_factory or make_pin_factory(cfg.gpio.pin_factory)
        key_hint = f"press {cfg.mute.key} to mute or unmute" if cfg.mute.control == MuteControlKind.KEY else ""
        self.indicator = make_indicator(cfg.indicator, pin_factory=factory, wake_phrase=wake_phrase(cfg.wake), hint=key_hint)
        if cfg.debug.record_dir:
            _LOG.warning("DEBUG RECORDING IS ON: every capture is written to %s (debug.record_dir)", cfg.debug.record_dir)
        self.mute = MuteControl(cfg.mute, pin_factory=factory, initially_muted=start.muted)
        if not physical:
            _LOG.warning("simulated GPIO (gpio.pin_factory = 'mock'): there is no physical mute control")
            place_simulated_switch(cfg.mute, factory)
        if cfg.mute.control == MuteControlKind.KEY:
            from tallylight.hardware.keyboard import KeyButton

            # Held past the debounce, as a finger holds a real button, so that a press can unmute,
            # and until the mute control has read it held (the loop may be busy for longer).
            self.key_button = KeyButton(factory.pin(cfg.mute.pin), cfg.mute.key, hold_s=cfg.mute.debounce_ms / 1000 + 0.07,
                                        pull_up=cfg.mute.pull_up, polls=lambda: self.mute.polls)
            _LOG.warning("the mute control is the %s key on this terminal (mute.control = 'key')", cfg.mute.key)
        make_gate = functools.partial(PrivacyGate, self.indicator, self.ledger, close_mic=self._close_mic,
                                      control=self.mute, kept=KeptVoiceMute(cfg.state_dir, physical),
                                      debug_recording=bool(cfg.debug.record_dir))
        consumer = self._consumer_factory() if self._consumer_factory else None
        # The speaker's sound, for the echo canceller: only where there is a speaker to hear.
        reference = None
        if self._respond and cfg.frontend.echo_cancel:
            from tallylight.echo import ReferenceRing

            reference = ReferenceRing()
        self.pipeline = build_pipeline(cfg, make_gate, consumer, reference)
        self.gate = self.pipeline.gate
        if self._respond:
            from tallylight.responder import Responder

            self.responder = Responder(cfg, self.pipeline, voice_mute=self.voice_mute, pin_factory=factory,
                                       to_home_assistant=self._to_home_assistant if cfg.home_assistant.enabled else None,
                                       reference=reference)
        if cfg.home_assistant.enabled:
            from tallylight.uplink_port import UplinkPort

            self.uplink = UplinkPort(cfg.home_assistant, self.gate, self.responder, on_names=self._names_arrived)
            self.uplink.open()
            if cfg.home_assistant.mode == HomeAssistantMode.AUDIO:
                # After the local wake word the utterance streams out, through the gate, when the uplink and
                # Home Assistant are there; otherwise it is recognized here as in text mode.
                self.pipeline.uploader = self.uplink
                _LOG.warning("Home Assistant audio mode (home_assistant.mode): after the wake word, what is said "
                             "streams to Home Assistant with the upload light on")
        if self._source_factory is not None:
            self.mic = self._source_factory(cfg.audio)
        else:
            self.mic = MicSource(cfg.audio, pyaudio_module=self._pyaudio_module, interrupt=self.mute.edge_event)
        self.gate.start(start.muted, start.reason)

    def _shut_down(self, ending: str = CLEAN_STOP) -> None:
        """Mic closed, audio wiped, light off, ledger flushed; safe after a partial bring-up."""
        self.notifier.stopping()
        state_before = self.gate.state.value if self.gate else None
        if self.gate is not None:
            self.gate.mute("shutdown")  # mic stopped, audio wiped (gate.py rule 2)
        if self.mic is not None:
            self.mic.close()
        if self.ledger is not None:
            try:
                self.ledger.append("stop", reason=ending, state_before=state_before)
                self.ledger.write_witness()
            except TallylightError as e:
                _LOG.error("%s", e)
        if self._rebuild is not None:
            self._rebuild.join(30)  # a grammar being built with Home Assistant's names
        if self._rebuilt is not None:
            self._rebuilt[1].close()
            self._rebuilt = None
        for part in (self.key_button, self.uplink, self.responder, self.pipeline, self.mute, self.indicator, self.ledger):
            if part is not None:
                try:
                    part.close()
                except Exception as e:  # keep closing the rest
                    _LOG.error("while closing %s: %s", type(part).__name__, e)
        self.state_lock.release()  # last: the ledger is closed

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            self.notifier.watchdog()
            self._poll_outputs()
            try:
                if self.gate.state is State.ERROR:
                    self._recover()
                else:
                    self._turn()
                    backoff = 0.5
            except (AudioError, HardwareError, LedgerError, EngineError) as e:
                self._fail(str(e))
            self._emit(self.pipeline.drain())
            if self.gate.state is State.ERROR:
                self._wait(backoff)
                backoff = min(backoff * 2, self.cfg.daemon.retry_max_s)

    def _poll_outputs(self) -> None:
        """Replies, timers and the uplink socket: each poll returns at once."""
        if self.responder is not None:
            self.responder.poll()
        if self.uplink is not None:
            self.uplink.poll()
            self._swap_consumer()

    # -- Home Assistant's names: the grammar rebuilt with them, off the audio thread ------------------
    def _names_arrived(self, names: tuple[str, ...], areas: tuple[str, ...]) -> None:
        """From the uplink (on this thread): build the consumer again with them, in a thread of its own (a
        recognizer takes from 0.2 s to seconds to build); the latest names win, one build at a time."""
        if self._consumer_factory is None:
            _LOG.info("names from Home Assistant not used: no recognizer is installed")
            return
        self._names_wanted = (names, areas)
        self._start_rebuild()

    def _start_rebuild(self) -> None:
        if self._names_wanted is None or (self._rebuild is not None and self._rebuild.is_alive()):
            return
        if self._rebuilt is not None:
            return  # the last one is not swapped in yet
        exposed, self._names_wanted = self._names_wanted, None

        def build() -> None:
            try:
                self._rebuilt = (exposed, self._consumer_factory(exposed=exposed))
            except Exception as e:  # noqa: BLE001 - a name that breaks the recognizer must not stop the daemon
                _LOG.error("the grammar was not rebuilt with Home Assistant's names (%s: %s): the one in use "
                           "stays", type(e).__name__, e)

        self._rebuild = threading.Thread(target=build, name="grammar-rebuild", daemon=True)
        self._rebuild.start()

    def _swap_consumer(self) -> None:
        """A rebuilt consumer replaces the old one between captures (never during one: its audio is in it)."""
        if self._rebuilt is None or self.gate.capturing:
            return
        (names, areas), new = self._rebuilt
        self._rebuilt = None
        old, self.pipeline.consumer = self.pipeline.consumer, new
        self.exposed_names = (names, areas)
        _LOG.info("grammar rebuilt with Home Assistant's %d names and %d areas", len(names), len(areas))
        if old is not None and hasattr(old, "close"):
            old.close()
        self._start_rebuild()  # names that came while this one was being built

    def _to_home_assistant(self, text: str) -> bool:
        return self.uplink is not None and self.uplink.send_text(text)

    def _turn(self) -> None:
        self._blocks_since_check += 1
        # Every ~100 ms even without an edge: catch a missed edge, an unreadable switch (P5) and a
        # light whose blink thread died. Edges themselves are handled at once, below.
        full = self._blocks_since_check >= _FULL_CHECK_EVERY or not self.gate.mic_open_allowed
        if full:
            self._blocks_since_check = 0
        self.gate.check(full)
        if not self.gate.mic_open_allowed:
            self._close_mic()  # the gate has closed it; again, in case that failed
            if not self._ready_sent:
                self._ready()
            self.mute.edge_event.wait(0.05)
            return
        if not self.mic.is_open:
            self.mic.open()
            _LOG.info("microphone open: %s", getattr(getattr(self.mic, "device", None), "name", "the audio source"))
            if self._reopening:
                self._reopening = False
                _LOG.info("recovered: listening")
                self.notifier.status(State.LISTENING.value)
        block = self.mic.read()  # returns early, empty, when the mute control's edge_event is set
        if self.mute.edge_event.is_set():
            # An edge while reading: decide now; a block read across a mute edge is dropped.
            self.gate.poll_control()
            if not self.gate.mic_open_allowed:
                return
        if not block:
            return
        t_end = time.monotonic()  # when the block's last sample came: lines it up with what the speaker played
        self.blocks_read += 1
        if not self._ready_sent:
            self._ready()
        events = self.pipeline.process(block, t_end)
        if events:
            self._emit(events)

    def _ready(self) -> None:
        """READY=1 once the first block came from the open mic through the wake engine's input, or
        once we know we are muted: from then on systemd's watchdog expects us every few seconds."""
        self._ready_sent = True
        what = f"listening with {self.cfg.wake.engine} '{self.cfg.wake.model}'" if self.gate.mic_open_allowed else "muted"
        _LOG.info("ready: %s", what)
        self.notifier.ready(what)

    def _close_mic(self, why: str = "") -> None:
        """The gate's close_mic: stop the stream if it is open (and time a mute, for scripts/bench)."""
        if self.mic is None or not self.mic.is_open:
            return
        # stop() keeps PortAudio initialised: closing takes ~1-2 ms instead of ~5-20 ms.
        (self.mic.stop if hasattr(self.mic, "stop") else self.mic.close)()
        if why == "mute control" and self.mute.last_edge_time is not None:
            self.mute_latencies.append(time.monotonic() - self.mute.last_edge_time)
        _LOG.info("microphone closed (%s)", why or self.gate.state.value)

    def voice_mute(self) -> None:
        """The "stop listening" command (gate.py rule 3)."""
        self.gate.voice_mute()

    def _fail(self, reason: str) -> None:
        self.gate.fail(reason)

    def _recover(self) -> None:
        self._close_mic("error")  # the gate closed it; again, in case that failed
        self.gate.recover()

    def _wait(self, seconds: float) -> None:
        """The error backoff. Timers still ring on time and replies still come (audio out only)."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < deadline:
            self.notifier.watchdog()
            self._poll_outputs()
            self._stopping.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def _emit(self, events: Sequence[Event]) -> None:
        for ev in events:
            _LOG.info("%s", _describe(ev))
            if isinstance(ev, StateChanged) and self.uplink is not None:
                self.uplink.state_changed(State(ev.state))
            if isinstance(ev, StateChanged) and State.ERROR.value in (ev.state, ev.previous):
                if ev.state == State.ERROR.value:
                    self.notifier.status(f"error: {ev.reason}")
                elif ev.state == State.LISTENING.value:
                    # Not recovered yet: the microphone may well fail to open again (it is unplugged).
                    _LOG.info("retrying after the error: opening the microphone again")
                    self._reopening = True
                else:
                    _LOG.info("recovered: %s", ev.state)
                    self.notifier.status(ev.state)
            if self.responder is not None:
                self.responder.handle(ev)
            if self._on_event:
                self._on_event(ev)


def _describe(ev: Event) -> str:
    d = ev.to_dict()
    kind = d.pop("event")
    d.pop("t", None)
    return kind + " " + " ".join(f"{k}={v}" for k, v in d.items())
