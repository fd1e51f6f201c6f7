"""vosk (Kaldi) in grammar mode: the recognizer for a Pi with a downloaded model.

Grammar mode (`KaldiRecognizer(model, rate, json_phrases)`) limits the search to the words of the
command phrases plus `[unk]`, which absorbs speech that is not a command. Note that vosk compiles
the phrase list into a loop over its words, not a strict phrase list: it can return "lights up"
when the grammar has "lights on" and "volume up". The command matcher must check the text against
the real phrases and reject what is not one; `complete` is set here when the text is exactly one
of the phrases.

The model's vocabulary is asked word by word with `vosk_model_find_word` (-1 = not in it); models
whose grammar graph lacks a word make vosk log "Ignoring word missing in vocabulary" and drop it,
so `missing_words()` names them up front for `tallylight check`.

A noise floor (`NoiseFloor`, about -50 dBFS) is added to every block: on espeak-ng clips with digital
silence around the words, vosk lost or swapped words next to the silence (scripts/measure-intents,
tuned voices, an English small model: 89.5% right without it, 93.3% with -60 dBFS, 94.6% with
-50 dBFS; -40 dBFS let one of the 28 non-command recordings through).

Confidence: vosk's per-word confidence (SetWords(True); the word's lattice posterior); the
hypothesis takes the lowest word's, since one unsure word is enough to make a command wrong.
`[unk]` stays in the text and does not count in the confidence: the capture's pre-roll holds the
wake phrase, which a model without "nabu" hears as "okay [unk]". The Understander drops the wake
phrase from the start of a result, each of its words heard as itself or as `[unk]`, and rejects
every other result that holds an `[unk]`.
"""

from __future__ import annotations

import json
import logging
import os

from tallylight.errors import EngineError
from tallylight.pcm import RATE
from tallylight.speech.noisefloor import NoiseFloor
from tallylight.speech.recognizer import Hypothesis, Recognizer

_LOG = logging.getLogger(__name__)

# vosk is imported where a recognizer or model is made, not here: importing it costs about 0.2 s and
# 25 MiB (measured on x86; more of the start-up on a Pi Zero 2 W), which a device on pocketsphinx,
# or a command like `tallylight ledger`, should not pay.

UNK = "[unk]"
NOISE_FLOOR = 100.0  # standard deviation of the added noise floor, in s16 units (about -50 dBFS)


