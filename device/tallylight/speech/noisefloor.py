"""A fixed, seeded, inaudible noise floor added to the audio a recognizer decodes.

Synthetic speech and mics behind a hard noise gate give stretches of digital silence (exact zeros)
between and around words. Both recognizers' front ends were trained on audio that always has some
noise: on digital silence their mean and variance estimates go wrong, and words next to the silence
are lost or confused (measured with scripts/measure-intents: pocketsphinx, see sphinx.py; vosk, see
vosk_engine.py). Adding a low, fixed noise floor makes the quietest input look like a quiet room.

The noise is seeded and restarts on `reset()`, so the same audio always decodes the same way.
"""

from __future__ import annotations

import numpy as np


class NoiseFloor:
    """`process(block)`: the block's whole s16le samples with Gaussian noise of standard deviation
    `std` (s16 units; 0 = none) added. A trailing odd byte waits for the next block."""

    def __init__(self, std: float) -> None:
        if not std >= 0:
            raise ValueError(f"a noise floor's standard deviation must be 0 or more, not {std!r}")
        self.std = float(std)
        self.reset()

    def process(self, block: bytes | bytearray | memoryview) -> np.ndarray:
        data = self._carry + bytes(block) if self._carry else bytes(block)
        usable = len(data) // 2 * 2
        self._carry = data[usable:]
        samples = np.frombuffer(data[:usable], dtype="<i2")
        if self.std:
            samples = np.clip(samples + self._rng.normal(0.0, self.std, samples.shape), -32768, 32767)
        return samples.astype("<i2")

    def reset(self) -> None:
        self._carry = b""
        self._rng = np.random.default_rng(0)
