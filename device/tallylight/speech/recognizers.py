"""The recognizers `recognizer.engine` can name: one `RecognizerSpec` each in `RECOGNIZERS`.

Light on purpose: `config.py` reads the names from here to check `recognizer.engine`, and
`tallylight check` reads what each recognizer needs. The engine code (pocketsphinx, vosk, numpy) is
imported only by a spec's factory, when a recognizer is built (`engines.make_recognizer`).

Besides the registered names, recognizer.engine takes two modes (`MODES`): "both" (the recognizer
whose spec has a `Pairing` beside the partner it names, weighed by `understand.PairedUnderstander`)
and "auto" (that pair when the lead is `ready`, else the partner alone: vosk beside pocketsphinx when
a vosk model is installed, else pocketsphinx). Where a vosk model is looked for is here too, for
vosk's `ready` and `tallylight models`.

A new recognizer is one module with its `Recognizer` and one `register_recognizer(RecognizerSpec(...))`:
docs/extending.md shows one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tallylight.choices import Choice
from tallylight.errors import ConfigError, EngineError
from tallylight.needs import unavailable

if TYPE_CHECKING:
    from tallylight.config import RecognizerConfig
    from tallylight.speech.recognizer import Recognizer

class RecognizerMode(Choice):
    """The values of recognizer.engine that are not one registered recognizer (the config keeps the
    value a plain string: the others are the registry's names)."""

    AUTO = "auto"  # the pair when its lead is ready, else the partner alone
    BOTH = "both"  # the pair


MODES = tuple(RecognizerMode)


@dataclass(frozen=True)
class RecognizerInputs:
    """What a recognizer is built from: the [recognizer] section and the grammar in both forms.

    `jsgf` is the grammar for pocketsphinx-like decoders, `phrases` every phrase (vosk's grammar
    mode), `words` the vocabulary; `vosk_model` the model folder recognizer.vosk_model names, else
    the default one installed, else None; `preroll_s` the capture's pre-roll (None outside captures).
    """

    cfg: RecognizerConfig
    jsgf: str
    phrases: list[str]
    words: set[str]
    state_dir: Path | None = None
    extra_pronunciations: dict[str, str] | None = None
    preroll_s: float | None = None
    debug: bool = False
    vosk_model: Path | None = None


@dataclass(frozen=True)
class Pairing:
    """How a recognizer (the lead) hears each capture together with `partner`, and whose command is
    taken (recognizer.engine = "both"). The rule, and the measurements that chose these numbers:
    `understand.PairedUnderstander`.

    `wins_from`: the lead's confidence from which its command beats a different one of the partner's.
    `alone_min`, `partner_alone_min`: the confidence a command of the lead, or of the partner, needs
    when the other hears no command. A lead's command sure enough for both rules is the answer without
    the partner's end of utterance. `ready(cfg, state_dir)`: whether the lead can run here (vosk: its
    model is installed); "auto" runs the pair only then.
    """

    partner: str
    wins_from: float
    alone_min: float
    partner_alone_min: float
    ready: Callable[[RecognizerConfig, Path | None], bool]


@dataclass(frozen=True)
class RecognizerSpec:
    """One recognizer.

    `factory(inputs)` builds it (raising EngineError or ConfigError with one line). `needs`: the
    modules it imports, and `install` the one line that says how to get them. `check(cfg)`: its own
    check of the [recognizer] section at load time, a message (starting with the key) naming the fix,
    or None. `options`: the [recognizer] keys it reads besides engine and min_confidence. `pairing`:
    how it leads recognizer.engine = "both" with another recognizer, or None.
    """

    name: str
    factory: Callable[[RecognizerInputs], Recognizer]
    needs: tuple[str, ...] = ()
    install: str = ""
    options: tuple[str, ...] = ()
    check: Callable[[RecognizerConfig], str | None] | None = None
    pairing: Pairing | None = None

    def unavailable(self) -> str | None:
        """Why this recognizer cannot run here (one line with the fix), or None."""
        return unavailable(f"recognizer.engine = {self.name!r}", self.needs, self.install)


RECOGNIZERS: dict[str, RecognizerSpec] = {}


def register_recognizer(spec: RecognizerSpec) -> RecognizerSpec:
    """Add a recognizer; `recognizer.engine = "<name>"` can then choose it."""
    if spec.name in RECOGNIZERS or spec.name in MODES:
        raise ValueError(f"there is already a recognizer {spec.name!r}")
    RECOGNIZERS[spec.name] = spec
    return spec


def engine_choices() -> tuple[str, ...]:
    """What recognizer.engine may say: "auto", every registered recognizer, "both"."""
    return (RecognizerMode.AUTO.value, *RECOGNIZERS, RecognizerMode.BOTH.value)


def pairing() -> tuple[str, Pairing]:
    """The recognizer the modes "both" and "auto" lead with, and its pairing (the first registered spec
    that has one)."""
    for spec in RECOGNIZERS.values():
        if spec.pairing is not None:
            return spec.name, spec.pairing
    raise ConfigError("recognizer.engine: no registered recognizer pairs with another, so \"both\" and \"auto\" "
                      f"cannot run: set recognizer.engine to one of {', '.join(RECOGNIZERS)}")


def recognizer(name: str) -> RecognizerSpec:
    """The spec `recognizer.engine = name` means (not a mode); ConfigError naming the choices otherwise."""
    spec = RECOGNIZERS.get(name)
    if spec is None:
        raise ConfigError(f"recognizer.engine must be one of {', '.join(engine_choices())}, not {name!r}")
    return spec


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


def _vosk_model_installed(cfg: RecognizerConfig, state_dir: Path | None) -> bool:
    """vosk can run: the model recognizer.vosk_model names, or else the default one, is a folder."""
    model = Path(cfg.vosk_model).expanduser() if cfg.vosk_model else default_vosk_model(state_dir)
    return model is not None and model.is_dir()


# -- the builtin recognizers. Their factories import the engine modules when a recognizer is built.
def _vosk(inputs: RecognizerInputs) -> Recognizer:
    from tallylight.speech.vosk_engine import VoskRecognizer  # lazy import: the engine only when it is built

    if inputs.vosk_model is None:
        raise EngineError(
            "recognizer.engine = 'vosk' but no model is set: run `tallylight models download "
            "small-en-us` and set recognizer.vosk_model, or set recognizer.engine = 'pocketsphinx'"
        )
    return VoskRecognizer(os.fspath(inputs.vosk_model), inputs.phrases, debug=inputs.debug)


def _pocketsphinx(inputs: RecognizerInputs) -> Recognizer:
    from tallylight.speech.sphinx import SphinxRecognizer, prime_window  # lazy import: numpy and the engine only when it is built

    options = {} if inputs.preroll_s is None else {"prime_s": prime_window(inputs.preroll_s)}
    return SphinxRecognizer(inputs.jsgf, inputs.extra_pronunciations, debug=inputs.debug, **options)


register_recognizer(RecognizerSpec(
    "vosk", _vosk, needs=("vosk",),
    install="pip install vosk into tallylight's venv (scripts/setup.sh does), or set recognizer.engine = \"pocketsphinx\"",
    options=("vosk_model",),
    # Chosen on the tuned voices and rejection sets (understand.PairedUnderstander says how).
    pairing=Pairing("pocketsphinx", wins_from=0.8, alone_min=0.8, partner_alone_min=0.9, ready=_vosk_model_installed)))
register_recognizer(RecognizerSpec(
    "pocketsphinx", _pocketsphinx, needs=("pocketsphinx",),
    install="run scripts/setup.sh or pip install pocketsphinx",
    options=("pronunciations",)))
