"""Wake word detectors: a pure step fed 16 kHz mono s16le audio, one detection per spoken phrase.

Three engines sit behind one small interface (`WakeDetector`), each registered in
`tallylight.wake_engines` (what `wake.engine` may name, what each needs installed):

- microWakeWord (`pymicro-wakeword`, the default): tiny TFLite models, ~0.003-0.004 CPU-s per
  audio-s here (through `_MicroWakeWordStep`; the library's own loop takes ~0.005-0.007). A
  detection is the library's own windowed decision: the mean of the last `sliding_window_size`
  model probabilities above the cutoff (raw probability crossings give many false counts).
- openWakeWord (`pyopen-wakeword`): its shared mel + embedding features and a per-word model;
  ~50x the CPU of microWakeWord.
- Porcupine (`pvporcupine`): needs a Picovoice AccessKey, activated online once. Picovoice ended its
  free tier on 2026-06-30, so it is for owners who already hold a key, never the default.

The pipeline's listening step around a detector (front end, lowered view) and `make_wake_detector`,
which builds one from the config, are in `tallylight.ears`.

`process(block)` takes blocks of any length, buffers only up to one engine frame (10 ms for
microWakeWord, 80 ms for openWakeWord, 512 samples for Porcupine; the engines keep their own short
feature windows), never starts a thread and does no I/O. It applies edge triggering (a score that
stays above the threshold counts once) and the refractory period (counted in audio fed, not wall
clock), so one utterance gives one `WakeDetection`.

Sensitivity (`wake.sensitivity`, 0..1; higher = more sensitive = lower threshold). 0.5 always means
the model's own recommended threshold. Per engine:

- microWakeWord: the cutoff `c0` from the model's JSON at 0.5, piecewise linear to 0.99 at 0 and to
  0.5 at 1: `cutoff = c0 + (0.5 - s) * 2 * (0.99 - c0)` for s <= 0.5, else
  `c0 - (s - 0.5) * 2 * (c0 - 0.5)`. (okay_nabu: c0 = 0.85, so 0.75 -> 0.675, 1.0 -> 0.5.)
- openWakeWord: `threshold = 0.9 - 0.8 * s` (0.5 -> 0.5, the library's default; 0 -> 0.9, 1 -> 0.1).
- Porcupine: passed through unchanged (Porcupine's own sensitivity, 0.5 is its default).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import math
import statistics
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tallylight.errors import ConfigError, EngineError
from tallylight.pcm import BYTES_PER_SAMPLE, RATE

if TYPE_CHECKING:
    from tallylight.config import WakeConfig

_LOG = logging.getLogger(__name__)


MICROWAKEWORD_MODELS = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft")
OPENWAKEWORD_MODELS = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft", "hey_rhasspy")

# openWakeWord's wake model is fed embeddings of 80 ms of audio; the features step in 1280 samples.
_OWW_FRAME_SAMPLES = 1280
# openWakeWord's features start from 8 s of zero audio ("autofill") after creation and reset, so the
# word model sees a full context of silence at once. The context it can see is 76 mel frames plus 16
# embeddings of 8 frames: about 2.1 s. 38 steps of 1280 samples (3.04 s) of zeros give the same
# features at 3/8 of the CPU, which matters because reset() runs after every capture. It must be a
# whole number of 1280-sample steps: the library's mel windows are placed relative to the autofill,
# and shifting them by half a step (3.0 s) changed 3 of 72 detections in scripts/measure-wake.
_OWW_AUTOFILL_SAMPLES = 38 * _OWW_FRAME_SAMPLES
# microWakeWord's front end makes one feature row per 10 ms (160 samples).
_MWW_FRAME_SAMPLES = 160


@dataclass(frozen=True)
class WakeDetection:
    """One heard wake phrase: the human phrase, the engine that heard it, and its score (0..1)."""

    word: str
    engine: str
    score: float


class WakeDetector:
    """Base of the wake detectors: frames audio for the engine, edge triggering, refractory period.

    Subclasses set `frame_samples` and implement `_score(frame) -> float | None` (the engine's
    decision score after that frame, None when the engine produced no new score), `_threshold`,
    `_engine_reset()` and `_engine_close()`.
    """

    engine = ""
    word = ""
    frame_samples = 160

    def __init__(self, word: str, threshold: float, refractory_s: float) -> None:
        self.word = word
        self._threshold = threshold
        self._refractory_samples = int(round(refractory_s * RATE))
        self._pending = b""  # at most one engine frame of audio, never more
        self._fed_samples = 0  # audio fed since the last reset, in samples
        self._blocked_until = -1  # no detection before this sample count (refractory)
        self._above = False  # the score was above the threshold after the last frame (edge trigger)
        self._closed = False
        # The highest score since the last reset: for measurements and `tallylight check`, not decisions.
        self.peak_score = 0.0

    @property
    def threshold(self) -> float:
        """The score a detection must exceed, after the sensitivity mapping."""
        return self._threshold

    def process(self, block: bytes) -> WakeDetection | None:
        """Feed 16 kHz mono s16le audio of any length; return the first detection it completes."""
        if self._closed:
            raise EngineError(f"the {self.engine} wake detector was used after close()")
        frame_bytes = self.frame_samples * BYTES_PER_SAMPLE
        data = self._pending + bytes(block) if self._pending else bytes(block)
        usable = len(data) - len(data) % frame_bytes
        self._pending = data[usable:]
        found: WakeDetection | None = None
        for start in range(0, usable, frame_bytes):
            score = self._score(data[start : start + frame_bytes])
            self._fed_samples += self.frame_samples
            if score is None:
                continue
            self.peak_score = max(self.peak_score, score)
            above = score > self._threshold
            rising = above and not self._above
            self._above = above
            if rising and self._fed_samples >= self._blocked_until:
                self._blocked_until = self._fed_samples + self._refractory_samples
                if found is None:
                    found = WakeDetection(self.word, self.engine, float(score))
                    _LOG.debug("%s heard %r (score %.3f)", self.engine, self.word, score)
        return found

    def reset(self) -> None:
        """Forget all audio: the partial frame, the engine's windows, the refractory period."""
        self._pending = b""
        self._fed_samples = 0
        self._blocked_until = -1
        self._above = False
        self.peak_score = 0.0
        if not self._closed:
            self._engine_reset()

    def close(self) -> None:
        """Release the engine. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._pending = b""
        self._engine_close()

    def __enter__(self) -> WakeDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for subclasses
    def _score(self, frame: bytes) -> float | None:
        raise NotImplementedError

    def _engine_reset(self) -> None:
        raise NotImplementedError

    def _engine_close(self) -> None:
        raise NotImplementedError


def _piecewise(s: float, at0: float, at_half: float, at1: float) -> float:
    if s <= 0.5:
        return at_half + (0.5 - s) * 2 * (at0 - at_half)
    return at_half - (s - 0.5) * 2 * (at_half - at1)


def microwakeword_cutoff(model_cutoff: float, sensitivity: float) -> float:
    """The sliding-window cutoff for a sensitivity (see the module docstring)."""
    return _piecewise(sensitivity, max(0.99, model_cutoff), model_cutoff, min(0.5, model_cutoff))


def openwakeword_threshold(sensitivity: float) -> float:
    """The probability threshold for a sensitivity (see the module docstring)."""
    return 0.9 - 0.8 * sensitivity


# pymicro-wakeword and pyopen-wakeword have no public way to say where their builtin models and their
# TFLite C library are, and tallylight needs both before a model reaches the library: the model's
# .json for the cutoff and window (the sensitivity mapping), and the C library for _check_tflite (the
# wrappers segfault on a file that is not a TFLite model). So their private names are read here, in
# one place, and checked: an upgrade that moves or renames them fails with a message that says so,
# not with an AttributeError or a missing file deep in start-up. Known to work: pymicro-wakeword
# 2.5.0 and pyopen-wakeword 1.1.0 (scripts/setup.sh installs them). The libraries are imported here,
# not at the top: pymicro-wakeword alone costs ~0.16 s and ~20 MiB, and only the chosen engine is loaded.


@dataclass(frozen=True)
class EngineFiles:
    """Where a wake word library keeps its builtin models and its TFLite C library."""

    models_dir: Path
    tflite_lib: Path


def _import_library(module: str, engine: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EngineError(f"{engine} is not installed ({e}): run scripts/setup.sh or pip install {package}") from None


def _moved(package: str, what: str) -> EngineError:
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = "(unknown version)"
    return EngineError(
        f"{package} {version} no longer has {what} where tallylight reads it (a private name that an upgrade "
        f"moved): install the version scripts/setup.sh installs, or update tallylight.wake for it"
    )


def _builtin_models_dir(package: str, module: Any, first_model: str) -> Path:
    models_dir = getattr(module, "_MODELS_DIR", None)
    if not isinstance(models_dir, Path) or not (models_dir / first_model).is_file():
        raise _moved(package, f"its builtin models ({module.__name__}._MODELS_DIR with {first_model})")
    return models_dir


def microwakeword_files() -> EngineFiles:
    """pymicro-wakeword's builtin models and TFLite library; EngineError when it is missing or moved them."""
    module = _import_library("pymicro_wakeword.microwakeword", "microWakeWord", "pymicro-wakeword")
    models_dir = _builtin_models_dir("pymicro-wakeword", module, f"{MICROWAKEWORD_MODELS[0]}.json")
    lib_dir = getattr(module, "_MODULE_LIB_DIR", None)
    if not isinstance(lib_dir, Path):
        raise _moved("pymicro-wakeword", "its TFLite library (pymicro_wakeword.microwakeword._MODULE_LIB_DIR)")
    lib = next(iter(lib_dir.glob("*tensorflowlite_c.*")), None)
    if lib is None:
        raise EngineError("microWakeWord's TFLite library is missing from its wheel: reinstall pymicro-wakeword")
    return EngineFiles(models_dir, lib)


