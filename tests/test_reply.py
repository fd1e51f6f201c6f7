"""Spoken replies and sounds, played for real: espeak-ng -> aplay -> an ALSA device that writes what
it is given to a file (the `file` plugin), so each test checks the audio that was actually played.

A real-time paced device (a PulseAudio null sink behind the same file plugin) is used where timing
matters: stopping a reply half-way.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soxr

from tallylight.config import ReplyConfig, WakeConfig
from tallylight.reply import SOUNDS, TONE_RATE, Speaker, make_sounds
from tallylight.reply_template import render

WAKE_REPLY = "okay nabu, the light is on"


def alsa_env(conf: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for aplay with our test devices added (alsa.conf first, or ALSA aborts)."""
    return {**os.environ, **(extra or {}), "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}


@pytest.fixture
def out(tmp_path):
    """Devices `testout` (overwrites out.raw on each play) and `appendout` (appends to all.raw)."""
    conf = tmp_path / "alsa.conf"
    raw, all_raw = tmp_path / "out.raw", tmp_path / "all.raw"
    conf.write_text(
        f'pcm.testout {{ type file slave.pcm "null" file "{raw}" format "raw" }}\n'
        f'pcm.appendout {{ type file slave.pcm "null" file "|cat >> {all_raw}" format "raw" }}\n'
    )
    return dataclasses.make_dataclass("Out", ["env", "raw", "all_raw"])(alsa_env(conf), raw, all_raw)


def cfg(**kw) -> ReplyConfig:
    return dataclasses.replace(ReplyConfig(), **{"output_device": "testout", **kw})


class Events:
    """on_start/on_end recorder: what the file held when each was called."""

    def __init__(self, raw: Path | None = None) -> None:
        self.raw = raw
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def _size(self) -> int:
        return self.raw.stat().st_size if self.raw is not None and self.raw.exists() else -1

    def on_start(self) -> None:
        with self.lock:
            self.calls.append(("start", self._size()))

    def on_end(self) -> None:
        with self.lock:
            self.calls.append(("end", self._size()))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def samples(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<i2")


def rms(raw: bytes) -> float:
    s = samples(raw).astype(np.float64)
    return float(np.sqrt(np.mean(s**2))) if len(s) else 0.0


# -- render -------------------------------------------------------------------------------------


def test_render_fills_named_fields():
    assert render("Timer set for {minutes} minutes.", {"minutes": 5}) == "Timer set for 5 minutes."
    assert render("It's {time}.", {"time": "3:05 PM", "unused": 1}) == "It's 3:05 PM."
    assert render("{{literal}} {a}", {"a": "x"}) == "{literal} x"


def test_render_leaves_out_unknown_fields_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="tallylight.reply"):
        assert render("The light is {state}.", {}) == "The light is."
    assert "{state}" in caplog.text


@pytest.mark.parametrize(
    "template",
    ["{x.__class__}", "{x.__class__.__mro__}", "{x[0]}", "{x!r}", "{x:>99}", "{0}", "{}", "{ x }"],
)
def test_render_never_reaches_into_objects(template):
    class Secret:
        def __repr__(self):
            return "SECRET"

        def __format__(self, spec):
            return "SECRET"

        __str__ = __repr__

    text = render("value " + template + " end", {"x": Secret(), "0": Secret()})
    assert "SECRET" not in text and "class" not in text
    assert text == "value end"


# -- the sounds ---------------------------------------------------------------------------------


def test_sounds_are_short_distinct_and_not_silent():
    sounds = make_sounds()
    assert set(sounds) == set(SOUNDS)
    for name, pcm in sounds.items():
        seconds = len(pcm) / 2 / TONE_RATE
        assert 0.1 < seconds < 3.0, name
        assert rms(pcm) > 1000, name
        assert np.abs(samples(pcm)).max() < 32767  # no clipping
    assert len({pcm for pcm in sounds.values()}) == len(SOUNDS)


def test_sound_plays_exactly_the_tone(out):
    events = Events(out.raw)
    speaker = Speaker(cfg(), env=out.env, on_start=events.on_start, on_end=events.on_end, tail_s=0.05)
    try:
        speaker.sound("wake")
        assert speaker.wait(20)
    finally:
        speaker.close()
    played = out.raw.read_bytes()
    tone = make_sounds()["wake"]
    # aplay pads the last period with silence; everything before that is our tone, bit for bit.
    assert played[: len(tone)] == tone
    assert not any(played[len(tone) :])
    assert events.names() == ["start", "end"]
    assert speaker.last_error == ""


def test_unknown_sound_is_a_programming_error():
    speaker = Speaker(cfg())
    try:
        with pytest.raises(ValueError, match="unknown sound"):
            speaker.sound("fanfare")
    finally:
        speaker.close()


# -- speaking -----------------------------------------------------------------------------------


def test_say_speaks_the_text_through_the_output_device(out):
    speaker = Speaker(cfg(), env=out.env, tail_s=0.05)
    try:
        speaker.say("Timer set for five minutes.")
        assert speaker.wait(20)
    finally:
        speaker.close()
    played = out.raw.read_bytes()
    seconds = len(played) / 2 / 22050
    assert 1.0 < seconds < 5.0
    assert rms(played) > 300
    assert speaker.last_error == ""


def test_text_that_looks_like_an_option_is_spoken_not_obeyed(out):
    # The text goes to espeak-ng on stdin: "--help" must be said, not print espeak-ng's usage.
    speaker = Speaker(cfg(), env=out.env, tail_s=0.05)
    try:
        speaker.say("--help")
        assert speaker.wait(20)
    finally:
        speaker.close()
    assert speaker.last_error == ""
    assert rms(out.raw.read_bytes()) > 300


def test_queue_plays_in_order_inside_one_suppression_window(out):
    events = Events(out.all_raw)
    speaker = Speaker(
        cfg(output_device="appendout"), env=out.env, on_start=events.on_start, on_end=events.on_end, tail_s=0.3
    )
    try:
        speaker.sound("wake")
        speaker.say("The light is on.")
        speaker.sound("no_match")
        assert speaker.speaking
        assert speaker.wait(30)
        assert not speaker.speaking
    finally:
        speaker.close()
    assert events.names() == ["start", "end"]  # one window around all three
    assert events.calls[0][1] == -1  # nothing written before on_start
    played = out.all_raw.read_bytes()
    assert events.calls[1][1] == len(played)  # everything written before on_end
    sounds = make_sounds()
    assert played.startswith(sounds["wake"])
    tail = played.rstrip(b"\x00")
    assert tail.endswith(sounds["no_match"].rstrip(b"\x00"))
    # In between: the spoken reply, well over half a second of it.
    assert len(played) - len(sounds["wake"]) - len(sounds["no_match"]) > 2 * 22050 * 0.5


def test_a_second_reply_after_the_window_closed_opens_a_new_one(out):
    events = Events()
    speaker = Speaker(cfg(), env=out.env, on_start=events.on_start, on_end=events.on_end, tail_s=0.05)
    try:
        speaker.sound("wake")
        assert speaker.wait(20)
        speaker.sound("error")
        assert speaker.wait(20)
    finally:
        speaker.close()
    assert events.names() == ["start", "end", "start", "end"]


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    """A PulseAudio server with a null sink: plays in real time, to nowhere."""
    if not shutil.which("pulseaudio"):
        pytest.fail("pulseaudio is needed: scripts/test installs it (apt-get install pulseaudio libasound2-plugins)")
    base = tmp_path_factory.mktemp("pulse")
    run, home = base / "run", base / "home"
    run.mkdir()
    home.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run), "HOME": str(home)}
    proc = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "-L", "module-native-protocol-unix",
         "-L", "module-null-sink sink_name=virt"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not (run / "pulse" / "native").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("pulseaudio did not start")
        time.sleep(0.05)
    yield {"XDG_RUNTIME_DIR": str(run), "HOME": str(home)}
    proc.terminate()
    proc.wait(timeout=10)


