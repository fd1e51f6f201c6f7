"""The privacy invariants P1, P2, P4, P5 and P7, on the real daemon loop.

The daemon runs with its real gate, pipeline, wake engine (microWakeWord), VAD, ledger, LED and mute
switch (gpiozero's MockFactory pins). Only the audio seam is replaced: `ScriptedMic` plays generated
speech as the microphone and, like a hand on the switch, moves the mute switch at chosen blocks. It
checks the invariants on every block it is asked for, and the probe consumer checks them on every
block that gets past the wake detector.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tallylight import config as C
from tallylight import ledger as L
from tallylight.daemon import Daemon
from tallylight.errors import AudioDeviceError
from tallylight.gate import State
from tallylight.notify import Notifier
from tallylight.pcm import block_bytes
from testkit import speech

MUTE_PIN, LED_PIN = 17, 27
BLOCK_MS = 20
BLOCK = block_bytes(BLOCK_MS)

# Writes to files while audio flows: only the ledger (and its head) may be written (P4).
_audit = {"on": False, "writes": []}


def _audit_hook(event, args):
    if _audit["on"] and event == "open" and len(args) >= 3:
        path, mode, flags = args[0], args[1], args[2]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & 0o3)  # O_WRONLY | O_RDWR
        if writing:
            _audit["writes"].append(str(path))


sys.addaudithook(_audit_hook)


class Violation(AssertionError):
    pass


class Probe:
    """Stands where the recognizer will: receives the capture audio, checks P2 on every block."""

    name = "probe"

    def __init__(self):
        self.daemon: Daemon | None = None
        self.factory: MockFactory | None = None
        self.blocks = 0
        self.finished = 0
        self.violations: list[str] = []

    def _light_on(self) -> bool:
        return self.factory.pin(LED_PIN).state == 1

    def process(self, block):
        self.blocks += 1
        if not (self.daemon.gate.state is State.CAPTURING and self._light_on()):
            self.violations.append(f"P2: capture audio reached the recognizer with the light "
                                   f"{'on' if self._light_on() else 'off'} in {self.daemon.gate.state}")
        return [], False

    def finish(self, t):
        self.finished += 1
        if not self._light_on():
            self.violations.append("P2: the light went off before the audio was handed over")
        return []

    def reset(self):
        pass


class ScriptedMic:
    """The audio seam: `audio` as the mic; the switch moves to mute at the read indices in
    `mute_at`, and back to listening shortly after the mic has been closed."""

    def __init__(self, audio: bytes, mute_at: set[int], factory: MockFactory, probe: Probe):
        self.audio, self.mute_at, self.factory, self.probe = audio, set(mute_at), factory, probe
        self.daemon: Daemon | None = None
        self.pos = 0
        self.reads = 0
        self.is_open = False
        self.switch_muted = False
        self.processed_at_edge: int | None = None
        self.violations: list[str] = []
        self.opens = self.closes = 0

    def plug_in(self, _audio_cfg):
        """The daemon's source factory. Called after the mute control exists (its pull-up is set), so
        the switch can now be put in the listening position, as a person would. The light exists by
        now too: every change it is asked for is checked against the audio held (P2)."""
        self.probe.factory = self.factory
        self._watch_the_light()
        self._switch(False)
        return self

    def _watch_the_light(self):
        d, show = self.daemon, self.daemon.indicator.show

        def show_checked(state, **kw):
            # Whatever ends a capture (its end, a mute, an error), its audio is wiped before the
            # light stops showing a capture.
            if state is not State.CAPTURING and not d.pipeline.buffer.is_zeroed():
                self.violations.append(f"P2: the light left the capture for {state.value} with its audio still held")
            return show(state, **kw)

        d.indicator.show = show_checked

    def _switch(self, muted: bool):
        pin = self.factory.pin(MUTE_PIN)
        self.switch_muted = muted
        pin.drive_high() if muted else pin.drive_low()  # closed to GND = listening

    def open(self):
        d = self.daemon
        if self.switch_muted or not d.gate.mic_open_allowed:
            self.violations.append("P1: mic opened while muted")
        if self.processed_at_edge is not None and d.pipeline.blocks_processed != self.processed_at_edge:
            self.violations.append("P1: a block read across the mute edge was processed")
        self.processed_at_edge = None  # checked at the first open after that edge (a later one may follow an error)
        if not (d.pipeline.ring.is_zeroed() and d.pipeline.buffer.is_zeroed()) and self.opens:
            self.violations.append("P4: audio survived a mute in RAM")
        self.is_open = True
        self.opens += 1

    def read(self) -> bytes:
        d = self.daemon
        if not self.is_open:
            self.violations.append("read from a closed stream")
        if self.switch_muted:
            self.violations.append(f"P1: block read {self.reads} blocks in, after the switch was set to mute")
        if len(d.pipeline.buffer) and self.factory.pin(LED_PIN).state != 1:
            self.violations.append("P2: audio held in the capture buffer with the light off")
        if d.gate.state is State.LISTENING and self.factory.pin(LED_PIN).state != 0:
            self.violations.append("the light is on while only listening")
        if self.reads in self.mute_at:
            self.processed_at_edge = d.pipeline.blocks_processed
            self._switch(True)  # the edge happens while this block is being read
        self.reads += 1
        block = self.audio[self.pos:self.pos + BLOCK]
        self.pos += BLOCK
        if len(block) < BLOCK:
            d.request_stop()
            block = block + bytes(BLOCK - len(block))
        return block

    def close(self):
        if self.is_open:
            self.closes += 1
            if self.switch_muted:
                # The hand moves the switch back a moment later, from another thread, like a person.
                threading.Timer(0.01, self._switch, (False,)).start()
        self.is_open = False


@pytest.fixture(scope="module")
def clips(synth):
    return {
        "wake": speech.pcm(synth("okay nabu", lead_s=0.2, tail_s=0.2)),
        "command": speech.pcm(synth("turn on the light", lead_s=0.1, tail_s=0.1)),
        "wake+command": speech.pcm(synth("okay nabu, turn on the light please", lead_s=0.2, tail_s=0.2)),
        "silence": bytes(BLOCK * 25),
    }


def make_cfg(tmp_path: Path, **over) -> C.Config:
    base = C.from_dict({
        "audio": {"block_ms": BLOCK_MS},
        "mute": {"control": "switch", "pin": MUTE_PIN, "debounce_ms": 0},
        "indicator": {"kind": "led", "pin": LED_PIN},
        "capture": {"end_silence_s": 0.4, "no_speech_s": 2.0, "max_s": 4.0},
        "daemon": {"state_dir": str(tmp_path)},
    })
    return replace(base, **over)


class PatternProbe(Probe):
    """Also notes which light pattern is shown while capture audio arrives."""

    def __init__(self):
        super().__init__()
        self.patterns: set[str] = set()

    def process(self, block):
        self.patterns.add(self.daemon.indicator.pattern.name)
        return super().process(block)


def run_daemon(cfg, audio, mute_at=(), probe=None):
    factory = MockFactory(pin_class=MockPWMPin)
    probe = probe or Probe()
    mic = ScriptedMic(audio, set(mute_at), factory, probe)
    daemon = Daemon(cfg, pin_factory=factory, notifier=Notifier(env={}), consumer_factory=lambda: probe,
                    source_factory=mic.plug_in)
    probe.daemon = mic.daemon = daemon
    _audit.update(on=True, writes=[])
    try:
        rc = daemon.run()
    finally:
        _audit["on"] = False
    writes = [w for w in _audit["writes"] if not Path(w).name.startswith("ledger.")]
    return rc, daemon, mic, probe, writes


def test_wake_then_command_is_captured_with_the_light_on(tmp_path, clips):
    audio = clips["silence"] + clips["wake+command"] + clips["silence"] * 3
    rc, daemon, mic, probe, writes = run_daemon(make_cfg(tmp_path), audio)
    assert rc == 0
    assert mic.violations == [] and probe.violations == []
    assert probe.blocks > 10 and probe.finished == 1, "the wake word should have opened one capture"
    assert writes == [], f"P4: audio path wrote files: {writes}"
    entries = [e for _, e, _ in L.read_entries(tmp_path / "ledger.jsonl")]
    states = [e["state"] for e in entries if e["event"] == "state"]
    assert "capturing" in states and states[-1] == "muted"
    assert [e["event"] for e in entries if e["event"] in ("capture", "stop")] == ["capture", "stop"]
    assert L.verify(tmp_path / "ledger.jsonl").ok
    # Shut down: mic closed, audio wiped, light off.
    assert not mic.is_open and daemon.pipeline.ring.is_zeroed() and daemon.pipeline.buffer.is_zeroed()
    assert mic.factory.pin(LED_PIN).state == 0  # the light is off


def test_mute_during_capture_closes_within_one_block_and_wipes(tmp_path, clips):
    audio = clips["silence"] + clips["wake+command"] + clips["silence"] * 2 + clips["wake"] + clips["silence"] * 2
    wake_end = (len(clips["silence"]) + len(clips["wake+command"]) // 2) // BLOCK
    rc, daemon, mic, probe, writes = run_daemon(make_cfg(tmp_path), audio, mute_at={wake_end, wake_end + 60})
    assert mic.violations == [] and probe.violations == []
    assert mic.closes >= 2 and mic.opens >= 3
    assert writes == []
    text = "\n".join(L.timeline(tmp_path / "ledger.jsonl"))
    assert "MUTED" in text and "mute control" in text
    assert L.verify(tmp_path / "ledger.jsonl").ok


_SEGMENTS = st.lists(st.sampled_from(["wake", "command", "wake+command", "silence"]), min_size=1, max_size=6)
# A fault at a read index: the LED's GPIO taken away (until the next start) or the disk full under the
# ledger (until its next append reopens it).
_FAULTS = st.one_of(st.none(), st.tuples(st.sampled_from(["light", "ledger"]), st.integers(0, 150)))


class FaultyMic(ScriptedMic):
    """ScriptedMic that also breaks the light or the ledger at a chosen read, and checks P5: not one
    block is read while the gate is in ERROR."""

    def __init__(self, *a, fault=None, **k):
        super().__init__(*a, **k)
        self.fault = fault

    def read(self):
        d = self.daemon
        if d.gate.state is State.ERROR:
            self.violations.append("P5: a block read in ERROR")
        if self.fault and self.reads == self.fault[1]:
            # Between two blocks (this read returns none, as on an edge): what the daemon must catch
            # before it reads the next one.
            if self.fault[0] == "light":
                d.indicator._device.close()
            else:
                full = os.open("/dev/full", os.O_WRONLY)
                os.dup2(full, d.ledger._fd)
                os.close(full)
            self.reads += 1
            return b""
        return super().read()


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=st.lists(st.tuples(_SEGMENTS, _FAULTS), min_size=1, max_size=3), data=st.data())
def test_invariants_hold_on_every_block_of_random_schedules(tmp_path_factory, clips, runs, data):
    """P1, P2, P4 and P5 on every block and at every start, for random schedules of speech, wake
    words, mute toggles, a light or ledger failure, and restarts (each run after the first restarts
    the daemon on the same state_dir and ledger)."""
    tmp = tmp_path_factory.mktemp("priv")
    for segments, fault in runs:
        audio = b"".join(clips[s] for s in segments) + clips["silence"]
        n_blocks = len(audio) // BLOCK
        mute_at = data.draw(st.sets(st.integers(0, n_blocks - 1), max_size=4))
        factory, probe = MockFactory(pin_class=MockPWMPin), Probe()
        mic = FaultyMic(audio, mute_at, factory, probe, fault=fault)
        daemon = Daemon(make_cfg(tmp), pin_factory=factory, notifier=Notifier(env={}),
                        consumer_factory=lambda probe=probe: probe, source_factory=mic.plug_in)
        probe.daemon = mic.daemon = daemon
        _audit.update(on=True, writes=[])
        try:  # ends at the end of its audio, or once a fault has made it back off twice
            assert _run_until(daemon, _backed_off_twice) == 0
        finally:
            _audit["on"] = False
        assert mic.violations == [], mic.violations
        assert probe.violations == [], probe.violations
        writes = [w for w in _audit["writes"] if not Path(w).name.startswith("ledger.") and w != "/dev/full"]
        assert writes == [], f"P4: audio path wrote files: {writes}"
        assert not mic.is_open and daemon.pipeline.ring.is_zeroed() and daemon.pipeline.buffer.is_zeroed()
    assert L.verify(tmp / "ledger.jsonl").ok
    # At every start the mic stayed closed until the switch was read at listening: a switch's start
    # state is muted, whatever came before.
    starts = _states_at_start(tmp / "ledger.jsonl")
    assert len(starts) == len(runs) and all(s == "muted" and r.startswith("at start:") for s, r in starts), starts


def test_debug_recording_is_the_only_disk_path_and_is_ledgered(tmp_path, clips):
    rec = tmp_path / "rec"
    cfg = make_cfg(tmp_path / "state")
    cfg = replace(cfg, debug=C.DebugConfig(record_dir=str(rec)))
    audio = clips["silence"] + clips["wake+command"] + clips["silence"] * 3
    rc, daemon, mic, probe, writes = run_daemon(cfg, audio, probe=PatternProbe())
    assert probe.patterns == {"DEBUG RECORDING"}, "the light shows its own pattern while recording to disk"
    files = sorted(rec.glob("*.wav"))
    assert len(files) == 1 and [Path(w) for w in writes] == files
    entries = [e for _, e, _ in L.read_entries(tmp_path / "state" / "ledger.jsonl")]
    recs = [e for e in entries if e["event"] == "debug_recording"]
    assert len(recs) == 1 and recs[0]["file"] == str(files[0])
    # P1/P2/P4 hold as ever. (While recording the light shows its own pattern even when only
    # listening, so the plain "light off while listening" check does not apply here.)
    assert [v for v in mic.violations if v.startswith(("P1", "P2", "P4"))] == [] and probe.violations == []


class FailingMic(ScriptedMic):
    """A mic that is unplugged after `fail_at` reads (OSError -9999, as PyAudio raises)."""

    def __init__(self, *a, fail_at: int, **k):
        super().__init__(*a, **k)
        self.fail_at = fail_at
        self.failed = 0

    def read(self):
        if self.reads == self.fail_at and not self.failed:
            self.failed += 1
            self.reads += 1
            raise AudioDeviceError("lost the microphone 'test' (OSError -9999): check the cable")
        return super().read()


def _run_with(tmp_path, mic_cls, audio, until=None, **kw):
    """The daemon with `mic_cls` as its mic (a ScriptedMic that breaks something); stops by itself
    at the end of `audio`, or once `until(daemon, progress)` holds when what breaks keeps it from
    reading on."""
    factory = MockFactory(pin_class=MockPWMPin)
    probe = Probe()
    mic = mic_cls(audio, set(), factory, probe, **kw)
    daemon = Daemon(make_cfg(tmp_path), pin_factory=factory, notifier=Notifier(env={}),
                    consumer_factory=lambda: probe, source_factory=mic.plug_in)
    probe.daemon = mic.daemon = daemon
    rc = _run_until(daemon, until) if until else daemon.run()
    states = [e["state"] for _, e, _ in L.read_entries(tmp_path / "ledger.jsonl") if e["event"] == "state"]
    return rc, daemon, mic, probe, states


def test_mic_loss_fails_closed_and_recovers(tmp_path, clips):
    rc, daemon, mic, probe, states = _run_with(tmp_path, FailingMic, clips["silence"] * 4, fail_at=10)
    assert rc == 0
    i = states.index("error")
    assert states[i + 1] == "listening", states  # recovered after the backoff
    assert mic.closes >= 1 and mic.violations == []


class NoMic(ScriptedMic):
    """No microphone at all: every open fails, as PyAudio does with the device unplugged."""

    def open(self):
        raise AudioDeviceError("no microphone 'test' (OSError -9996 Invalid device): plug it in")


def test_with_no_mic_the_log_never_says_recovered(tmp_path, clips, caplog):
    """Leaving the error backoff is not a recovery until the microphone really opens again."""
    with caplog.at_level("INFO", logger="tallylight.daemon"):
        rc, daemon, mic, probe, states = _run_with(tmp_path, NoMic, clips["silence"], until=_backed_off_twice)
    said = [r.getMessage() for r in caplog.records]
    assert "error" in states and mic.opens == 0
    # Neither the log (its lines of state changes included) nor the ledger the owner reads says so.
    assert not [m for m in said if "recovered" in m], said
    reasons = [e.get("reason", "") for _, e, _ in L.read_entries(tmp_path / "ledger.jsonl")]
    assert not [r for r in reasons if "recovered" in r], reasons
    assert "retrying after the error" in reasons, reasons
    assert any(m.startswith("retrying after the error: opening the microphone again") for m in said), said


def test_after_a_mic_loss_the_log_says_recovered_once_it_reads_again(tmp_path, clips, caplog):
    with caplog.at_level("INFO", logger="tallylight.daemon"):
        _run_with(tmp_path, FailingMic, clips["silence"] * 4, fail_at=10)
    said = [r.getMessage() for r in caplog.records]
    assert said.index("recovered: listening") > max(i for i, m in enumerate(said) if m.startswith("microphone open"))


class BreakLightMic(ScriptedMic):
    def read(self):
        if self.reads == 5:
            self.daemon.indicator._device.close()  # the LED's GPIO is gone
        return super().read()


class FullDiskMic(ScriptedMic):
    def read(self):
        if self.reads == 5:
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, self.daemon.ledger._fd)  # the disk is full from now on, under the ledger's own fd
            os.close(full)
        return super().read()


def test_light_failure_fails_closed(tmp_path, clips):
    """P5: if the LED cannot be driven, the mic closes (ERROR) and nothing is captured."""
    audio = clips["silence"] + clips["wake+command"] + clips["silence"] * 2
    rc, daemon, mic, probe, states = _run_with(tmp_path, BreakLightMic, audio, until=_backed_off_twice)
    assert probe.blocks == 0, "no audio may pass the wake detector without a confirmed light"
    assert "error" in states and "capturing" not in states
    assert not mic.is_open


def test_ledger_failure_fails_closed(tmp_path, clips):
    """P5: if the ledger cannot be written, the mic closes and stays closed."""
    audio = clips["silence"] + clips["wake+command"] + clips["silence"] * 2
    rc, daemon, mic, probe, states = _run_with(tmp_path, FullDiskMic, audio, until=_backed_off_twice)
    assert probe.blocks == 0
    assert daemon.gate.state in (State.ERROR, State.MUTED)
    assert not mic.is_open


class Progress:
    """Counts the daemon's loop turns and error backoffs, so a test stops it once enough has happened
    rather than after a fixed time (the same result on a fast machine and a loaded one)."""

    def __init__(self, daemon):
        self.turns = self.backoffs = self.turns_since_backoff = 0
        turn, recover, wait = daemon._turn, daemon._recover, daemon._wait

        def counted(step):
            def run(*a):
                self.turns += 1
                self.turns_since_backoff += 1
                return step(*a)
            return run

        def counted_wait(seconds):
            self.backoffs += 1
            self.turns_since_backoff = 0
            return wait(seconds)

        daemon._turn, daemon._recover, daemon._wait = counted(turn), counted(recover), counted_wait


def _run_until(daemon, until, timeout_s=60.0):
    """Run the daemon until its audio ends or `until(daemon, progress)` holds. A condition that is
    still false after `timeout_s` fails the test: what it waits for never happened."""
    progress = Progress(daemon)
    over, timed_out = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def watch():
        deadline = time.monotonic() + timeout_s
        try:
            while not over.wait(0.005) and not until(daemon, progress):
                if time.monotonic() > deadline:
                    timed_out.set()
                    break
        except BaseException as e:  # a broken condition stops the daemon and fails the test, not hangs it
            raised.append(e)
        daemon.request_stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        return daemon.run()
    finally:
        over.set()
        watcher.join()
        if raised:
            raise raised[0]
        assert not timed_out.is_set(), f"the daemon never got there in {timeout_s:.0f} s ({progress.turns} turns)"


def _backed_off_twice(daemon, progress):
    """Failed closed, tried to recover once, and is backing off again."""
    return progress.backoffs >= 2


def _settled_after_an_error(daemon, progress):
    """Failed closed, then either backing off again or recovered into a mute that has held for 20
    turns (the owner moved the switch to mute during the error)."""
    return _backed_off_twice(daemon, progress) or (
        progress.backoffs >= 1 and daemon.gate.state is State.MUTED and progress.turns_since_backoff >= 20)


def _muted_for_a_while(daemon, progress):
    """Muted since the start for 20 loop turns (4 full checks of the switch): long enough for a mic
    that wrongly opens to have opened."""
    return daemon.gate is not None and daemon.gate.state is State.MUTED and progress.turns >= 20


class WatchedBackoff:
    """Wraps the daemon's error backoff: notes (gate state, mic open, switch muted) each time it
    starts, and can move the switch to mute then, as an owner would while the light shows ERROR."""

    def __init__(self, daemon, mic, mute_in_error=False):
        self.seen: list[tuple[str, bool, bool]] = []
        self._wait, self._daemon, self._mic, self._mute = daemon._wait, daemon, mic, mute_in_error
        daemon._wait = self

    def __call__(self, seconds):
        self.seen.append((self._daemon.gate.state.value, self._mic.is_open, self._mic.switch_muted))
        if self._mute and not self._mic.switch_muted:
            self._mic._switch(True)
        return self._wait(seconds)


def _run_watched(tmp_path, mic_cls, audio, mute_in_error=False, probe=None):
    factory = MockFactory(pin_class=MockPWMPin)
    probe = probe or Probe()
    mic = mic_cls(audio, set(), factory, probe)
    daemon = Daemon(make_cfg(tmp_path), pin_factory=factory, notifier=Notifier(env={}),
                    consumer_factory=lambda: probe, source_factory=mic.plug_in)
    probe.daemon = mic.daemon = daemon
    watch = WatchedBackoff(daemon, mic, mute_in_error)
    _run_until(daemon, _settled_after_an_error)
    return daemon, mic, probe, watch


class FullDiskAtWakeMic(ScriptedMic):
    """The disk fills while only listening; the wake word then makes the gate try to ledger a capture."""

    def read(self):
        if self.reads == 5:
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, self.daemon.ledger._fd)
            os.close(full)
        return super().read()


class LightGoneAtWakeMic(ScriptedMic):
    def read(self):
        if self.reads == 5:
            self.daemon.indicator._device.close()
        return super().read()


@pytest.mark.parametrize("mic_cls", [FullDiskAtWakeMic, LightGoneAtWakeMic], ids=["ledger", "light"])
@pytest.mark.parametrize("mute_in_error", [False, True], ids=["", "switch-to-mute"])
def test_a_capture_refused_by_the_gate_closes_the_mic_at_once(tmp_path, clips, mic_cls, mute_in_error):
    """P5: the gate fails closed inside the pipeline (the ledger or light fails as the wake word
    opens a capture): the stream is closed in that same turn and stays closed through the error
    backoff, also when the owner moves the switch to mute while the light shows the error."""
    audio = clips["silence"] + clips["wake+command"] + clips["silence"] * 4
    daemon, mic, probe, watch = _run_watched(tmp_path, mic_cls, audio, mute_in_error)
    assert watch.seen, "the gate never failed: the test did not test anything"
    assert probe.blocks == 0
    assert all(not is_open for _, is_open, _ in watch.seen), f"mic open during the error backoff: {watch.seen}"
    assert not mic.is_open and [v for v in mic.violations if v.startswith(("P1", "P2", "P4"))] == []


class LightLostMidCaptureProbe(Probe):
    """Pulls the LED's GPIO away on the first capture block it is handed."""

    def __init__(self):
        super().__init__()
        self.after_loss = 0

    def process(self, block):
        if self.blocks == 0:
            self.daemon.indicator._device.close()  # the light goes dark while the capture is open
        else:
            self.after_loss += 1
        return super().process(block)