def openwakeword_files() -> EngineFiles:
    """pyopen-wakeword's builtin models and TFLite library; EngineError when it is missing or moved them."""
    module = _import_library("pyopen_wakeword.openwakeword", "openWakeWord", "pyopen-wakeword")
    models_dir = _builtin_models_dir("pyopen-wakeword", module, f"{OPENWAKEWORD_MODELS[0]}.tflite")
    find_lib = getattr(module, "_find_tensorflowlite_c", None)
    if not callable(find_lib):
        raise _moved("pyopen-wakeword", "its TFLite library (pyopen_wakeword.openwakeword._find_tensorflowlite_c)")
    try:
        lib = find_lib()
    except ValueError as e:
        raise EngineError(f"openWakeWord's TFLite library was not found ({e}): reinstall pyopen-wakeword") from None
    return EngineFiles(models_dir, Path(lib))


def _check_tflite(path: Path, lib_path: Path) -> None:
    """Load the model once through the C API and check it is not NULL.

    The pyopen/pymicro wrappers pass a NULL model on to the interpreter and segfault on a file that
    is not a TFLite flatbuffer; checking here turns that into a one-line error.
    """
    import ctypes

    lib = ctypes.CDLL(str(lib_path))
    lib.TfLiteModelCreateFromFile.argtypes = [ctypes.c_char_p]
    lib.TfLiteModelCreateFromFile.restype = ctypes.c_void_p
    lib.TfLiteModelDelete.argtypes = [ctypes.c_void_p]
    lib.TfLiteModelDelete.restype = None
    model = lib.TfLiteModelCreateFromFile(str(path).encode())
    if not model:
        raise EngineError(f"wake.model: {path} is not a TFLite model file (re-download it, or use a builtin name)")
    lib.TfLiteModelDelete(model)


