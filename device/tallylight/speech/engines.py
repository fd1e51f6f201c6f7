"""The configured speech recognizer: which engine `auto` picks, and building it.

The recognizers themselves are registered in `speech.recognizers`; each spec's factory imports its
engine (vosk, pocketsphinx) only when a recognizer is built, so the one not chosen costs no start
time or memory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tallylight.errors import EngineError
from tallylight.speech.recognizers import RecognizerInputs, RecognizerMode, default_vosk_model, pairing, recognizer

if TYPE_CHECKING:
    from tallylight.config import RecognizerConfig
    from tallylight.speech.recognizer import Recognizer

_LOG = logging.getLogger(__name__)

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
        lead, pair = pairing()  # vosk when its model is there, else pocketsphinx
        engine = lead if pair.ready(cfg, state_dir) else pair.partner
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