def test_a_light_lost_during_a_capture_stops_it_before_the_next_block(tmp_path, clips):
    """P2 holds for the whole capture: once the light no longer reads back on, not one more block
    reaches the recognizer, and the gate fails closed."""
    audio = clips["silence"] + clips["wake+command"] + clips["silence"] * 4
    probe = LightLostMidCaptureProbe()
    daemon, mic, probe, watch = _run_watched(tmp_path, ScriptedMic, audio, probe=probe)
    assert probe.blocks >= 1, "no capture started: the test did not test anything"
    assert probe.after_loss == 0, f"{probe.after_loss} blocks reached the recognizer after the light was lost"
    assert watch.seen and watch.seen[0][0] == "error" and not watch.seen[0][1]


class VoiceMuteMic(ScriptedMic):
    """Says "stop listening" (the command's action, Daemon.voice_mute) at the 10th read."""

    def read(self):
        if self.reads == 10:
            self.reads += 1
            self.daemon.voice_mute()
            return b""
        return super().read()


def _run_once(tmp_path, mic_cls, until=_muted_for_a_while, factory=None):
    factory = factory or MockFactory(pin_class=MockPWMPin)
    probe = Probe()
    mic = mic_cls(bytes(BLOCK * 400), set(), factory, probe)
    daemon = Daemon(make_cfg(tmp_path), pin_factory=factory, notifier=Notifier(env={}),
                    consumer_factory=lambda: probe, source_factory=mic.plug_in)
    probe.daemon = mic.daemon = daemon
    _run_until(daemon, until)
    return daemon, mic, factory