def _readable_file(path: Path, kind: str) -> Path:
    path = path.expanduser()
    if not path.exists():
        raise ConfigError(f"wake.model: no such file {path} (give a builtin name, or the path to a {kind})")
    if not path.is_file():
        raise ConfigError(f"wake.model: {path} is a folder, not a {kind}")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConfigError(f"wake.model: cannot read {path} ({e.strerror}): check its permissions") from None
    return path


def _unknown_model(engine: str, model: str, names: list[str], suffix: str) -> ConfigError:
    return ConfigError(
        f"wake.model: {model!r} is not a builtin {engine} model (builtins: {', '.join(names)}; "
        f"or give the path to a {suffix} file)"
    )


# --------------------------------------------------------------------------------------------------
class MicroWakeWordDetector(WakeDetector):
    """microWakeWord through pymicro-wakeword, using its sliding-window mean as the score."""

    engine = "microwakeword"
    frame_samples = _MWW_FRAME_SAMPLES

    def __init__(self, model: str = "okay_nabu", sensitivity: float = 0.5, refractory_s: float = 2.0) -> None:
        files = microwakeword_files()
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures

        if model in MICROWAKEWORD_MODELS:
            config_path = files.models_dir / f"{model}.json"
        elif model.endswith(".json") or "/" in model:
            config_path = _readable_file(Path(model), "microWakeWord .json model config")
        else:
            raise _unknown_model("microWakeWord", model, list(MICROWAKEWORD_MODELS), ".json")
        if config_path.suffix != ".json":
            raise ConfigError(f"wake.model: microWakeWord models are .json configs beside their .tflite, not {config_path.name}")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            tflite = config_path.parent / config["model"]
            cutoff = float(config["micro"]["probability_cutoff"])
            window = int(config["micro"]["sliding_window_size"])
            phrase = str(config.get("wake_word") or config_path.stem.replace("_", " "))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"wake.model: {config_path} is not a microWakeWord model config ({type(e).__name__}: {e}); "
                "it needs model, wake_word and micro.probability_cutoff / sliding_window_size"
            ) from None
        _readable_file(tflite, "microWakeWord .tflite model (named in the .json)")
        _check_tflite(tflite, files.tflite_lib)
        try:
            self._mww = MicroWakeWord(
                id=tflite.stem,
                wake_word=phrase,
                tflite_model=tflite,
                probability_cutoff=cutoff,
                sliding_window_size=window,
                trained_languages=list(config.get("trained_languages", [])),
                libtensorflowlite_c_path=files.tflite_lib,
            )
            self._step = _MicroWakeWordStep.for_model(self._mww)
            self._features = MicroWakeWordFeatures() if self._step is None else None
        except (OSError, ValueError, RuntimeError) as e:
            raise EngineError(f"microWakeWord could not load {tflite}: {e} (is it a microWakeWord model?)") from None
        self.model_cutoff = cutoff
        self._rows = 0  # feature rows given to the model since the last reset
        # The model runs once per `stride` feature rows (10 ms each): hand the front end that much
        # audio per call, not 10 ms at a time, so the per-call overhead is paid once per inference.
        self.frame_samples = _MWW_FRAME_SAMPLES * max(1, int(self._mww.stride))
        super().__init__(phrase.lower(), microwakeword_cutoff(cutoff, sensitivity), refractory_s)

    def _score(self, frame: bytes) -> float | None:
        if self._step is not None:
            return self._step.process(frame)
        score = None
        for features in self._features.process_streaming(frame):
            # The library's windowed probability: the mean of the last sliding_window_size outputs,
            # 0.0 until the window is full. The model runs once per `stride` feature rows; in between
            # the library returns a placeholder 0.0 that is not a new score.
            prob = self._mww.process_streaming_prob(features)
            self._rows += 1
            if prob is not None and self._rows % self._mww.stride == 0:
                score = prob
        return score

    def _engine_reset(self) -> None:
        self._rows = 0
        if self._step is not None:
            self._step.reset()
        else:
            self._features.reset()
        self._mww.reset()  # reloads the model: drops its streaming state

    def _engine_close(self) -> None:
        self._mww.close()


