"""The Responder: what the speaker does with the pipeline's events, with the real parts around it.

The real privacy gate (an LED on gpiozero's mock pins, a ledger on disk), the real pipeline (the
default wake model), the real ActionRunner and the real Speaker: aplay writes into ALSA's `file`
plugin (tests/test_reply.py's `out` devices), so "a sound was played" is bytes in a file. Timers
and the alarm's gaps run on clocks the tests move by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import wave

import pytest
from gpiozero.pins.mock import MockFactory
from test_indicator import FailingPin
from test_reply import out  # noqa: F401  (ALSA file-plugin output devices)

from tallylight import responder as R
from tallylight.actions import ActionRunner
from tallylight.config import Config, IndicatorConfig, ReplyConfig
from tallylight.daemon import build_pipeline
from tallylight.events import IntentMatched, WakeDetected
from tallylight.gate import PrivacyGate
from tallylight.hardware.indicator import make_indicator
from tallylight.ledger import Ledger
from tallylight.pcm import BYTES_PER_SECOND
from tallylight.speech.commands import default_commands, parse_commands
from tallylight.speech.grammar import Grammar
from tallylight.timers import Timers
from testkit.audio_rigs import have_pulseaudio, pulse_mic

BLOCK = BYTES_PER_SECOND * 20 // 1000  # 20 ms


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def rig(out, tmp_path, monkeypatch):  # noqa: F811
    """A listening gate and pipeline, a Responder over them, and hand-moved clocks."""
    monkeypatch.setenv("ALSA_CONFIG_PATH", out.env["ALSA_CONFIG_PATH"])
    cfg = dataclasses.replace(Config(), reply=dataclasses.replace(ReplyConfig(), output_device="testout"))
    factory = MockFactory(pin_class=FailingPin)
    FailingPin.fail = False
    pipeline = build_pipeline(cfg, functools.partial(PrivacyGate, make_indicator(IndicatorConfig(kind="led", pin=27), factory),
                                                     Ledger(tmp_path / "ledger.jsonl")))
    gate = pipeline.gate
    gate.switch_changed(False)
    timer_clock, alarm_clock = Clock(), Clock()
    runner = ActionRunner(cfg.actions, pin_factory=factory, timers=Timers(clock=timer_clock))
    mutes: list[float] = []
    resp = R.Responder(cfg, pipeline, voice_mute=lambda: mutes.append(time.monotonic()), runner=runner, clock=alarm_clock)
    rig = dataclasses.make_dataclass("Rig", ["cfg", "gate", "pipeline", "responder", "timers", "timer_clock",
                                             "alarm_clock", "mutes", "out"])(
        cfg, gate, pipeline, resp, runner.timers, timer_clock, alarm_clock, mutes, out)
    yield rig
    FailingPin.fail = False
    resp.close()
    pipeline.close() if hasattr(pipeline, "close") else None
    factory.close()


def matched(text: str, commands=None) -> IntentMatched:
    m = Grammar(commands or default_commands()).match(text)
    assert m is not None, text
    return IntentMatched(0.0, m.command.name, dict(m.slots), match=m)


def feed(rig, path) -> list:
    with wave.open(str(path)) as w:
        pcm = w.readframes(w.getnframes())
    events = []
    for i in range(0, len(pcm) - BLOCK + 1, BLOCK):
        if not rig.gate.mic_open_allowed:
            break
        for ev in rig.pipeline.process(pcm[i : i + BLOCK]):
            events.append(ev)
            rig.responder.handle(ev)
        rig.responder.poll()  # as the daemon's loop does after each block
    return events


def played(rig) -> int:
    """Bytes aplay wrote to the output device so far (each play overwrites the file)."""
    return rig.out.raw.stat().st_size if rig.out.raw.exists() else 0


# -- the wake chime ---------------------------------------------------------------------------------


def test_wake_chime_plays_when_the_capture_opens(rig, synth):
    events = feed(rig, synth("okay nabu", lead_s=0.8, tail_s=0.3))
    assert any(isinstance(e, WakeDetected) for e in events) and rig.gate.capturing
    assert rig.responder.speaker.wait(20)
    assert played(rig) > 0


def test_no_wake_chime_over_a_command_said_in_the_same_breath(rig, synth):
    """The chime would play over "lights on" (and, with the speaker by the mic, into the capture)."""
    events = feed(rig, synth("okay nabu, turn on the kitchen light and the hall light", lead_s=0.8, tail_s=0.0))
    assert any(isinstance(e, WakeDetected) for e in events) and rig.gate.capturing
    assert rig.pipeline.endpointer.speech_started
    assert not rig.responder.speaker.speaking and played(rig) == 0
    # The same words after a pause do get the chime: the test can fail.
    rig.pipeline.forget()
    rig.gate.end_capture(duration_s=0.0, handed_to="nobody", end="test")
    events = feed(rig, synth("okay nabu", lead_s=0.8, tail_s=0.6))
    assert any(isinstance(e, WakeDetected) for e in events) and rig.gate.capturing
    assert rig.responder.speaker.wait(20) and played(rig) > 0


def test_no_wake_chime_when_the_light_cannot_be_confirmed_and_nothing_is_captured(rig, synth):
    """"I'm listening" would be a lie: the gate refused the capture (P5) and went to ERROR."""
    FailingPin.fail = True
    events = feed(rig, synth("okay nabu", lead_s=0.8, tail_s=0.3))
    assert any(isinstance(e, WakeDetected) for e in events), "the test means nothing without a wake"
    assert rig.gate.state.value == "error" and not rig.gate.capturing
    assert not rig.responder.speaker.speaking and played(rig) == 0


# -- "stop listening" never waits ---------------------------------------------------------------------


def test_voice_mute_is_applied_at_once_even_while_a_slow_program_runs(rig):
    slow = parse_commands({"slow": {"phrases": ["do the slow thing"], "action": "run", "argv": ["/bin/sleep", "30"]}}, "t")
    rig.responder.handle(matched("do the slow thing", slow))
    t0 = time.monotonic()
    rig.responder.handle(matched("stop listening"))
    # Muted while the program still runs (it sleeps 30 s): a mute queued behind it would come after.
    assert rig.mutes and rig.mutes[0] - t0 < 30, "the mic stayed open behind a running program"


def test_cancel_the_timer_does_not_overtake_setting_it(rig):
    """Slow program, "set a timer", "cancel the timer": carried out in that order."""
    slow = parse_commands({"slow": {"phrases": ["do the slow thing"], "action": "run", "argv": ["/bin/sleep", "1"]}}, "t")
    for event in (matched("do the slow thing", slow), matched("set a timer for five minutes"), matched("cancel the timer")):
        rig.responder.handle(event)
    deadline = time.monotonic() + 20
    while rig.responder._pending:
        assert time.monotonic() < deadline
        rig.responder.poll()
        time.sleep(0.02)
    assert rig.timers.active() == []


# -- timer alarms -----------------------------------------------------------------------------------


def ring_timer(rig, seconds: float = 60) -> None:
    rig.timers.start(seconds)
    rig.timer_clock.t += seconds
    rig.responder.poll()


def wait_quiet(rig) -> None:
    assert rig.responder.speaker.wait(20)
    assert not rig.gate.wake_suppressed


def test_alarm_rings_in_bursts_with_quiet_gaps_where_the_wake_word_is_heard(rig):
    r = rig.responder
    # A timer that ends while a command is being spoken waits for the capture to end.
    assert rig.gate.begin_capture()
    ring_timer(rig)
    r.poll()
    assert not r.speaker.speaking, "the alarm rang over a command being spoken"
    rig.gate.end_capture(duration_s=1.0, handed_to="test", end="end")
    r.poll()
    assert r.speaker.speaking, "the first ring comes as soon as nothing is being captured"
    wait_quiet(rig)
    rings = 1
    for _ in range(3):
        r.poll()  # the quiet starts
        rig.alarm_clock.t += R.ALARM_GAP_S - 0.1
        r.poll()
        assert not r.speaker.speaking, "the next ring came before the gap was over"
        rig.alarm_clock.t += 0.1
        r.poll()
        assert r.speaker.speaking
        rings += 1
        wait_quiet(rig)
    # No ring starts while a capture is open: the command after the wake word is not drowned.
    assert rig.gate.begin_capture()
    r.poll()
    rig.alarm_clock.t += 10 * R.ALARM_GAP_S
    r.poll()
    assert not r.speaker.speaking
    rig.gate.end_capture(duration_s=1.0, handed_to="test", end="end")
    r.poll()  # the quiet starts when the capture ends
    rig.alarm_clock.t += R.ALARM_GAP_S
    r.poll()
    assert r.speaker.speaking
    wait_quiet(rig)
    rings += 1
    # And it ends by itself after ALARM_REPEATS rings.
    for _ in range(R.ALARM_REPEATS + 2):
        r.poll()
        rig.alarm_clock.t += R.ALARM_GAP_S
        r.poll()
        rings += r.speaker.speaking
        wait_quiet(rig)
    assert rings == R.ALARM_REPEATS


@pytest.mark.parametrize("said", ["cancel the timer", "stop the timer", "stop"])
def test_alarm_is_silenced_by_voice_and_other_timers_keep_running(rig, said):
    r = rig.responder
    rig.timers.start(600, "pasta")
    ring_timer(rig, 60)
    wait_quiet(rig)
    size = played(rig)
    r.handle(matched(said))
    r.poll()
    wait_quiet(rig)  # no "There is no timer." either
    assert played(rig) == size
    for _ in range(3):
        rig.alarm_clock.t += 10 * R.ALARM_GAP_S
        r.poll()
        assert not r.speaker.speaking, "the alarm rang on after it was stopped"
    assert [t.label for t in rig.timers.active()] == ["pasta"], "only the alarm that rang was meant"


def test_timers_ring_on_time_while_the_daemon_waits_out_an_error(out, tmp_path, monkeypatch):  # noqa: F811
    """A microphone that cannot be opened puts the daemon in ERROR, retrying with a growing backoff
    (up to daemon.retry_max_s). A kitchen timer must still ring on time meanwhile: audio out only."""
    import threading

    from tallylight.config import from_dict
    from tallylight.daemon import Daemon
    from tallylight.notify import Notifier

    monkeypatch.setenv("ALSA_CONFIG_PATH", out.env["ALSA_CONFIG_PATH"])
    cfg = from_dict({"audio": {"device": "no-such-microphone"}, "gpio": {"pin_factory": "mock"},
                     "mute": {"at_start": "listening"}, "indicator": {"kind": "led"},
                     "daemon": {"state_dir": str(tmp_path)}, "reply": {"output_device": "testout"}})
    failures = threading.Semaphore(0)

    def on_event(ev):
        if ev.kind == "state" and ev.state == "error":
            failures.release()

    daemon = Daemon(cfg, notifier=Notifier(env={}), respond=True, on_event=on_event)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        # The 4th failure is followed by a 4 s wait (0.5, 1, 2, 4 s): the timer falls due inside it.
        for n in range(4):
            assert failures.acquire(timeout=20), f"failure {n + 1} to open the missing microphone did not come"
        daemon.responder.runner.timers.start(0.2)
        t0 = time.monotonic()
        while not daemon.responder.speaker.speaking:
            # Inside the 4 s wait that follows the 4th failure (the timer is due after 0.2 s of it).
            assert time.monotonic() - t0 < 3.5, "the timer did not ring while the daemon waited out the error"
            time.sleep(0.01)
    finally:
        daemon.request_stop()
        thread.join(20)
    assert not thread.is_alive()


# -- stopping the daemon while it plays ----------------------------------------------------------------

_DRIVER = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from tallylight import config
from tallylight.daemon import Daemon
cfg = config.load(sys.argv[1])
daemon = Daemon(cfg, respond=True)
daemon.install_signal_handlers()
bring_up = daemon._bring_up
def bring_up_then_play():
    bring_up()
    if sys.argv[2] == "alarm":
        daemon.responder.runner.timers.start(0.1)  # rings on the daemon's next turns, as a timer does
    else:
        daemon.responder.speaker.say("This is a long reply that goes on and on, and on. " * 4)
daemon._bring_up = bring_up_then_play
sys.exit(daemon.run())
"""