def test_a_voice_mute_holds_across_a_restart_until_the_switch_is_cycled(tmp_path):
    """P1: after "stop listening", a restart (crash, watchdog, power cut) must not reopen the mic
    with the switch still in the listening position; moving it to mute and back does."""
    _, first, _ = _run_once(tmp_path, VoiceMuteMic)
    assert first.opens == 1 and first.reads == 11
    daemon, second, factory = _run_once(tmp_path, ScriptedMic)
    assert second.opens == 0 and second.reads == 0, "the mic reopened after a restart without the physical control"
    assert daemon.gate.state is State.MUTED
    events = [e["event"] for _, e, _ in L.read_entries(tmp_path / "ledger.jsonl")]
    assert "voice_mute_kept" in events

    class CycledSwitchMic(ScriptedMic):
        def plug_in(self, cfg):
            self.probe.factory = self.factory
            self._switch(True)  # the owner moves the switch to mute ...
            threading.Timer(0.2, self._switch, (False,)).start()  # ... and back to listening
            return self

    # Until its audio ends: it stops itself once the switch is back and the mic has read it all.
    _, third, _ = _run_once(tmp_path, CycledSwitchMic, until=lambda daemon, progress: False)
    assert third.opens == 1 and third.reads > 0, "the physical control did not unmute"
    _, fourth, _ = _run_once(tmp_path, ScriptedMic)
    assert fourth.opens == 1, "the voice mute outlived the physical unmute"


