"""Echo cancellation (device/tallylight/echo.py) and barge-in, on their own and in a real loop.

The loop: a PulseAudio server where the speaker's aplay plays into a null sink `spk`, whose monitor
a `module-loopback` mixes back into the mic's sink `virt`, delayed (its latency) and attenuated (its
volume), beside the talker's voice (pacat). The real daemon reads the mic through PortAudio and
plays through aplay, as on a Pi with a speaker beside its mic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time

import numpy as np
import pytest

from tallylight import echo as E
from tallylight.config import ConfigError, from_dict
from tallylight.pcm import RATE
from testkit import speech
from testkit.audio_rigs import have_pulseaudio, pulse_mic

pytestmark = pytest.mark.skipif(not speech.have_tools(), reason="needs espeak-ng and sox (scripts/test installs them)")


def _far(seconds: float = 4.0, seed: int = 3) -> np.ndarray:
    """A speech-like far end: seeded noise shaped in bursts (syllables), about -16 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    env = (np.sin(np.arange(n) * 2 * np.pi * 4 / RATE) > -0.2).astype(np.float64)
    x = np.convolve(rng.normal(0, 5000, n), np.ones(4) / 4, mode="same") * env
    return np.clip(x, -32768, 32767).astype(np.int16)


def _echo_of(far: np.ndarray, delay: int, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ir = np.zeros(800)
    ir[0] = 0.5
    ir[1:] = rng.normal(0, 1, 799) * 0.04 * np.exp(-np.arange(799) / 200)
    y = np.concatenate([np.zeros(delay), np.convolve(far.astype(np.float64), ir)[:len(far)], np.zeros(RATE)])
    y += rng.normal(0, 20, len(y))
    return np.clip(y, -32768, 32767).astype(np.int16)


def _run(ec: E.EchoCanceller, mic: np.ndarray, t0: float, block: int = 320) -> np.ndarray:
    out = [np.frombuffer(ec.process(mic[i:i + block].tobytes(), t0 + (i + block) / RATE), dtype="<i2")
           for i in range(0, len(mic) - block + 1, block)]
    return np.concatenate(out).astype(np.float64)


def _db(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(np.mean(a.astype(np.float64) ** 2) / max(np.mean(b.astype(np.float64) ** 2), 1e-9))


# -- the parts -------------------------------------------------------------------------------------


def test_reference_ring_is_bounded_cut_and_wiped():
    ring = E.ReferenceRing(max_s=1.0)
    for k in range(5):  # 5 s published into a ring of 1 s
        ring.publish(np.full(RATE, k + 1, dtype=np.int16), 100.0 + k)
    assert ring._held <= RATE
    start = E.ReferenceRing.index(104.0)
    assert set(ring.read(start, 100)) == {5}
    assert ring.read(E.ReferenceRing.index(90.0), 100) is None  # nothing played then
    ring.cut(104.5)  # stopped half-way: the rest never plays
    got = ring.read(start, RATE)
    assert (got[: RATE // 2] == 5).all() and (got[RATE // 2:] == 0).all()
    blocks = [b for _, b in ring._blocks]
    ring.wipe()
    assert ring.read(start, RATE) is None and all(not b.any() for b in blocks), "wipe must zero the samples (P4)"


def test_delay_is_estimated_and_the_echo_cancelled():
    far = _far()
    delay = int(0.137 * RATE)
    mic = _echo_of(far, delay)
    ring = E.ReferenceRing()
    ring.publish(far, 500.0)
    ec = E.EchoCanceller(ring, tail_ms=150)
    out = _run(ec, mic, 500.0)
    assert abs(ec.delay + ec.margin - delay) <= RATE // 500, ec.delay_ms
    last = slice(3 * RATE, 4 * RATE)
    assert _db(mic[last], out[last]) > 15, "the echo was not cancelled"


def test_fixed_delay_and_a_block_with_nothing_playing_passes_untouched():
    ring = E.ReferenceRing()
    ec = E.EchoCanceller(ring, delay_ms=120)
    block = _far(0.02).tobytes()
    assert ec.process(block, 10.0) is block and ec.frames_cancelled == 0
    far = _far(2.0)
    ring.publish(far, 20.0)
    mic = _echo_of(far, int(0.13 * RATE))
    _run(ec, mic, 20.0)
    assert ec.delay_ms == 120 and ec.frames_cancelled > 0


def test_reset_forgets_the_reference_and_close_is_final():
    ring = E.ReferenceRing()
    ec = E.EchoCanceller(ring)
    ring.publish(_far(1.0), 5.0)
    ec.process(_far(0.02).tobytes(), 5.5)
    ec.reset()
    assert ring.read(E.ReferenceRing.index(5.0), RATE) is None and not ec._mic_hist.any()
    ec.close()
    ec.close()
    with pytest.raises(Exception, match="after close"):
        ec.process(bytes(640), 6.0)


def test_echo_config_values_are_checked_in_one_line():
    with pytest.raises(ConfigError, match=r"frontend\.echo_cancel must be true or false, not 'yes'"):
        from_dict({"frontend": {"echo_cancel": "yes"}})
    with pytest.raises(ConfigError, match=r"frontend\.echo_delay_ms must be a number from -1 to 500"):
        from_dict({"frontend": {"echo_delay_ms": 900}})
    assert from_dict({}).frontend.echo_cancel is False  # off by default: see docs/measurements.md


def test_a_missing_libspeexdsp_is_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setattr(E, "_LIB", None)
    monkeypatch.setattr(E.ctypes.util, "find_library", lambda name: None)

    def no_lib(name, *a, **k):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(E.ctypes, "CDLL", no_lib)
    with pytest.raises(E.EngineError, match="libspeexdsp1.*echo_cancel = false"):
        E.EchoCanceller(E.ReferenceRing())


# -- the real loop ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Loop:
    mic: object
    daemon: object
    events: list
    sounds: list
    cv: threading.Condition

    def wait_for(self, pred, timeout: float) -> bool:
        with self.cv:
            return self.cv.wait_for(lambda: pred(self), timeout)

    def kinds(self, kind: str) -> list:
        with self.cv:
            return [e for e in self.events if e.kind == kind]


@contextlib.contextmanager
def echo_loop(tmp_path, monkeypatch, *, echo_cancel: bool, latency_ms: int = 60, volume: str = "70%",
              feed_reference: bool = True):
    """The daemon listening on a PulseAudio mic that also hears its own speaker (see the module doc)."""
    from tallylight.daemon import Daemon
    from tallylight.notify import Notifier

    if not have_pulseaudio():
        pytest.skip("pulseaudio, pulseaudio-utils and libasound2-plugins are needed (scripts/test installs them)")
    with pulse_mic(tmp_path / "pa", rate=16000, channels=1) as mic:
        mic.pactl("load-module", "module-null-sink", "sink_name=spk", "rate=16000", "channels=1")
        loop_mod = mic.pactl("load-module", "module-loopback", "source=spk.monitor", "sink=virt",
                             f"latency_msec={latency_ms}", "source_dont_move=true", "sink_dont_move=true").strip()
        for line in mic.pactl("list", "short", "sink-inputs").splitlines():
            idx, _, mod, *_ = line.split("\t")
            if mod == loop_mod:
                mic.pactl("set-sink-input-volume", idx, volume)  # the speaker's sound, attenuated
        conf = tmp_path / "speaker.conf"
        conf.write_text(f'pcm.speaker {{ type pulse server "{mic.env["PULSE_SERVER"]}" device "spk" }}\n')
        monkeypatch.setenv("ALSA_CONFIG_PATH", f"{mic.env['ALSA_CONFIG_PATH']}:{conf}")
        cfg = from_dict({"audio": {"device": mic.alsa_name, "channels": 1}, "gpio": {"pin_factory": "mock"},
                         "mute": {"at_start": "listening"}, "indicator": {"kind": "led"},
                         "daemon": {"state_dir": str(tmp_path / "state")},
                         "reply": {"output_device": "speaker"}, "frontend": {"echo_cancel": echo_cancel}})
        cv = threading.Condition()
        events: list = []
        sounds: list = []

        def on_event(ev):
            with cv:
                events.append(ev)
                cv.notify_all()

        from tallylight.speech.understand import make_understander

        daemon = Daemon(cfg, notifier=Notifier(env={}), respond=True, on_event=on_event,
                        consumer_factory=lambda: make_understander(cfg))
        loop = Loop(mic, daemon, events, sounds, cv)
        bring_up = daemon._bring_up

        def bring_up_and_spy():
            bring_up()
            speaker = daemon.responder.speaker
            if not feed_reference:
                speaker._reference = None  # the canceller then hears no far end: the negative control
            real_sound = speaker.sound

            def sound(name):  # what was played, and when in the mic's audio: a spy, the real call follows
                with cv:
                    sounds.append((name, daemon.pipeline.t))
                    cv.notify_all()
                real_sound(name)

            speaker.sound = sound

        daemon._bring_up = bring_up_and_spy
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            assert loop.wait_for(lambda lp: lp.daemon.blocks_read > 25, 30), "the daemon did not start listening"
            yield loop
        finally:
            daemon.request_stop()
            thread.join(30)
        assert not thread.is_alive()


def _say(loop: Loop, text: str, voice: str = "en-us") -> None:
    path = speech.synth(text, voice=voice, lead_s=0.0, tail_s=1.5)
    loop.mic.play(speech.pcm(path), lead_s=0.3)


# Measured in this loop (docs/measurements.md): with echo_cancel on, the wake word is heard over a ring,
# but "stop" is then misheard ("tell", "what's the", "start a") in most runs, and a reply saying "okay
# nabu" still woke it: speexdsp's 20-23 dB once converged is not enough here, which is why echo_cancel is
# off by default. Those two cases are measurements (docs/measurements.md), not tests: a test that may
# pass or fail proves nothing. What is tested below is what holds in every run.


@pytest.mark.parametrize("echo_cancel", [False])
def test_without_echo_cancellation_a_ringing_alarm_is_not_talked_over(tmp_path, monkeypatch, echo_cancel):
    """Barge-in: said while a ring plays into the mic. Without echo cancellation wake detection is off
    while it rings, so the same words are not heard (the test's negative control)."""
    with echo_loop(tmp_path, monkeypatch, echo_cancel=echo_cancel) as loop:
        responder = loop.daemon.responder
        responder.runner.timers.start(0.1)
        # The second ring: a timer's alarm rings a while before anyone reacts.
        assert loop.wait_for(lambda lp: sum(n == "alarm" for n, _ in lp.sounds) >= 2, 30), loop.sounds
        assert responder.speaker.speaking
        _say(loop, "okay nabu, stop")
        stopped = loop.wait_for(lambda lp: not responder._ringing, 8)
        wakes = loop.kinds("wake")
    if echo_cancel:
        assert stopped and wakes, f"the alarm rang on: {loop.events}"
        assert [e.name for e in loop.kinds("intent")] == ["stop"]
    else:
        assert not stopped and not wakes, "without echo cancellation a ring cannot be talked over"


def test_one_breath_command_over_the_wake_chime(tmp_path, monkeypatch):
    with echo_loop(tmp_path, monkeypatch, echo_cancel=True) as loop:
        _say(loop, "okay nabu, turn on the light")
        assert loop.wait_for(lambda lp: lp.kinds("capture"), 20), loop.events
        wake = loop.kinds("wake")[0]
        chimes = [t for n, t in loop.sounds if n == "wake"]
        # Within 0.3 s of audio after the wake (the command's words take about a second): the chime
        # overlaps the command, which is what the echo canceller has to take out.
        assert chimes and chimes[0] - wake.t < 0.3, "the chime did not play at once, over the command"
        assert [e.name for e in loop.kinds("intent")] == ["light_on"], loop.events


@pytest.mark.parametrize("feed_reference", [False])
def test_the_loop_is_real_the_speakers_own_okay_nabu_wakes_it_without_the_reference(tmp_path, monkeypatch,
                                                                                     feed_reference):
    """A reply that itself says the wake word, played into the mic, nobody speaking. Without its
    reference the canceller cannot take it out, and it wakes itself (the negative control)."""
    with echo_loop(tmp_path, monkeypatch, echo_cancel=True, feed_reference=feed_reference) as loop:
        speaker = loop.daemon.responder.speaker
        # The canceller learns the loop's delay and the room during the first playback after a start
        # (about 2 s here): a first reply without the wake word in it.
        speaker.say("It's ten fifteen. Okay, the light is on. The timer is set for five minutes.")
        assert loop.wait_for(lambda lp: speaker.speaking, 10) and speaker.wait(30)
        speaker.say("Okay nabu. The light is on. Okay, nabu. It is ten fifteen. Okay nabu.")
        assert loop.wait_for(lambda lp: speaker.speaking, 10)
        assert speaker.wait(30)
        # Until the echo has surely arrived and passed (the loop's delay is well under a second).
        t_end, deadline = loop.daemon.pipeline.t + 1.0, time.monotonic() + 10
        while loop.daemon.pipeline.t < t_end and time.monotonic() < deadline:
            time.sleep(0.02)
        wakes = loop.kinds("wake")
    if feed_reference:
        assert not wakes, f"its own reply woke it: {wakes}"
    else:
        assert wakes, "the control: with no reference, the reply's 'okay nabu' is heard"