class _MicroWakeWordStep:
    """pymicro-wakeword's streaming step (`MicroWakeWordFeatures.process_streaming` +
    `MicroWakeWord.process_streaming_prob`), giving the same probabilities bit for bit for about
    two thirds of the CPU (this step is most of what listening costs).

    The library's own step spends 20-30 µs per inference in `statistics.mean` (exact Fraction
    arithmetic over the 5-probability window) and more in per-call numpy and ctypes set-up. Here:
    - feature rows go straight from the front end into one quantising expression, the same float64
      arithmetic as the library's (`round(x / scale + zero_point)`, cast to the input type);
    - the model's one output byte is dequantised through a table made once with the library's own
      expression for every possible byte;
    - the window mean is `fsum / n`: equal to `statistics.mean` (the correctly rounded mean) whenever
      the sum is exact, which is checked each time. It is for the builtin models, whose outputs are
      multiples of 1/256; otherwise `statistics.mean` is used.
    It drives the library's interpreter through the handles the library keeps (`lib`, `interpreter`,
    tensors, quantisation), read on every call because `MicroWakeWord.reset()` reloads the model.
    `for_model` returns None when this library version does not have them; the library's own step is
    used then. tests/test_wake.py compares both steps on speech.
    """

    def __init__(self, mww: Any, frontend: Any, out_table: dict[int, float], out_dtype: Any) -> None:
        from pymicro_wakeword.microwakeword import BYTES_PER_CHUNK

        self._mww = mww
        self._frontend = frontend
        self._chunk = BYTES_PER_CHUNK
        self._stride = int(mww.stride)
        self._window: deque[float] = deque(maxlen=int(mww.sliding_window_size))
        self._rows: list[list[float]] = []
        self._left = b""  # audio the front end did not consume (it normally takes every 10 ms chunk)
        self._out = np.zeros(1, dtype=out_dtype)
        self._out_ptr = self._out.ctypes.data
        self._out_table = out_table

    @classmethod
    def for_model(cls, mww: Any) -> _MicroWakeWordStep | None:
        try:
            from pymicro_features import MicroFrontend

            needed = ("lib", "interpreter", "input_tensor", "output_tensor", "input_scale", "input_zero_point",
                      "input_dtype", "output_scale", "output_zero_point", "output_dtype", "stride", "sliding_window_size")
            if not all(hasattr(mww, name) for name in needed):
                return None
            out_dtype = np.dtype(mww.output_dtype)
            if out_dtype.itemsize != 1 or mww.lib.TfLiteTensorByteSize(mww.output_tensor) != 1:
                return None  # the table below covers one 8-bit output only
            info = np.iinfo(out_dtype)
            codes = np.arange(info.min, info.max + 1).astype(out_dtype)
            # Exactly the library's dequantising expression, applied to every byte the model can give.
            values = (codes.astype(np.float32) - mww.output_zero_point) * mww.output_scale
            table = {int(c): float(v) for c, v in zip(codes.tolist(), values.tolist())}
            return cls(mww, MicroFrontend(), table, out_dtype)
        except (ImportError, AttributeError, TypeError, ValueError) as e:
            _LOG.debug("microWakeWord: using the library's own streaming step (%s)", e)
            return None

    def process(self, audio: bytes) -> float | None:
        """Feed audio; return the windowed probability after the last inference it completed
        (0.0 until the window is full, as the library), or None when the model did not run."""
        if self._left:
            audio, self._left = self._left + audio, b""
        chunk, n, i = self._chunk, len(audio), 0
        score = None
        while i + chunk <= n:
            result = self._frontend.process_samples(audio[i:i + chunk])
            i += result.samples_read * 2
            if result.features:
                self._rows.append(result.features)
                if len(self._rows) == self._stride:
                    score = self._infer()
        if i < n:
            self._left = audio[i:]
        return score

    def _infer(self) -> float:
        mww = self._mww
        rows, self._rows = self._rows, []
        quant = np.round(np.array(rows, dtype=np.float64) / mww.input_scale + mww.input_zero_point).astype(mww.input_dtype)
        lib = mww.lib
        lib.TfLiteTensorCopyFromBuffer(mww.input_tensor, quant.ctypes.data, quant.nbytes)
        lib.TfLiteInterpreterInvoke(mww.interpreter)
        lib.TfLiteTensorCopyToBuffer(mww.output_tensor, self._out_ptr, 1)
        window = self._window
        window.append(self._out_table[self._out.item()])
        if len(window) < window.maxlen:
            return 0.0
        total = math.fsum(window)
        if math.fsum((*window, -total)) != 0.0:  # the sum was rounded: take the exact mean
            return statistics.mean(window)
        return total / len(window)

    def reset(self) -> None:
        self._frontend.reset()
        self._rows = []
        self._left = b""
        self._window.clear()