class FailingDebugDiskMic(ScriptedMic):
    def read(self):
        if self.reads == 5:
            rec = Path(self.daemon.cfg.debug.record_dir)
            rec.rmdir()
            rec.write_text("")  # record_dir is now a file: the WAV cannot be written
        return super().read()


def test_a_debug_recording_that_cannot_be_written_is_ledgered_and_leaves_nothing(tmp_path, clips):
    rec = tmp_path / "rec"
    rec.mkdir()
    cfg = replace(make_cfg(tmp_path / "state"), debug=C.DebugConfig(record_dir=str(rec)))
    factory = MockFactory(pin_class=MockPWMPin)
    probe = Probe()
    audio = clips["silence"] + clips["wake+command"] + clips["silence"] * 3
    mic = FailingDebugDiskMic(audio, set(), factory, probe)
    daemon = Daemon(cfg, pin_factory=factory, notifier=Notifier(env={}), consumer_factory=lambda: probe,
                    source_factory=mic.plug_in)
    probe.daemon = mic.daemon = daemon
    assert daemon.run() == 0
    entries = [e for _, e, _ in L.read_entries(tmp_path / "state" / "ledger.jsonl")]
    named = [e["file"] for e in entries if e["event"] == "debug_recording"]
    failed = [e["file"] for e in entries if e["event"] == "debug_recording_failed"]
    assert len(named) == 1 and failed == named
    assert rec.is_file() and not list(tmp_path.rglob("*.wav"))
    assert "capture" in [e["event"] for e in entries]  # the capture itself ended normally