def paced_device(tmp_path: Path, pulse: dict) -> tuple[dict, Path]:
    """`pacedout`: plays in real time (PulseAudio null sink) and writes what it plays to paced.raw."""
    raw, conf = tmp_path / "paced.raw", tmp_path / "paced.conf"
    conf.write_text(f'pcm.pacedout {{ type file slave.pcm "pulse" file "{raw}" format "raw" }}\n')
    return alsa_env(conf, pulse), raw


# -- the no-self-wake rule ---------------------------------------------------------------------


def _wake_detections(pcm16k: bytes) -> int:
    """How many times the project's default wake detector hears the wake word in 16 kHz audio."""
    try:
        from tallylight.ears import make_wake_detector
    except ImportError:  # wake.py not in this checkout yet: the same engine, used directly
        make_wake_detector = None
    pad = bytes(16000)  # half a second of silence each side, as a room would have
    audio = pad + pcm16k + pad + pad
    hits = 0
    if make_wake_detector is not None:
        detector = make_wake_detector(WakeConfig())
        try:
            for i in range(0, len(audio), 640):
                hits += detector.process(audio[i : i + 640]) is not None
        finally:
            detector.close()
        return hits
    from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

    model, features, above = MicroWakeWord.from_builtin(Model.OKAY_NABU), MicroWakeWordFeatures(), False
    for i in range(0, len(audio), 640):
        for f in features.process_streaming(audio[i : i + 640]):
            now = bool(model.process_streaming(f))
            hits += now and not above
            above = now
    return hits