@pytest.mark.parametrize("playing, how", [("alarm", "ctrl-c"), ("reply", "ctrl-c"), ("alarm", "sigterm")])
def test_ctrl_c_or_sigterm_ends_the_daemon_promptly_while_it_plays(tmp_path, playing, how):
    """`tallylight run` in a real process, with a mic and a speaker that play in real time (PulseAudio
    null sinks). Once the alarm or a reply is being heard, Ctrl-C (SIGINT to the terminal's whole
    process group, aplay and espeak-ng included) or SIGTERM (systemd) ends it at once, cleanly: the
    daemon stops its own players, and a player hit by the terminal's Ctrl-C is no playback error."""
    if not have_pulseaudio():
        pytest.skip("pulseaudio, pulseaudio-utils and libasound2-plugins are needed (scripts/test installs them)")
    with pulse_mic(tmp_path / "pa", rate=16000, channels=1, apply=False) as mic:
        played = tmp_path / "played.raw"
        speaker_conf = tmp_path / "speaker.conf"
        speaker_conf.write_text(f'pcm.speaker {{ type file slave.pcm {{ type pulse }} file "{played}" format "raw" }}\n')
        env = dict(mic.env, PYTHONUNBUFFERED="1", ALSA_CONFIG_PATH=f"{mic.env['ALSA_CONFIG_PATH']}:{speaker_conf}")
        conf = tmp_path / "t.toml"
        conf.write_text(f'[audio]\ndevice = "{mic.alsa_name}"\nchannels = 1\n[gpio]\npin_factory = "mock"\n'
                        f'[indicator]\nkind = "terminal"\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
                        '[reply]\noutput_device = "speaker"\n')
        proc = subprocess.Popen([sys.executable, "-c", _DRIVER, str(conf), playing], env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        log: list[str] = []
        reader = threading.Thread(target=lambda: log.extend(line.rstrip("\n") for line in proc.stderr), daemon=True)
        reader.start()
        try:
            # Until a quarter of a second has gone to the speaker: the signal comes early in the sound,
            # so a daemon that waited for the alarm's ring (2.3 s) to end would miss the bound below.
            deadline = time.monotonic() + 60
            while not (played.exists() and played.stat().st_size > 22050 * 2 // 4):
                assert proc.poll() is None and time.monotonic() < deadline, "\n".join(log)
                time.sleep(0.02)
            signalled = time.monotonic()
            if how == "ctrl-c":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                raise AssertionError("the daemon did not stop on the signal\n" + "\n".join(log)) from None
            took = time.monotonic() - signalled
            reader.join(10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = "\n".join(log)
    assert rc == 0, text
    assert took < 1.5, f"{took:.2f} s from the signal to the end of the process\n{text}"
    assert "Traceback" not in text and "could not play" not in text and "ERROR" not in text, text
    assert "light: OFF" in log[-1], text
    print(f"{playing}, {how}: {took:.2f} s from the signal to exit")
