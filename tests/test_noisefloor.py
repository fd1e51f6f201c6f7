"""The noise floor both recognizers add to the audio they decode (speech/noisefloor.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tallylight.speech.noisefloor import NoiseFloor


def test_digital_silence_gets_a_floor_of_the_asked_level():
    floor = NoiseFloor(100.0)
    out = floor.process(bytes(2 * 16000))
    assert out.dtype == np.dtype("<i2") and out.size == 16000
    assert 90 < out.astype(float).std() < 110


def test_the_same_audio_gets_the_same_noise_after_reset():
    audio = np.arange(-800, 800, dtype="<i2").tobytes()
    floor = NoiseFloor(30.0)
    first = floor.process(audio)
    assert not np.array_equal(first, floor.process(audio))  # the noise goes on, it does not repeat
    floor.reset()
    assert np.array_equal(first, floor.process(audio))


def test_an_odd_byte_waits_for_the_next_block():
    samples = np.array([1000, -2000, 3000], dtype="<i2").tobytes()
    floor = NoiseFloor(0.0)
    a = floor.process(samples[:3])  # one sample and half of the next
    b = floor.process(samples[3:])
    assert a.tolist() == [1000] and b.tolist() == [-2000, 3000]


def test_loud_samples_are_clipped_not_wrapped():
    loud = np.array([32767, -32768] * 500, dtype="<i2").tobytes()
    out = NoiseFloor(100.0).process(loud)
    # Wrapped around, a full-scale sample would come out near the other end of the range.
    assert (out[::2] > 32000).all() and (out[1::2] < -32000).all()
    assert (out[::2] == 32767).any() and (out[1::2] == -32768).any()


def test_a_negative_level_is_refused():
    with pytest.raises(ValueError, match="0 or more"):
        NoiseFloor(-1.0)
