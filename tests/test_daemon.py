"""The daemon as users run it: `tallylight run` in a real subprocess, capturing in real time from a
PulseAudio null sink through PyAudio, hearing "okay nabu, turn on the light", and shutting down
cleanly on SIGTERM (mic closed, light off, ledger consistent)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tallylight import ledger as L
from testkit import speech
from testkit.audio_rigs import have_pulseaudio, pulse_mic

pytestmark = pytest.mark.skipif(not have_pulseaudio(), reason="needs pulseaudio, pactl, pacat and libasound2-plugins "
                                                              "(scripts/test installs them)")

CONFIG = """
[audio]
device = "virtmon"
channels = 1
[gpio]
pin_factory = "mock"
[indicator]
kind = "{indicator}"
[daemon]
state_dir = "{state}"
log_level = "info"
[reply]
enabled = false
sounds = false
"""


class Output:
    """Collects a subprocess's stderr lines in a thread; `wait_for` waits for a line containing text."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._t.start()

    def _read(self, stream):
        for line in stream:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def wait_for_count(self, text: str, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while sum(text in line for line in self.lines) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def join(self):
        self._t.join(timeout=10)

    def text(self) -> str:
        return "\n".join(self.lines)


def _start(cmd, env, tmp_path):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, Output(proc.stderr)


@pytest.fixture
def mic(tmp_path):
    with pulse_mic(tmp_path / "pa", rate=16000, channels=1, apply=False) as m:
        yield m


def test_run_hears_a_command_and_stops_cleanly_on_sigterm(tmp_path, mic, synth):
    cfg = tmp_path / "t.toml"
    cfg.write_text(CONFIG.format(indicator="terminal", state=tmp_path / "state"))
    env = dict(mic.env, PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    proc, out = _start([sys.executable, "-m", "tallylight", "run", "--config", str(cfg)], env, tmp_path)
    try:
        assert out.wait_for("microphone open", 60), out.text()
        started_s = time.monotonic() - t0
        clip = speech.pcm(synth("okay nabu, turn on the light", lead_s=0.5, tail_s=1.5))
        mic.play(clip).wait(30)
        assert out.wait_for("intent name=light_on", 20), out.text()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    out.join()
    text = out.text()
    assert rc == 0, text
    assert "Traceback" not in text
    assert "wake word=okay nabu" in text
    # The light went CAPTURING and back, showed MUTED at shutdown, then went off.
    lights = [line for line in text.splitlines() if "light:" in line]
    assert any("CAPTURING" in x for x in lights) and "MUTED" in lights[-2] and "OFF" in lights[-1], lights
    path = tmp_path / "state" / "ledger.jsonl"
    assert L.verify(path).ok
    entries = [e for _, e, _ in L.read_entries(path)]
    assert entries[-1]["event"] == "stop" and entries[-2]["state"] == "muted"
    assert [e["event"] for e in entries].count("capture") == 1
    print(f"start to microphone open: {started_s:.2f} s")


DRIVER = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from gpiozero.pins.mock import MockFactory, MockPWMPin
    from tallylight import config
    from tallylight.daemon import Daemon
    cfg = config.load(sys.argv[1])
    factory = MockFactory(pin_class=MockPWMPin)
    daemon = Daemon(cfg, pin_factory=factory)
    daemon.install_signal_handlers()
    orig = daemon._bring_up
    def bring_up():
        orig()
        factory.pin(cfg.mute.pin).drive_low()   # the switch in the listening position
    daemon._bring_up = bring_up
    rc = daemon.run()
    led = factory.pin(cfg.indicator.pin)
    print(json.dumps({"rc": rc, "led": led.state, "led_history": [s.state for s in led.states],
                      "mic_open": daemon.mic.is_open, "ring_zeroed": daemon.pipeline.ring.is_zeroed(),
                      "buffer_zeroed": daemon.pipeline.buffer.is_zeroed()}))
""")


def test_sigterm_during_capture_leaves_light_off_and_audio_wiped(tmp_path, mic, synth):
    """A real subprocess running the real Daemon with simulated pins, signalled mid-capture."""
    cfg = tmp_path / "t.toml"
    cfg.write_text(CONFIG.format(indicator="led", state=tmp_path / "state").replace('[gpio]\npin_factory = "mock"\n', ""))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc, out = _start([sys.executable, str(driver), str(cfg)], dict(mic.env, PYTHONUNBUFFERED="1"), tmp_path)
    try:
        assert out.wait_for("microphone open", 60), out.text()
        clip = speech.pcm(synth("okay nabu, set a timer for ninety nine minutes and then some more words", lead_s=0.5))
        mic.play(clip)
        assert out.wait_for("state=capturing", 20), out.text()
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    out.join()
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    assert 1 in result["led_history"], "the light was on while capturing"
    assert result["led"] == 0, "the light is off after shutdown"
    assert not result["mic_open"] and result["ring_zeroed"] and result["buffer_zeroed"]
    path = tmp_path / "state" / "ledger.jsonl"
    assert L.verify(path).ok
    entries = [e for _, e, _ in L.read_entries(path)]
    assert entries[-1]["event"] == "stop" and entries[-1]["state_before"] == "capturing"


def test_mic_unplugged_fails_closed_then_recovers_when_it_returns(tmp_path, synth):
    """Unload the PulseAudio sink mid-run: the daemon enters ERROR (mic closed), logs why, keeps
    retrying, and listens again once a mic with that name is back."""
    cfg = tmp_path / "t.toml"
    cfg.write_text(CONFIG.format(indicator="terminal", state=tmp_path / "state").replace(
        '[daemon]', '[daemon]\nretry_max_s = 1.0'))
    with pulse_mic(tmp_path / "pa", rate=16000, channels=1, apply=False) as m:
        proc, out = _start([sys.executable, "-m", "tallylight", "run", "--config", str(cfg)],
                           dict(m.env, PYTHONUNBUFFERED="1"), tmp_path)
        try:
            assert out.wait_for("microphone open", 60), out.text()
            m.unplug()
            assert out.wait_for("microphone closed: lost the microphone", 20), out.text()
            assert out.wait_for("light: ERROR", 5), out.text()
            m.pactl("load-module", "module-null-sink", "sink_name=virt", "rate=16000", "channels=1")
            assert out.wait_for("recovered: listening", 30), out.text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    out.join()
    assert "Traceback" not in out.text()
    states = [e.get("state") for _, e, _ in L.read_entries(tmp_path / "state" / "ledger.jsonl") if e["event"] == "state"]
    assert "error" in states and states[states.index("error") + 1] == "listening"


SELF_WAKE_CONFIG = CONFIG.replace("[reply]\nenabled = false\nsounds = false\n", "") + """
[reply]
enabled = true
sounds = false
output_device = "virtout"

[commands.light_on]
phrases = ["turn on the light"]
action = "time"
reply = "Okay nabu, it is {{time}}. Okay nabu."
"""


def test_a_reply_containing_the_wake_phrase_does_not_wake_the_speaker(tmp_path, synth):
    """The reply is played into the very sink the microphone listens to (a room with no echo
    cancelling at all). While it plays, wake detection is suppressed: one wake, not three. As a
    control, the same words played by someone else afterwards do wake it."""
    cfg = tmp_path / "t.toml"
    cfg.write_text(SELF_WAKE_CONFIG.format(indicator="terminal", state=tmp_path / "state"))
    with pulse_mic(tmp_path / "pa", rate=16000, channels=1, apply=False) as m:
        out_conf = tmp_path / "out.conf"
        out_conf.write_text(f'pcm.virtout {{ type pulse server "{m.env["PULSE_SERVER"]}" device "virt" }}\n')
        env = dict(m.env, PYTHONUNBUFFERED="1", ALSA_CONFIG_PATH=m.env["ALSA_CONFIG_PATH"] + f":{out_conf}")
        proc, out = _start([sys.executable, "-m", "tallylight", "run", "--config", str(cfg)], env, tmp_path)
        try:
            assert out.wait_for("microphone open", 60), out.text()
            m.play(speech.pcm(synth("okay nabu, turn on the light", lead_s=0.5, tail_s=1.0))).wait(30)
            assert out.wait_for("intent name=light_on", 20), out.text()
            assert out.wait_for("speaker playing", 10), out.text()
            assert out.wait_for("speaker done", 30), out.text()
            wakes_after_reply = out.text().count("wake word=okay nabu")
            # Control: the same words from someone else, with the speaker silent, do wake it.
            m.play(speech.pcm(synth("okay nabu, it is noon. okay nabu.", lead_s=0.5, tail_s=1.0))).wait(30)
            heard = out.wait_for_count("wake word=okay nabu", wakes_after_reply + 1, 20)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    out.join()
    assert wakes_after_reply == 1, out.text()
    assert heard, "control failed: the reply's words did not wake the speaker when someone else said them\n" + out.text()


def test_a_second_run_on_the_same_state_dir_is_refused_and_readers_still_work(tmp_path, mic, synth):
    """Two `tallylight run` on one state_dir would both append to the ledger and break its chain. The
    second is refused at once, in one line, and touches nothing; `ledger`, `ledger --verify` and
    `listen` work beside the running one. A daemon killed with SIGKILL leaves no stale lock."""
    cfg = tmp_path / "t.toml"
    cfg.write_text(CONFIG.format(indicator="terminal", state=tmp_path / "state"))
    env = dict(mic.env, PYTHONUNBUFFERED="1")
    run = [sys.executable, "-m", "tallylight", "run", "--config", str(cfg)]
    ledger_path = tmp_path / "state" / "ledger.jsonl"
    first, out = _start(run, env, tmp_path)
    try:
        assert out.wait_for("microphone open", 60), out.text()
        before = ledger_path.read_bytes()
        second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 75, second
        assert second.stderr.count("\n") == 1 and "already using" in second.stderr, second.stderr
        assert f"(pid {first.pid})" in second.stderr
        assert ledger_path.read_bytes() == before, "the refused daemon wrote to the ledger"
        readers = [["ledger"], ["ledger", "--verify"], ["listen", str(synth("okay nabu", lead_s=0.5, tail_s=1.0))]]
        for args in readers:
            r = subprocess.run([sys.executable, "-m", "tallylight", *args, "--config", str(cfg)], env=env,
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r)
        first.kill()  # a crash: nothing cleans up the lock file, the kernel drops the lock
        first.wait(timeout=15)
    finally:
        if first.poll() is None:
            first.kill()
    out.join()
    again, out = _start(run, env, tmp_path)
    try:
        assert out.wait_for("microphone open", 60), out.text()
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=15) == 0
    finally:
        if again.poll() is None:
            again.kill()
    out.join()
    assert "already using" not in out.text()
    entries = [e for _, e, _ in L.read_entries(ledger_path)]
    assert [e["event"] for e in entries].count("start") == 2
    assert L.verify(ledger_path).ok, L.verify(ledger_path).problems
