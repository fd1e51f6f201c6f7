"""The listening step before the capture: the audio front end (tallylight.frontend) and the wake
detector's lowered second view (tallylight.ears.ListeningEars), with the real engines and espeak-ng
speech."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tallylight.config import FrontendConfig, WakeConfig
from tallylight.ears import ListeningEars, make_wake_detector
from tallylight.errors import EngineError
from tallylight.frontend import FrontEnd, HighPass
from tallylight.wake import MicroWakeWordDetector
from testkit import wake_corpus as wc

BLOCK = 640  # 20 ms


def feed(det, audio: bytes, size: int = BLOCK) -> list:
    return [d for i in range(0, len(audio), size) if (d := det.process(audio[i : i + size])) is not None]


def clip(voice: str, speed: int, noise: float) -> bytes:
    return next(c for c in wc.positives("okay_nabu", voices=(voice,)) if c.speed == speed and c.noise == noise).pcm()


# ------------------------------------------------------------------------------------ high-pass
def reference_high_pass(x: np.ndarray, a: float) -> np.ndarray:
    """The same two first-order sections, one sample at a time (the textbook recursion)."""
    y = x.astype(np.float64)
    for _ in range(2):
        out, px, py = np.empty_like(y), 0.0, 0.0
        for n, v in enumerate(y):
            py = a * py + a * (v - px)
            px = v
            out[n] = py
        y = out
    return y


def test_the_high_pass_equals_the_sample_by_sample_recursion_whatever_the_block_sizes():
    rng = np.random.default_rng(7)
    x = rng.normal(0, 3000, 5000) + 2000  # with a DC offset
    hp = HighPass(90.0)
    want = reference_high_pass(x, hp.a)
    pieces, i = [], 0
    for size in (1, 7, 320, 1500, 3172):  # over and under its internal 512-sample pieces
        pieces.append(hp.filter(x[i : i + size]))
        i += size
    assert np.allclose(np.concatenate(pieces), want, atol=1e-6)


def test_the_high_pass_removes_dc_and_rumble_and_keeps_speech_frequencies():
    t = np.arange(16000) / 16000
    hp = HighPass(90.0)

    def gain(freq: float) -> float:
        hp.reset()
        y = hp.filter(1000 * np.sin(2 * math.pi * freq * t) if freq else np.full(16000, 1000.0))
        return float(np.sqrt(np.mean(y[8000:] ** 2)) / (1000 / math.sqrt(2) if freq else 1000))

    assert gain(0) < 1e-3
    assert gain(30) < 0.15  # two poles: about -17 dB an octave and a half under the cutoff
    assert 0.95 < gain(1000) <= 1.001


# ------------------------------------------------------------------------------------ front end
def test_noise_suppression_lowers_steady_noise_and_reset_forgets_what_it_learnt():
    noise = wc.pink_noise(3 * 16000, 0.1, seed=3).astype("<i2").tobytes()
    front = FrontEnd(FrontendConfig(noise_suppression=2))
    first = b"".join(front.process(noise[i : i + 480]) for i in range(0, len(noise), 480))  # 15 ms blocks
    assert abs(len(first) - len(noise)) < 320  # at most one 10 ms frame waits for the next block
    rms = lambda b: float(np.sqrt(np.mean(np.frombuffer(b, "<i2").astype(float) ** 2)))  # noqa: E731
    assert rms(first[-16000:]) < 0.5 * rms(noise[-16000:])
    front.reset()
    again = b"".join(front.process(noise[i : i + 480]) for i in range(0, len(noise), 480))
    assert again == first  # nothing of the first pass (noise estimate, partial frame) survived reset
    front.close()
    front.close()
    with pytest.raises(EngineError):
        front.process(noise[:640])


def test_a_front_end_with_everything_off_passes_audio_through_and_says_so():
    front = FrontEnd(FrontendConfig(high_pass_hz=0, noise_suppression=0, auto_gain_dbfs=0))
    assert not front.enabled and front.features() == []
    assert front.process(b"\x01\x02" * 320) == b"\x01\x02" * 320
    on = FrontEnd(FrontendConfig(high_pass_hz=90, noise_suppression=2, auto_gain_dbfs=0))
    assert on.features() == ["high-pass 90 Hz", "noise suppression 2"]


# -------------------------------------------------------------------------------- lowered view
def test_the_lowered_view_hears_a_high_voice_in_noise_that_the_plain_view_misses():
    audio = clip("en-us+f3", 160, 0.05)
    plain = MicroWakeWordDetector()
    assert feed(plain, audio) == []
    ears = make_wake_detector(WakeConfig(), FrontendConfig(noise_suppression=0))
    assert isinstance(ears, ListeningEars) and ears.describe() == ["lowered view x0.82"]
    hits = feed(ears, audio)
    assert len(hits) == 1 and "lowered view" in hits[0].engine
    assert ears.peak_score > ears.threshold > plain.peak_score


def test_both_views_hearing_one_phrase_wake_once_and_reset_starts_afresh():
    audio = clip("en-us+f3", 160, 0.0)  # heard by both views (plain 0.89, lowered 0.99)
    ears = make_wake_detector(WakeConfig(), FrontendConfig(noise_suppression=0))
    plain_hits = feed(ears.plain, audio)
    ears.reset()
    low_hits = feed(ears.lowered, ears.view.process(audio))
    assert plain_hits and low_hits  # each view alone hears it
    ears.reset()
    assert len(feed(ears, audio)) == 1
    ears.reset()
    assert len(feed(ears, audio, size=320)) == 1
    ears.close()
    ears.close()


def test_without_a_front_end_config_the_plain_detector_comes_back():
    det = make_wake_detector(WakeConfig())
    assert isinstance(det, MicroWakeWordDetector)
    det.close()
    off = make_wake_detector(WakeConfig(lowered_view=0), FrontendConfig(noise_suppression=0))
    assert isinstance(off, ListeningEars) and off.lowered is None and off.frontend is None and off.describe() == []
    off.close()