class VoskRecognizer(Recognizer):
    """Kaldi grammar-mode recognition through vosk."""

    name = "vosk"

    def __init__(self, model_path: str, phrases: list[str], sample_rate: int = RATE, *,
                 noise_floor: float = NOISE_FLOOR, debug: bool = False, model=None) -> None:
        """`model` may be an already loaded `vosk.Model` for `model_path` (to share one between
        recognizers, as the tests do with a large model); it is not freed by `close()` then."""
        try:
            import vosk
        except ImportError as e:  # pragma: no cover - a dependency of the package
            raise EngineError(f"vosk is not installed ({e}): run scripts/setup.sh or pip install vosk") from None
        # Kaldi logs every model load and grammar warning to stderr; -2 keeps only errors.
        vosk.SetLogLevel(0 if debug else -2)
        if model is None:
            model = load_model(model_path, debug=debug)
            self._owns_model = True
        else:
            self._owns_model = False
        self._model = model
        self.model_path = model_path
        self.phrases = [" ".join(p.split()) for p in phrases if p.strip()]
        if not self.phrases:
            raise EngineError("the vosk grammar has no phrases: define at least one command")
        self._phrase_set = set(self.phrases)
        self.words = {w for p in self.phrases for w in p.split()}
        self._has_unk = model.vosk_model_find_word(UNK) >= 0
        self._grammar = json.dumps(self.phrases + [UNK], ensure_ascii=False)
        self._rate = float(sample_rate)
        self._floor = NoiseFloor(noise_floor)
        self._rec = self._new_recognizer()  # now, so that a grammar vosk cannot build fails at start-up
        self._closed = False
        self._last_partial = ""
        self._segments: list[dict] = []  # results vosk ended on its own (its endpointer) mid-utterance

    def _new_recognizer(self):
        import vosk

        try:
            rec = vosk.KaldiRecognizer(self._model, self._rate, self._grammar)
        except Exception as e:  # vosk raises a bare Exception on any failure
            raise EngineError(f"vosk could not build the command grammar: {e}") from None
        rec.SetWords(True)
        return rec

    def missing_words(self) -> set[str]:
        return {w for w in self.words if self._model.vosk_model_find_word(w) < 0}

    @property
    def has_unk(self) -> bool:
        """Whether the model has the `[unk]` garbage word (English vosk models do; some do not)."""
        return self._has_unk

    def process(self, block: bytes) -> Hypothesis | None:
        if self._closed:
            raise EngineError("the recognizer was closed")
        if not block:
            return None
        if self._rec is None:
            self._rec = self._new_recognizer()
        if self._rec.AcceptWaveform(self._floor.process(block).tobytes()):
            # vosk's own endpointer closed a segment; keep it, the utterance goes on until finish().
            self._segments.append(json.loads(self._rec.Result()))
            text = self._joined_text()
        else:
            partial = json.loads(self._rec.PartialResult()).get("partial", "")
            text = " ".join(filter(None, [self._joined_text(), " ".join(partial.split())]))
        if text == self._last_partial:
            return None
        self._last_partial = text
        return Hypothesis(text, 0.0, final=False, complete=text in self._phrase_set)

    def finish(self) -> Hypothesis:
        if self._closed:
            raise EngineError("the recognizer was closed")
        if self._rec is not None:
            self._segments.append(json.loads(self._rec.FinalResult()))
        words = [w for seg in self._segments for w in seg.get("result", [])]
        text = self._joined_text()
        heard = [w for w in words if w.get("word") != UNK]
        confidence = min((float(w.get("conf", 0.0)) for w in heard), default=0.0)
        self._segments = []
        self._last_partial = ""
        self._floor.reset()
        self._rec = None  # the utterance's state goes now; a new one is made when audio comes
        return Hypothesis(text, confidence, final=True, complete=text in self._phrase_set)

    def _joined_text(self) -> str:
        return " ".join(filter(None, (" ".join(seg.get("text", "").split()) for seg in self._segments)))

    def reset(self) -> None:
        if self._closed:
            return
        # KaldiRecognizer.Reset() keeps the feature pipeline's adaptation state (seen: words of the
        # abandoned utterance coming back in the next one); a fresh recognizer forgets everything.
        # It is made when the next audio comes, not here: compiling the default commands' phrase
        # list takes about 11 ms, and reset() follows finish() on the way to the action.
        self._rec = None
        self._segments = []
        self._last_partial = ""
        self._floor.reset()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._rec = None
        if self._owns_model:
            self._model = None


def load_model(model_path: str, debug: bool = False):
    """A `vosk.Model`, or an EngineError that says how to get one."""
    import vosk

    if not os.path.isdir(model_path):
        raise EngineError(f"no vosk model at {model_path}: run `tallylight models download small-en-us`, "
                          "or set recognizer.engine = 'pocketsphinx'")
    # Kaldi prints its own ERROR lines for a folder that is not a model; the EngineError below says
    # it in one line with the fix, so below debug they are silenced for the load (-3: not even errors).
    vosk.SetLogLevel(0 if debug else -3)
    try:
        return vosk.Model(model_path)
    except Exception:  # vosk raises a bare Exception('Failed to create a model')
        raise EngineError(f"no vosk model at {model_path} (the folder is not a complete vosk model): run "
                          "`tallylight models download small-en-us`, or set recognizer.engine = 'pocketsphinx'") from None
    finally:
        vosk.SetLogLevel(0 if debug else -2)