# --------------------------------------------------------------------------------------------------
class OpenWakeWordDetector(WakeDetector):
    """openWakeWord through pyopen-wakeword: its mel/embedding features and a wake word model."""

    engine = "openwakeword"
    frame_samples = _OWW_FRAME_SAMPLES

    def __init__(self, model: str = "okay_nabu", sensitivity: float = 0.5, refractory_s: float = 2.0) -> None:
        files = openwakeword_files()
        from pyopen_wakeword import OpenWakeWord, OpenWakeWordFeatures

        if model in OPENWAKEWORD_MODELS:
            path = files.models_dir / f"{model}.tflite"
            phrase = model.replace("_", " ")
        elif model.endswith(".tflite") or "/" in model:
            path = _readable_file(Path(model), "openWakeWord .tflite model")
            if path.suffix != ".tflite":
                raise ConfigError(f"wake.model: openWakeWord models are .tflite files, not {path.name}")
            # Model files are usually named like hey_tally_v0.1.tflite: keep the words.
            phrase = " ".join(p for p in path.stem.replace("-", "_").split("_") if p and p[:2].lower() != "v0")
        else:
            raise _unknown_model("openWakeWord", model, list(OPENWAKEWORD_MODELS), ".tflite")
        lib = files.tflite_lib
        _check_tflite(path, lib)
        try:
            self._oww = OpenWakeWord.from_model(path, libtensorflowlite_c_path=lib)
            tflite, tensor = self._oww.lib, self._oww.input_tensor
            dims = [tflite.TfLiteTensorDim(tensor, i) for i in range(tflite.TfLiteTensorNumDims(tensor))]
            if len(dims) != 3 or dims[2] != 96:
                self._oww.close()
                raise EngineError(f"wake.model: {path} is not an openWakeWord model (input shape {dims}, expected [1, N, 96])")
            self._features = OpenWakeWordFeatures.from_builtin(libtensorflowlite_c_path=lib)
            self._features.new_audio_samples = _OWW_AUTOFILL_SAMPLES
        except (OSError, ValueError, RuntimeError) as e:
            raise EngineError(f"openWakeWord could not load {path}: {e}") from None
        super().__init__(phrase.lower(), openwakeword_threshold(sensitivity), refractory_s)

    def _score(self, frame: bytes) -> float | None:
        # One 80 ms frame gives at most one embedding and one probability; keep the highest if the
        # library ever yields more, so a peak inside the frame is not lost.
        score = None
        for embeddings in self._features.process_streaming(frame):
            for prob in self._oww.process_streaming(embeddings):
                score = prob if score is None else max(score, prob)
        return score

    def _engine_reset(self) -> None:
        self._features.reset()  # zeroes its audio and mel windows
        self._features.new_audio_samples = _OWW_AUTOFILL_SAMPLES
        self._oww.reset()

    def _engine_close(self) -> None:
        self._oww.close()
        self._features.close()