class QuietMic:
    """A mic of silence that leaves the mute control alone (for button and simulated-pin starts)."""

    def __init__(self):
        self.opens = self.reads = 0
        self.is_open = False
        self.daemon = None

    def plug_in(self, _audio_cfg):
        return self

    def open(self):
        self.opens += 1
        self.is_open = True

    def read(self):
        self.reads += 1
        if self.reads > 20:
            self.daemon.request_stop()
        return bytes(BLOCK)

    def close(self):
        self.is_open = False


def _start(cfg, factory=None):
    """Until QuietMic has read 20 blocks, or the daemon has stayed muted for a while."""
    mic = QuietMic()
    daemon = Daemon(cfg, pin_factory=factory, notifier=Notifier(env={}), source_factory=mic.plug_in)
    mic.daemon = daemon
    _run_until(daemon, _muted_for_a_while)
    return daemon, mic


def test_a_button_does_not_start_listening_when_the_ledger_was_set_aside(tmp_path):
    """mute.at_start = "last" reads the ledger's last state; a ledger set aside as damaged tells none,
    so the speaker starts muted, not listening."""
    led = L.Ledger(tmp_path / "ledger.jsonl")
    led.append("state", state="muted", reason="mute control")
    led.append("stop", reason="shutdown", state_before="muted")
    led.close()
    (tmp_path / "ledger.head").unlink()  # damaged: cannot show that nothing was cut off
    cfg = replace(make_cfg(tmp_path), mute=C.MuteConfig(control="button", pin=MUTE_PIN, debounce_ms=0, at_start="last"))
    daemon, mic = _start(cfg, MockFactory(pin_class=MockPWMPin))
    assert mic.opens == 0 and daemon.gate.state is State.MUTED
    assert daemon.ledger.restarted


