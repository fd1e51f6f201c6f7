"""The listening step before the capture: the audio front end, then the configured wake detector,
plus (for microWakeWord) a second run of the same model on a slowed view of the same audio.

`make_wake_detector` builds it from the config; the detectors themselves are in `tallylight.wake`
and the engines `wake.engine` can name in `tallylight.wake_engines`. This module sits above both (it
reads the registry, the registry's factories import the detectors), so imports run one way:
ears -> wake_engines -> wake, and ears -> frontend -> config -> wake_engines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tallylight.errors import EngineError
from tallylight.pcm import BYTES_PER_SAMPLE, RATE
from tallylight.wake import WakeDetection, WakeDetector
from tallylight.wake_engines import wake_engine

if TYPE_CHECKING:
    from tallylight.config import FrontendConfig, WakeConfig


class SlowedView:
    """A streaming resample that plays the audio `factor` times as fast (factor < 1: slower and lower).

    soxr is told the 16 kHz input is to become 16000/factor Hz; the wake model then reads those samples
    as 16 kHz, i.e. hears every frequency (pitch and formants) scaled by `factor` and the words
    stretched by 1/factor. soxr keeps its own short filter history only (a few ms), no audio beyond.
    """

    def __init__(self, factor: float) -> None:
        import soxr

        self.factor = factor
        self._make = lambda: soxr.ResampleStream(RATE, RATE / factor, 1, dtype="int16", quality="LQ")
        self._stream = self._make()

    def process(self, block: bytes) -> bytes:
        return self._stream.resample_chunk(np.frombuffer(block, dtype="<i2")).tobytes()

    def reset(self) -> None:
        if self._stream is not None:
            self._stream = self._make()  # soxr streams cannot be rewound: a new one holds nothing

    def close(self) -> None:
        """Safe to call twice. Drops the soxr stream now: one still alive when the interpreter exits
        makes nanobind print a page of "leaked instance" warnings over the last lines of the log."""
        self._stream = None


class ListeningEars:
    """What the pipeline calls its wake detector: front end -> the configured detector, plus (for
    microWakeWord) a second run of the same model on a lowered view of the same audio.

    Why the lowered view works: microWakeWord's okay_nabu model hears low and middle voices best; on
    the development voices, a high (female) voice in 15 dB pink noise was heard in 3 of 22 clips. Playing
    the audio 0.82 times as fast scales every frequency by 0.82: a female voice's pitch (~200 Hz) and
    formants (~15-20% above a man's, from a vocal tract ~15% shorter) land where a man's are, inside
    the range the model was trained on. A low voice lowered further falls out of that range, so the
    plain view stays and either view may wake. The lowered view also stretches the words by 1/0.82;
    the model tolerates that as it tolerates slow speakers. A detection of either view counts once:
    the refractory period is shared and counted in input audio.

    `process(block)` takes blocks of any length, starts no thread and does no I/O, like the detectors.
    """

    def __init__(self, plain: WakeDetector, lowered: WakeDetector | None = None, lowered_factor: float = 0.0,
                 frontend: Any = None, refractory_s: float = 2.0) -> None:
        self.plain = plain
        self.lowered = lowered
        self.view = SlowedView(lowered_factor) if lowered is not None else None
        self.frontend = frontend
        self.word, self.engine = plain.word, plain.engine
        self._refractory_samples = int(round(refractory_s * RATE))
        self._fed_samples = 0
        self._blocked_until = -1

    @property
    def threshold(self) -> float:
        return self.plain.threshold

    @property
    def peak_score(self) -> float:
        """The best score of either view since the last reset (for `listen --json` and measurements)."""
        return max(self.plain.peak_score, self.lowered.peak_score if self.lowered is not None else 0.0)

    def process(self, block: bytes) -> WakeDetection | None:
        if self.frontend is not None:
            block = self.frontend.process(block)
        self._fed_samples += len(block) // BYTES_PER_SAMPLE
        hit = self.plain.process(block)
        if self.lowered is not None:
            low = self.lowered.process(self.view.process(block))
            if hit is None and low is not None:
                hit = WakeDetection(low.word, f"{low.engine} (lowered view)", low.score)
        if hit is None or self._fed_samples < self._blocked_until:
            return None
        self._blocked_until = self._fed_samples + self._refractory_samples
        return hit

    def reset(self) -> None:
        self._fed_samples = 0
        self._blocked_until = -1
        for part in (self.frontend, self.view, self.plain, self.lowered):
            if part is not None:
                part.reset()

    def close(self) -> None:
        """Safe to call twice."""
        for part in (self.frontend, self.view, self.plain, self.lowered):
            if part is not None:
                part.close()

    def __enter__(self) -> ListeningEars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> list[str]:
        """The parts that are on, in words, for `tallylight check`."""
        out = list(self.frontend.features()) if self.frontend is not None else []
        if self.view is not None:
            out.append(f"lowered view x{self.view.factor:g}")
        return out


def _make_one(cfg: WakeConfig) -> WakeDetector:
    """The detector of the registered engine `wake.engine` names (tallylight.wake_engines)."""
    spec = wake_engine(cfg.engine)
    problem = spec.unavailable()
    if problem is not None:
        raise EngineError(problem)
    return spec.factory(cfg)


def make_wake_detector(cfg: WakeConfig, frontend_cfg: FrontendConfig | None = None) -> WakeDetector | ListeningEars:
    """The detector `cfg` asks for; with `frontend_cfg`, the pipeline's whole listening step
    (`ListeningEars`: front end, plain view, lowered view). Raises ConfigError or EngineError."""
    plain = _make_one(cfg)
    if frontend_cfg is None:
        return plain
    from tallylight.frontend import make_frontend

    try:
        lowered = _make_one(cfg) if cfg.lowered_view and wake_engine(cfg.engine).lowered_view else None
        frontend = make_frontend(frontend_cfg)
    except BaseException:
        plain.close()
        raise
    return ListeningEars(plain, lowered, cfg.lowered_view, frontend if frontend.enabled else None, cfg.refractory_s)