# --------------------------------------------------------------------------------------------------
_PORCUPINE_NO_FREE_TIER = (
    "Picovoice ended its free tier on 2026-06-30, so only owners of an existing AccessKey can use it; "
    "otherwise set wake.engine = \"microwakeword\""
)


def read_access_key(key_file: str) -> str:
    """The Picovoice AccessKey from `wake.porcupine_access_key_file`, with a one-line error per problem."""
    if not key_file:
        raise ConfigError(
            "wake.porcupine_access_key_file is not set: Porcupine needs a Picovoice AccessKey in a file "
            f"readable only by tallylight. {_PORCUPINE_NO_FREE_TIER}"
        )
    path = Path(key_file).expanduser()
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"wake.porcupine_access_key_file: no such file {path} (put your Picovoice AccessKey there). "
            f"{_PORCUPINE_NO_FREE_TIER}"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"wake.porcupine_access_key_file: {path} is a folder: give the file holding the AccessKey") from None
    except PermissionError:
        raise ConfigError(f"wake.porcupine_access_key_file: {path} is not readable by this user (check its owner and mode)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"wake.porcupine_access_key_file: cannot read {path} ({e}): it must be a text file") from None
    if not key:
        raise ConfigError(f"wake.porcupine_access_key_file: {path} is empty: paste your Picovoice AccessKey into it")
    return key


def _porcupine_error(e: Exception, key_file: str) -> EngineError:
    """Picovoice's exception -> one line that says what to do."""
    import pvporcupine as pv

    stack = " ".join(getattr(e, "message_stack", []) or [])
    if isinstance(e, pv.PorcupineActivationLimitError):
        return EngineError("Porcupine: this AccessKey has reached its activation limit: free a device in the Picovoice Console "
                           "or use wake.engine = \"microwakeword\"")
    if isinstance(e, pv.PorcupineActivationThrottledError):
        return EngineError("Porcupine: activation throttled by Picovoice: wait a while and restart, or use wake.engine = \"microwakeword\"")
    if isinstance(e, pv.PorcupineActivationRefusedError):
        return EngineError(f"Porcupine: Picovoice refused this AccessKey (in {key_file}): check the key in the Picovoice Console. "
                           f"{_PORCUPINE_NO_FREE_TIER}")
    if isinstance(e, pv.PorcupineActivationError):
        return EngineError("Porcupine: AccessKey activation failed (it needs the internet once): connect the Pi, "
                           "or use wake.engine = \"microwakeword\"")
    if isinstance(e, pv.PorcupineInvalidArgumentError) and "AccessKey" in stack:
        return EngineError(f"Porcupine: the AccessKey in {key_file} is not valid (Failed to parse AccessKey): "
                           "copy it again from the Picovoice Console")
    if isinstance(e, pv.PorcupineKeyError):
        return EngineError(f"Porcupine: the AccessKey in {key_file} was rejected: copy it again from the Picovoice Console")
    detail = "; ".join(getattr(e, "message_stack", []) or []) or str(e).splitlines()[0]
    return EngineError(f"Porcupine failed to start ({type(e).__name__}: {detail}): check wake.model and your .ppn file")


_PORCUPINE_FLUSH_S = 3  # seconds of zeros that reset() feeds Porcupine (longer than any keyword)


class PorcupineDetector(WakeDetector):
    """Picovoice Porcupine: a builtin keyword or a .ppn file; fed exactly frame_length samples."""

    engine = "porcupine"

    def __init__(self, model: str = "porcupine", sensitivity: float = 0.5, refractory_s: float = 2.0, access_key_file: str = "") -> None:
        key = read_access_key(access_key_file)
        try:
            import pvporcupine
        except (ImportError, OSError, NotImplementedError, RuntimeError, ValueError) as e:
            raise EngineError(f"Porcupine is not available on this machine ({type(e).__name__}: {e}): pip install pvporcupine, "
                              "or use wake.engine = \"microwakeword\"") from None
        keywords = sorted(pvporcupine.KEYWORDS)
        if model in keywords:
            kwargs: dict[str, Any] = {"keywords": [model]}
            phrase = model
        elif model.endswith(".ppn") or "/" in model:
            path = _readable_file(Path(model), "Porcupine .ppn keyword file")
            if path.suffix != ".ppn":
                raise ConfigError(f"wake.model: Porcupine keyword files are .ppn files, not {path.name}")
            kwargs = {"keyword_paths": [str(path)]}
            # Console downloads are named like hey-tally_en_raspberry-pi_v3_0_0.ppn.
            phrase = path.stem.split("_")[0].replace("-", " ")
        else:
            raise _unknown_model("Porcupine", model, keywords, ".ppn")
        try:
            self._pv = pvporcupine.create(access_key=key, sensitivities=[float(sensitivity)], **kwargs)
        except pvporcupine.PorcupineError as e:
            raise _porcupine_error(e, access_key_file) from None
        except (ValueError, OSError) as e:
            raise EngineError(f"Porcupine failed to start ({e}): check wake.model and your .ppn file") from None
        if self._pv.sample_rate != RATE:
            self._pv.delete()
            raise EngineError(f"Porcupine wants {self._pv.sample_rate} Hz audio; tallylight feeds {RATE} Hz")
        self.frame_samples = self._pv.frame_length
        super().__init__(phrase.lower(), float(sensitivity), refractory_s)
        # Porcupine gives a yes/no per frame, not a score: report 1.0 and trigger on > 0.5.
        self._threshold = 0.5

    def _score(self, frame: bytes) -> float | None:
        pcm = np.frombuffer(frame, dtype="<i2").tolist()
        try:
            return 1.0 if self._pv.process(pcm) >= 0 else 0.0
        except Exception as e:  # a PorcupineError mid-stream (e.g. the key was revoked)
            raise _porcupine_error(e, "the AccessKey file") from None

    def _engine_reset(self) -> None:
        # Porcupine's API has no reset, and re-creating it re-checks the AccessKey (online). Its
        # state only spans a short window, so push that out with zeros: no earlier audio remains.
        silence = [0] * self.frame_samples
        for _ in range(_PORCUPINE_FLUSH_S * RATE // self.frame_samples):
            self._pv.process(silence)

    def _engine_close(self) -> None:
        self._pv.delete()


def wake_phrase(cfg: WakeConfig) -> str:
    """The phrase wake.model listens for, without loading the model (for the terminal light's words):
    a microWakeWord .json config's wake_word, else the model's name ("okay_nabu" -> "okay nabu")."""
    path = Path(cfg.model).expanduser()
    if path.suffix == ".json":
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["wake_word"]).lower()
        except (OSError, ValueError, KeyError, TypeError):
            pass  # make_wake_detector says what is wrong with the file
    return path.stem.replace("_", " ")
