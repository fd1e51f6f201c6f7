"""The audio front end: what is done to the microphone's audio before the wake detector hears it.

A plain step, like the others: `process(block) -> block` (16 kHz mono s16le in, the same out, about
the same length), `reset()`, `close()`; no thread, no I/O, and it keeps at most 10 ms of audio
(WebRTC works in 10 ms frames) plus its filter state. Each feature is a `frontend.*` config key:

- `high_pass_hz`: a second-order high-pass (two first-order sections). Room rumble, mains hum
  harmonics under 100 Hz and a mic's DC offset carry no speech information a wake model can use but
  take headroom and move the model's log-mel features.
- `noise_suppression` (0-4) and `auto_gain_dbfs` (0-31): WebRTC's noise suppressor and automatic
  gain control through `webrtc-noise-gain`, the pair other voice satellites run before their wake
  word. WebRTC's processor also applies its own ~80 Hz high-pass whenever it runs.

The measured effect of each (scripts/measure-wake --voices DIR) decides which is on by default; see
config/tallylight.toml.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from tallylight.config import FrontendConfig
from tallylight.errors import EngineError
from tallylight.pcm import BYTES_PER_SAMPLE, RATE

_LOG = logging.getLogger(__name__)

_WEBRTC_FRAME_BYTES = RATE // 100 * BYTES_PER_SAMPLE  # WebRTC's processor takes exactly 10 ms of 16 kHz s16le


class HighPass:
    """Two cascaded first-order high-pass sections, run with numpy over a whole block at once.

    One section is y[n] = a*y[n-1] + a*(x[n] - x[n-1]). Unrolled over a block of N samples that is
    y[n] = a^(n+1) * (y[-1] + sum_{k<=n} a^-k * d[k]) with d = the first difference: a cumulative sum,
    so no per-sample Python loop (which would cost as much CPU as the wake model). Blocks are split into
    pieces of at most 512 samples so that a^-k stays small enough for float64 to be exact to ~1e-12.
    """

    _PIECE = 512

    def __init__(self, cutoff_hz: float, rate: int = RATE) -> None:
        self.a = math.exp(-2.0 * math.pi * cutoff_hz / rate)
        self._up = self.a ** (np.arange(self._PIECE) + 1.0)
        self._down = self.a ** -np.arange(self._PIECE, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        # (previous input, previous output) for each of the two sections
        self._state = [[0.0, 0.0], [0.0, 0.0]]

    def _section(self, x: np.ndarray, state: list[float]) -> np.ndarray:
        n = len(x)
        d = np.diff(x, prepend=state[0])
        y = self._up[:n] * (state[1] + np.cumsum(self._down[:n] * d))
        state[0], state[1] = float(x[-1]), float(y[-1])
        return y

    def filter(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), dtype=np.float64)
        for i in range(0, len(x), self._PIECE):
            y = x[i:i + self._PIECE].astype(np.float64)
            for state in self._state:
                y = self._section(y, state)
            out[i:i + self._PIECE] = y
        return out


class FrontEnd:
    """The configured front-end features, in order: high-pass, then WebRTC noise suppression + gain."""

    def __init__(self, cfg: FrontendConfig) -> None:
        self.cfg = cfg
        self._high_pass = HighPass(cfg.high_pass_hz) if cfg.high_pass_hz > 0 else None
        self._webrtc = None
        self._pending = b""  # under 10 ms of audio waiting for WebRTC's next frame
        if cfg.noise_suppression > 0 or cfg.auto_gain_dbfs > 0:
            try:
                from webrtc_noise_gain import AudioProcessor
            except ImportError as e:
                raise EngineError(
                    f"frontend.noise_suppression / auto_gain_dbfs need webrtc-noise-gain ({e}): run scripts/setup.sh, "
                    "or set both to 0"
                ) from None
            self._make_webrtc = lambda: AudioProcessor(cfg.auto_gain_dbfs, cfg.noise_suppression)
            self._webrtc = self._make_webrtc()
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self._high_pass is not None or self._webrtc is not None

    def features(self) -> list[str]:
        """What is on, in words, for `tallylight check` and the log."""
        out = []
        if self._high_pass is not None:
            out.append(f"high-pass {self.cfg.high_pass_hz:g} Hz")
        if self.cfg.noise_suppression > 0:
            out.append(f"noise suppression {self.cfg.noise_suppression}")
        if self.cfg.auto_gain_dbfs > 0:
            out.append(f"auto gain {self.cfg.auto_gain_dbfs} dBFS")
        return out

    def process(self, block: bytes) -> bytes:
        """16 kHz mono s16le in, the same out. With WebRTC on, output lags input by up to 10 ms."""
        if self._closed:
            raise EngineError("the audio front end was used after close()")
        if not self.enabled or not block:
            return block
        if self._high_pass is not None:
            y = self._high_pass.filter(np.frombuffer(block, dtype="<i2"))
            block = np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()
        if self._webrtc is None:
            return block
        data = self._pending + block if self._pending else block
        usable = len(data) - len(data) % _WEBRTC_FRAME_BYTES
        self._pending = data[usable:]
        process = self._webrtc.Process10ms
        return b"".join(process(data[i:i + _WEBRTC_FRAME_BYTES]).audio for i in range(0, usable, _WEBRTC_FRAME_BYTES))

    def reset(self) -> None:
        """Forget all audio and adaptation (mute, end of a capture, a new file)."""
        self._pending = b""
        if self._high_pass is not None:
            self._high_pass.reset()
        if self._webrtc is not None and not self._closed:
            # The processor has no reset: a new one holds no trace of earlier audio (its noise estimate
            # and gain are learnt from what it heard, so they are audio-derived state too).
            self._webrtc = self._make_webrtc()

    def close(self) -> None:
        """Safe to call twice."""
        self._closed = True
        self._pending = b""
        self._webrtc = None


def make_frontend(cfg: FrontendConfig) -> FrontEnd:
    front = FrontEnd(cfg)
    _LOG.info("audio front end: %s", ", ".join(front.features()) or "off")
    return front