def _to_16k(raw22k: bytes) -> bytes:
    x = samples(raw22k).astype(np.float32) / 32768
    y = soxr.resample(x, 22050, 16000)
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def test_a_reply_with_the_wake_phrase_is_played_only_inside_the_suppression_window(out, pulse, tmp_path):
    """The speaker must not wake itself. What aplay actually wrote to the device contains a wake
    word the real detector hears (so without suppression it WOULD wake us), and every byte of it was
    written after on_start() and before on_end(): the daemon suppresses wake detection in between.
    The device plays in real time, so an on_end() that came before the sound had finished playing
    would see a shorter file than the final one."""
    env, raw = paced_device(tmp_path, pulse)
    events = Events(raw)
    speaker = Speaker(cfg(output_device="pacedout"), env=env, on_start=events.on_start, on_end=events.on_end)
    try:
        speaker.say(WAKE_REPLY)
        assert speaker.wait(30)
    finally:
        speaker.close()
    played = raw.read_bytes()
    # (b) The window covers the whole playback: nothing was written before on_start() (the device
    # file did not exist yet) and everything was written before on_end().
    assert events.names() == ["start", "end"]
    assert events.calls[0][1] == -1
    assert events.calls[1][1] == len(played)
    assert len(played) > 2 * 22050  # more than a second of speech reached the device

    # (a) The played audio wakes the real detector when nothing suppresses it...
    assert _wake_detections(_to_16k(played)) >= 1
    # ...and a reply without the wake phrase does not (the detector is not just firing on speech).
    speaker2 = Speaker(cfg(), env=out.env, tail_s=0.05)
    try:
        speaker2.say("the light is on")
        assert speaker2.wait(30)
    finally:
        speaker2.close()
    assert _wake_detections(_to_16k(out.raw.read_bytes())) == 0


# -- failures still close the window -------------------------------------------------------------


def test_bad_output_device_reports_the_fix_and_still_calls_on_end(out):
    events = Events()
    speaker = Speaker(
        cfg(output_device="no_such_device"), env=out.env, on_start=events.on_start, on_end=events.on_end, tail_s=0.05
    )
    try:
        speaker.say("hello")
        assert speaker.wait(20)
    finally:
        speaker.close()
    assert events.names() == ["start", "end"]
    assert "no_such_device" in speaker.last_error and "reply.output_device" in speaker.last_error


def test_missing_espeak_is_reported_and_on_end_still_called(out):
    events = Events()
    speaker = Speaker(
        cfg(), env=out.env, synth_argv=("/nonexistent/espeak-ng",), on_start=events.on_start, on_end=events.on_end,
        tail_s=0.05,
    )
    try:
        speaker.say("hello")
        assert speaker.wait(20)
    finally:
        speaker.close()
    assert events.names() == ["start", "end"]
    assert "not found" in speaker.last_error and "apt-get install espeak-ng" in speaker.last_error


def test_bad_voice_is_reported(out):
    speaker = Speaker(cfg(voice="xx-nonexistent"), env=out.env, tail_s=0.05)
    try:
        speaker.say("hello")
        assert speaker.wait(20)
    finally:
        speaker.close()
    assert "reply.voice" in speaker.last_error
    assert not out.raw.exists()