def test_simulated_pins_do_not_keep_a_voice_mute_nobody_could_end(tmp_path):
    """gpio.pin_factory = "mock" (trying tallylight without a Pi) has no control to unmute with."""
    (tmp_path / "voice-muted").write_text("muted\n")
    cfg = replace(make_cfg(tmp_path), gpio=C.GpioConfig(pin_factory="mock"))
    daemon, mic = _start(cfg, factory=None)  # QuietMic stops it after 20 reads
    assert mic.opens == 1 and mic.reads > 0
    assert not (tmp_path / "voice-muted").exists()


@pytest.mark.parametrize("control", ["switch", "button"])
def test_simulated_pins_ledger_no_move_of_a_mute_control_they_do_not_have(tmp_path, control):
    """gpio.pin_factory = "mock" with the default switch: the ledger said "MUTED (a mute switch opens
    the mic once it is read at listening)", then "LISTENING (mute control)", a move no control made
    (and `check` said run starts muted)."""
    from tallylight.check import _check_gpio

    cfg = replace(make_cfg(tmp_path), gpio=C.GpioConfig(pin_factory="mock"),
                  mute=C.MuteConfig(control=control, pin=MUTE_PIN, debounce_ms=0), indicator=C.IndicatorConfig(kind="terminal"))
    assert "run starts listening (simulated pins have no mute control to press)" in _check_gpio(cfg)
    daemon, mic = _start(cfg, factory=None)  # QuietMic stops it after 20 reads
    assert mic.opens == 1 and mic.reads > 0
    states = [(e["state"], e["reason"]) for _, e, _ in L.read_entries(tmp_path / "ledger.jsonl") if e["event"] == "state"]
    assert states[0] == ("listening", "at start: simulated pins have no mute control to press"), states
    assert not [s for s in states if s[1] == "mute control"], states


