"""One interface over the on-device speech recognizers (pocketsphinx and vosk), and the factory.

A recognizer is a plain step: feed it 16 kHz mono s16le blocks with `process()`, ask for the final
result with `finish()`, `reset()` before the next utterance. It does no I/O of its own and keeps no
audio after `finish()`/`reset()`. Both engines take plain data (a JSGF string, a phrase list), so
they can be built and tested without the command module.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tallylight.config import RecognizerConfig
from tallylight.errors import EngineError

_LOG = logging.getLogger(__name__)

SAMPLE_RATE = 16000

# Where `tallylight models download small-en-us` puts the model when no --dest is given is the
# state dir's models/ folder; `auto` also looks in these (the packaged/system-wide places).
SYSTEM_MODEL_FOLDERS = (Path("/var/lib/tallylight/models"), Path("/usr/share/tallylight/models"))
DEFAULT_VOSK_MODEL = "vosk-model-small-en-us-0.15"
DEFAULT_VOSK_DIRS = tuple(folder / DEFAULT_VOSK_MODEL for folder in SYSTEM_MODEL_FOLDERS)


def model_folders(state_dir: Path | None = None) -> list[Path]:
    """The folders a vosk model is looked for in, first the state dir's (where a download goes)."""
    return [*([Path(state_dir) / "models"] if state_dir is not None else []), *SYSTEM_MODEL_FOLDERS]


def is_vosk_model(folder: Path) -> bool:
    return (folder / "am").is_dir() or (folder / "conf").is_dir()


@dataclass(frozen=True)
class Hypothesis:
    """What the recognizer heard.

    `confidence` is 0..1 (see each engine for what it is made of). `final` is False for a partial
    result during the utterance. `complete` is False when the engine ended in a state that is not
    the end of a grammar phrase (pocketsphinx's "Final result does not match the grammar"): the text
    is then a truncated phrase that must never be trusted as it is; the caller may resolve it to its
    unique completion with `Grammar.complete()` or reject it.
    """

    text: str
    confidence: float
    final: bool
    complete: bool = True


class Recognizer:
    """Interface: feed blocks, get partial and final hypotheses, reset, close."""

    name = "recognizer"

    def process(self, block: bytes) -> Hypothesis | None:
        """Feed audio (16 kHz mono s16le, any length). A partial hypothesis when it changed, else None."""
        raise NotImplementedError

    def finish(self) -> Hypothesis:
        """End of the utterance: the final hypothesis (text "" when nothing was recognized)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the current utterance; ready for the next one."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the engine. Safe to call twice."""
        raise NotImplementedError

    def missing_words(self) -> set[str]:
        """Grammar words that the model cannot recognize (for `tallylight check`)."""
        raise NotImplementedError

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_vosk_model(state_dir: Path | None = None) -> Path | None:
    """The vosk model that `auto` would use when recognizer.vosk_model is empty, if one is installed."""
    for folder in model_folders(state_dir):
        if is_vosk_model(folder / DEFAULT_VOSK_MODEL):
            return folder / DEFAULT_VOSK_MODEL
    return None


def make_recognizer(cfg: RecognizerConfig, *, jsgf: str, phrases: list[str], words: set[str],
                    state_dir: Path | None = None, extra_pronunciations: dict[str, str] | None = None,
                    preroll_s: float | None = None, debug: bool = False) -> Recognizer:
    """The configured recognizer.

    engine "auto": vosk when recognizer.vosk_model (or the default model dir) exists, else
    pocketsphinx, whose English model ships inside its wheel. `words` is the grammar's vocabulary
    (used to say which words a model lacks); `phrases` feed vosk's grammar mode, `jsgf` pocketsphinx.
    `preroll_s` is the capture's pre-roll: pocketsphinx measures its cepstral mean on that much audio.
    """
    engine = cfg.engine
    model_path: Path | None = Path(cfg.vosk_model).expanduser() if cfg.vosk_model else None
    if engine == "auto":
        if model_path is None:
            model_path = default_vosk_model(state_dir)
        engine = "vosk" if model_path is not None and model_path.is_dir() else "pocketsphinx"
        _LOG.info("recognizer: %s%s", engine, f" ({model_path})" if engine == "vosk" else "")
    if engine == "vosk":
        from tallylight.speech.vosk_engine import VoskRecognizer

        if model_path is None:
            model_path = default_vosk_model(state_dir)
        if model_path is None:
            raise EngineError(
                "recognizer.engine = 'vosk' but no model is set: run `tallylight models download "
                "small-en-us` and set recognizer.vosk_model, or set recognizer.engine = 'pocketsphinx'"
            )
        rec: Recognizer = VoskRecognizer(os.fspath(model_path), phrases, debug=debug)
    else:
        from tallylight.speech.sphinx import SphinxRecognizer, prime_window

        options = {} if preroll_s is None else {"prime_s": prime_window(preroll_s)}
        rec = SphinxRecognizer(jsgf, extra_pronunciations, debug=debug, **options)
    missing = rec.missing_words() & set(words) if words else rec.missing_words()
    if missing:
        _LOG.warning("recognizer %s lacks these command words: %s", rec.name, ", ".join(sorted(missing)))
    return rec