def test_when_on_start_fails_nothing_is_played(out):
    # If wake suppression cannot be turned on, playing could wake us: the speaker stays silent.
    ended = []

    def broken():
        raise RuntimeError("detector gone")

    speaker = Speaker(cfg(), env=out.env, on_start=broken, on_end=lambda: ended.append(1), tail_s=0.05)
    try:
        speaker.sound("alarm")
        assert speaker.wait(20)
    finally:
        speaker.close()
    assert not out.raw.exists()
    assert ended == [1]


def test_replies_off_and_sounds_off(out):
    events = Events()
    speaker = Speaker(
        cfg(enabled=False, sounds=False), env=out.env, on_start=events.on_start, on_end=events.on_end, tail_s=0.05
    )
    try:
        speaker.say("not said")
        speaker.sound("wake")
        speaker.sound("no_match")
        assert speaker.wait(5)
        assert events.calls == [] and not out.raw.exists()
        speaker.sound("alarm")  # a timer's alarm still sounds: a silent timer is no use
        assert speaker.wait(20)
    finally:
        speaker.close()
    assert events.names() == ["start", "end"]
    assert out.raw.read_bytes().startswith(make_sounds()["alarm"])


def test_close_is_safe_twice_and_later_replies_are_dropped(out):
    speaker = Speaker(cfg(), env=out.env, tail_s=0.05)
    speaker.close()
    speaker.close()
    speaker.say("too late")
    assert speaker.wait(1)
    assert not out.raw.exists()


# -- stop, on a device that plays in real time ------------------------------------------------------


def test_stop_cuts_a_long_reply_and_drops_the_queue(pulse, tmp_path):
    env, raw = paced_device(tmp_path, pulse)
    events = Events(raw)
    speaker = Speaker(
        cfg(output_device="pacedout"), env=env, on_start=events.on_start, on_end=events.on_end,
        tail_s=0.05,
    )
    long_text = "This is a long reply that goes on and on. " * 6  # about 15 seconds of speech
    try:
        speaker.say(long_text)
        speaker.sound("alarm")
        deadline = time.monotonic() + 20
        while not (raw.exists() and raw.stat().st_size > 22050):  # half a second has been played
            assert time.monotonic() < deadline, f"nothing played: {speaker.last_error}"
            time.sleep(0.05)
        assert speaker.speaking
        speaker.stop()
        assert speaker.wait(10)
        assert not speaker.speaking
    finally:
        speaker.close()
    played = raw.stat().st_size / 2 / 22050
    assert played < 8.0  # far less than the whole reply
    assert events.names() == ["start", "end"]
    assert speaker.last_error == ""  # a stop is not an error


@pytest.mark.parametrize("voice, device, expect", [
    ("en-us", "testout", ["ok       reply voice: espeak-ng voice 'en-us'", "ok       reply output: plays on testout"]),
    ("englsh", "testout", ["PROBLEM  reply voice: reply.voice = 'englsh'", "espeak-ng --voices"]),
    ("en-us", "hw:97", ["PROBLEM  reply output: aplay cannot play on hw:97", "aplay -L"]),
])
def test_check_tries_the_reply_voice_and_output_device(tmp_path, out, voice, device, expect):
    """`tallylight check` runs espeak-ng with reply.voice and plays 10 ms of silence on
    reply.output_device through the same aplay the speaker uses: a typo in either is found before
    the first reply is due."""
    import subprocess
    import sys

    conf = tmp_path / "t.toml"
    conf.write_text(f'[reply]\nvoice = "{voice}"\noutput_device = "{device}"\n'
                    f'[gpio]\npin_factory = "mock"\n[indicator]\nkind = "terminal"\n'
                    f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n')
    r = subprocess.run([sys.executable, "-m", "tallylight", "check", "--config", str(conf)],
                       capture_output=True, text=True, timeout=120, env=out.env)
    report = r.stdout + r.stderr
    for text in expect:
        assert text in report, report
    if device == "testout":
        assert out.raw.exists() and set(out.raw.read_bytes()) <= {0}  # silence, and it was played there