class LedgerFullAtCaptureProbe(Probe):
    """The disk fills while a capture is open: the debug recording's ledger entry is the write that fails."""

    def process(self, block):
        if self.blocks == 0:
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, self.daemon.ledger._fd)
            os.close(full)
        return super().process(block)


def test_a_debug_recording_that_cannot_be_ledgered_is_not_written_and_wiped_before_the_light_changes(tmp_path, clips):
    rec = tmp_path / "rec"
    cfg = replace(make_cfg(tmp_path / "state"), debug=C.DebugConfig(record_dir=str(rec)))
    audio = clips["silence"] + clips["wake+command"] + clips["silence"] * 3
    probe = LedgerFullAtCaptureProbe()
    factory = MockFactory(pin_class=MockPWMPin)
    mic = ScriptedMic(audio, set(), factory, probe)
    daemon = Daemon(cfg, pin_factory=factory, notifier=Notifier(env={}), consumer_factory=lambda: probe,
                    source_factory=mic.plug_in)
    probe.daemon = mic.daemon = daemon
    _run_until(daemon, _backed_off_twice)
    assert probe.blocks > 0 and probe.finished == 1
    assert not list(tmp_path.rglob("*.wav")), "audio went to disk that the ledger does not name"
    assert [v for v in mic.violations if v.startswith(("P1", "P2", "P4"))] == [], mic.violations
    assert not mic.is_open


def test_check_says_a_voice_mute_holds(tmp_path):
    """After "stop listening" and a restart, `tallylight check` says why the speaker stays muted."""
    import subprocess

    _run_once(tmp_path, VoiceMuteMic)
    for pins, expected in (("auto", 'muted by "stop listening": press the mute button, or move the switch to mute and back'),
                           ("mock", "simulated pins have no mute control: it ends at the next start")):
        conf = tmp_path / "t.toml"
        conf.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n[gpio]\npin_factory = "{pins}"\n[indicator]\nkind = "terminal"\n')
        r = subprocess.run([sys.executable, "-m", "tallylight", "check", "--config", str(conf)],
                           capture_output=True, text=True, timeout=120)
        line = next(x for x in r.stdout.splitlines() if "state directory" in x)
        assert expected in line, line


def test_a_wipe_that_fails_leaves_the_gate_in_error(tmp_path):
    """The gate's wipe of a cut-off capture raising must not leave a muted state whose light and
    ledger never followed: the gate fails closed and says why."""
    import io

    from tallylight.gate import PrivacyGate
    from tallylight.hardware.indicator import TerminalIndicator

    def broken_wipe():
        raise RuntimeError("end_utt failed")

    gate = PrivacyGate(TerminalIndicator(C.IndicatorConfig(kind="terminal"), out=io.StringIO()), L.Ledger(tmp_path / "ledger.jsonl"),
                       wipe=broken_wipe)
    gate.switch_changed(muted=False)
    assert gate.begin_capture()
    gate.switch_changed(muted=True)
    assert gate.state is State.ERROR and "could not wipe the audio" in gate.error_reason
    assert not gate.mic_open_allowed


# -- the start policy (restart.py): a button's mute.at_start = "last" -----------------------------

BUTTON = C.MuteConfig(control="button", pin=MUTE_PIN, debounce_ms=0, at_start="last")


class ButtonHand(QuietMic):
    """Presses the mute button (a momentary one: pressed pulls GPIO17 to GND) at the 5th read, and
    lets go once the mic has closed. `then(daemon)` runs once the daemon is muted (a fault to
    inject). Reads on until stopped."""

    def __init__(self, factory, press_at=5):
        super().__init__()
        self.factory, self.press_at = factory, press_at

    def read(self):
        self.reads += 1
        if self.reads == self.press_at:
            self.factory.pin(MUTE_PIN).drive_low()
        return bytes(BLOCK)

    def close(self):
        if self.is_open:
            self.factory.pin(MUTE_PIN).drive_high()  # released
        super().close()


def _states_at_start(path) -> list[tuple[str, str]]:
    """(state, reason) of each start's first state entry."""
    out, after_start = [], False
    for _, e, _ in L.read_entries(path):
        if e["event"] == "start":
            after_start = True
        elif e["event"] == "state" and after_start:
            out.append((e["state"], e["reason"]))
            after_start = False
    return out


def _listening_when_stopped_cleanly(tmp_path):
    """The ledger of a run that stopped cleanly while listening (a button, so the next start listens)."""
    cfg = replace(make_cfg(tmp_path), mute=replace(BUTTON, at_start="listening"))
    daemon, mic = _start(cfg, MockFactory(pin_class=MockPWMPin))
    assert mic.opens == 1 and mic.reads > 20


def _button_run(tmp_path, until, fault=None):
    """One start with the button (mute.at_start = "last"): the hand presses it if the mic opens;
    `fault(daemon, factory)` is called once the daemon is muted; the run ends when `until` holds."""
    factory = MockFactory(pin_class=MockPWMPin)
    mic = ButtonHand(factory)
    daemon = Daemon(replace(make_cfg(tmp_path), mute=BUTTON), pin_factory=factory, notifier=Notifier(env={}),
                    source_factory=mic.plug_in)
    mic.daemon = daemon
    injected = []

    def until_(d, progress):
        if fault and not injected and d.gate is not None and d.gate.state is State.MUTED and mic.opens:
            injected.append(fault(d, factory))
        return until(d, progress)

    _run_until(daemon, until_)
    return daemon, mic


