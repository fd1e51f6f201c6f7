"""The configured speech recognizer: which engine `auto` picks, where its model is, and building it.

The recognizers themselves are registered in `speech.recognizers`; each spec's factory imports its
engine (vosk, pocketsphinx) only when a recognizer is built, so the one not chosen costs no start
time or memory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tallylight.errors import EngineError
from tallylight.speech.recognizers import RecognizerInputs, RecognizerMode, recognizer

if TYPE_CHECKING:
    from tallylight.config import RecognizerConfig
    from tallylight.speech.recognizer import Recognizer

_LOG = logging.getLogger(__name__)

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


def default_vosk_model(state_dir: Path | None = None) -> Path | None:
    """The vosk model that `auto` would use when recognizer.vosk_model is empty, if one is installed."""
    for folder in model_folders(state_dir):
        if is_vosk_model(folder / DEFAULT_VOSK_MODEL):
            return folder / DEFAULT_VOSK_MODEL
    return None


def make_recognizer(cfg: RecognizerConfig, *, jsgf: str, phrases: list[str], words: set[str],
                    state_dir: Path | None = None, extra_pronunciations: dict[str, str] | None = None,
                    preroll_s: float | None = None, debug: bool = False) -> Recognizer:
    """The configured recognizer: the registered one recognizer.engine names (speech.recognizers).

    engine "auto": vosk when recognizer.vosk_model (or the default model dir) exists, else
    pocketsphinx, whose English model ships inside its wheel. `words` is the grammar's vocabulary
    (used to say which words a model lacks); `phrases` feed vosk's grammar mode, `jsgf` pocketsphinx.
    `preroll_s` is the capture's pre-roll: pocketsphinx measures its cepstral mean on that much audio.
    """
    engine = cfg.engine
    model_path: Path | None = Path(cfg.vosk_model).expanduser() if cfg.vosk_model else None
    if engine == RecognizerMode.AUTO:
        if model_path is None:
            model_path = default_vosk_model(state_dir)
        engine = "vosk" if model_path is not None and model_path.is_dir() else "pocketsphinx"
        _LOG.info("recognizer: %s%s", engine, f" ({model_path})" if engine == "vosk" else "")
    spec = recognizer(engine)
    problem = spec.unavailable()
    if problem is not None:
        raise EngineError(problem)
    rec = spec.factory(RecognizerInputs(
        cfg, jsgf, phrases, words, state_dir=state_dir, extra_pronunciations=extra_pronunciations,
        preroll_s=preroll_s, debug=debug,
        vosk_model=model_path if model_path is not None else default_vosk_model(state_dir)))
    missing = rec.missing_words() & set(words) if words else rec.missing_words()
    if missing:
        _LOG.warning("recognizer %s lacks these command words: %s", rec.name, ", ".join(sorted(missing)))
    return rec