def _then_a_quiet_start(tmp_path):
    """The next start, with nobody touching the button: what it opens, and what the ledger says."""
    cfg = replace(make_cfg(tmp_path), mute=BUTTON)
    daemon, mic = _start(cfg, MockFactory(pin_class=MockPWMPin))
    return mic.opens, _states_at_start(tmp_path / "ledger.jsonl")[-1]


def _muted_after_the_press(daemon, progress):
    return (daemon.mic is not None and daemon.mic.opens == 1 and daemon.gate.state is State.MUTED
            and progress.turns >= 40)


def test_a_clean_stop_while_listening_starts_listening_and_says_why(tmp_path):
    _listening_when_stopped_cleanly(tmp_path)
    opens, (state, reason) = _then_a_quiet_start(tmp_path)
    assert opens == 1 and state == "listening"
    assert reason == "at start: listening when last stopped cleanly"


def test_a_button_mute_then_a_clean_stop_starts_muted(tmp_path):
    _listening_when_stopped_cleanly(tmp_path)
    daemon, mic = _button_run(tmp_path, _muted_after_the_press)
    assert mic.opens == 1 and daemon.gate.state is State.MUTED
    opens, (state, reason) = _then_a_quiet_start(tmp_path)
    assert opens == 0 and state == "muted" and reason == "at start: muted when last stopped"


def test_a_button_mute_then_a_start_that_fails_starts_muted_after_it(tmp_path):
    """P1: a GPIO or SPI part not ready at boot fails one start; the start after it must not open the
    mic the owner muted with the button."""
    from gpiozero import LED

    from tallylight.errors import TallylightError

    _listening_when_stopped_cleanly(tmp_path)
    _button_run(tmp_path, _muted_after_the_press)
    factory = MockFactory(pin_class=MockPWMPin)
    taken = LED(LED_PIN, pin_factory=factory)  # the light's pin is not ours at this boot
    daemon = Daemon(replace(make_cfg(tmp_path), mute=BUTTON), pin_factory=factory, notifier=Notifier(env={}),
                    source_factory=QuietMic().plug_in)
    with pytest.raises(TallylightError):
        daemon.run()
    taken.close()
    opens, (state, reason) = _then_a_quiet_start(tmp_path)
    assert opens == 0 and state == "muted", "the mic opened after a failed start without a touch of the button"
    assert reason == "at start: the last stop was not clean (start failed)"


def test_a_button_mute_then_a_light_failure_starts_muted(tmp_path):
    """P1: the light fails while muted (ERROR) and the service is stopped: the next start stays muted."""
    _listening_when_stopped_cleanly(tmp_path)

    def light_gone(daemon, factory):
        daemon.indicator._device.close()

    daemon, mic = _button_run(tmp_path, lambda d, p: p.backoffs >= 1, fault=light_gone)
    states = [e.get("state") for _, e, _ in L.read_entries(tmp_path / "ledger.jsonl") if e["event"] == "state"]
    assert states[-2:] == ["muted", "error"], states
    opens, (state, reason) = _then_a_quiet_start(tmp_path)
    assert opens == 0 and state == "muted" and reason == "at start: error when last stopped"


def test_a_crash_with_no_stop_entry_starts_muted(tmp_path):
    """A crash or power cut leaves no stop entry: even after listening, the next start is muted."""
    _listening_when_stopped_cleanly(tmp_path)
    factory = MockFactory(pin_class=MockPWMPin)
    mic = QuietMic()
    daemon = Daemon(replace(make_cfg(tmp_path), mute=BUTTON), pin_factory=factory, notifier=Notifier(env={}),
                    source_factory=mic.plug_in)
    mic.daemon = daemon
    # The process dies after its loop: no shutdown runs; the system closes its files, and so drops
    # the state directory's lock.
    daemon._shut_down = lambda *_: (daemon.ledger.close(), daemon.state_lock.release())
    _run_until(daemon, lambda d, p: False)  # QuietMic stops it after 20 reads
    last = list(L.read_entries(tmp_path / "ledger.jsonl"))[-1][1]
    assert mic.opens == 1 and last["event"] == "state" and last["state"] == "listening"
    opens, (state, reason) = _then_a_quiet_start(tmp_path)
    assert opens == 0 and state == "muted"
    assert reason == "at start: the last stop was not clean (a crash or a power cut: no stop entry)"


def test_a_start_killed_before_its_first_state_starts_muted(tmp_path):
    """A `start` entry with nothing after it (killed during start-up) is no clean stop."""
    _listening_when_stopped_cleanly(tmp_path)
    led = L.Ledger(tmp_path / "ledger.jsonl")
    led.append("start", version="test", pid=1)  # what the killed start had written
    led.close()
    opens, (state, reason) = _then_a_quiet_start(tmp_path)
    assert opens == 0 and state == "muted" and reason == "at start: the last stop was not clean (a start that failed)"


def test_a_damaged_ledger_starts_a_button_muted_and_says_why(tmp_path):
    _listening_when_stopped_cleanly(tmp_path)
    (tmp_path / "ledger.head").unlink()  # damaged: cannot show that nothing was cut off
    opens, (state, reason) = _then_a_quiet_start(tmp_path)
    assert opens == 0 and state == "muted" and reason.startswith("at start: the ledger was set aside as damaged")
