"""pocketsphinx 5 in grammar (FSG) mode, with the US English model that ships inside its wheel.

Three things matter for accuracy and rejection, each measured with scripts/measure-intents:

- **A garbage loop competes with the commands.** pocketsphinx's JSGF has no `[unk]`, so the top rule
  becomes `<commands> | <garbage>` where the garbage is a loop of one-phone pseudo-words. Speech that
  is not a command is explained better by free phones than by any command and comes out as garbage,
  which we report as "" (nothing recognized). `garbage_weight` is the prior of the garbage branch:
  higher rejects more, lower accepts more.
- **A noise floor.** Digitally silent input (synthetic speech, mics with a hard noise gate) throws the
  model's cepstral mean and silence model off: the search ends mid-phrase or in the wrong phrase.
  A fixed, seeded, inaudible noise floor (about -60 dBFS) is added to every block before decoding.
- **Truncated hypotheses.** The FSG search can end in a state that is not the end of a phrase
  ("Final result does not match the grammar"); such a result has `complete=False` and is never a
  command as it stands.

Confidence: pocketsphinx's lattice posterior (`hyp().prob`, with bestpath on) of the best path;
see `_confidence` for how it is used.
"""

from __future__ import annotations

import logging
import os
import re

import numpy as np

from tallylight.errors import EngineError
from tallylight.speech.recognizer import SAMPLE_RATE, Hypothesis, Recognizer

_LOG = logging.getLogger(__name__)

# Pronunciations (CMU ARPABET, as in cmudict) for words our shipped config uses that cmudict lacks.
KNOWN_PRONUNCIATIONS = {"nabu": "N AA B UW"}

# Common English words, none of them in the default commands, as the garbage loop. (A loop of
# one-phone words models anything better, but made the FSG search about 50x slower.)
GARBAGE_WORDS = (
    "and of to in was he that with as his be at by this had not but from have she which you were her "
    "all we there been if my so no when who will more would an say said do about into could people "
    "good now how very well know yes okay hello please thank thanks weather music play tell me news "
    "call open close how much"
).split()
_GARBAGE_PREFIX = "tlgarbage"
GARBAGE_WEIGHT = 0.1  # prior of the garbage branch against 1.0 for the commands (see measure-intents)
NOISE_FLOOR = 30.0  # standard deviation of the added noise floor, in s16 units (about -60 dBFS)

_JSGF_HEADER = re.compile(r"^\s*(#JSGF[^;]*;|grammar\s+[^;]+;|import\s+[^;]+;)", re.M)
_JSGF_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_PUBLIC_RULE = re.compile(r"public\s+<([^>]+)>")


def jsgf_words(jsgf: str) -> set[str]:
    """The words (terminals) a JSGF grammar uses."""
    body = _JSGF_COMMENT.sub(" ", jsgf)
    body = _JSGF_HEADER.sub(" ", body)
    body = re.sub(r"<[^>]*>|\{[^}]*\}|/[^/]*/|\bpublic\b", " ", body)
    body = re.sub(r"[=;|()\[\]*+]", " ", body)
    return {w for w in body.split() if w}


def _model_defaults() -> dict:
    import pocketsphinx

    return {"hmm": os.path.join(pocketsphinx.get_model_path(), "en-us", "en-us"),
            "dict": os.path.join(pocketsphinx.get_model_path(), "en-us", "cmudict-en-us.dict")}


class SphinxRecognizer(Recognizer):
    """pocketsphinx FSG search over a JSGF grammar, with a garbage loop for rejection."""

    name = "pocketsphinx"

    def __init__(self, jsgf: str, extra_pronunciations: dict[str, str] | None = None, *,
                 garbage_weight: float | None = GARBAGE_WEIGHT, noise_floor: float = NOISE_FLOOR,
                 sample_rate: int = SAMPLE_RATE, debug: bool = False, **decoder_options) -> None:
        try:
            import pocketsphinx
        except ImportError as e:  # pragma: no cover - a dependency of the package
            raise EngineError(f"pocketsphinx is not installed ({e}): run scripts/setup.sh or pip install pocketsphinx") from None
        if sample_rate != SAMPLE_RATE:
            raise EngineError(f"pocketsphinx's model wants {SAMPLE_RATE} Hz audio, not {sample_rate} Hz")
        match = _PUBLIC_RULE.search(_JSGF_COMMENT.sub(" ", jsgf))
        if not match:
            raise EngineError("the command grammar has no public rule: the JSGF needs `public <name> = ...;`")
        options = {**_model_defaults(), "lm": None, "samprate": float(sample_rate), **decoder_options}
        if not debug:
            options["logfn"] = os.devnull  # pocketsphinx logs every utterance to stderr otherwise
        try:
            self._decoder = pocketsphinx.Decoder(**options)
        except (RuntimeError, ValueError) as e:
            raise EngineError(f"pocketsphinx could not load its model: {e}") from None
        self._closed = False
        self._words = jsgf_words(jsgf)
        pronunciations = {**KNOWN_PRONUNCIATIONS, **(extra_pronunciations or {})}
        self._missing: set[str] = set()
        to_add: list[tuple[str, str]] = []
        for word in sorted(self._words):
            if self._decoder.lookup_word(word) is not None:
                continue
            if word in pronunciations:
                to_add.append((word, pronunciations[word]))
            else:
                self._missing.add(word)
        if self._missing:
            missing = ", ".join(sorted(self._missing))
            self.close()
            raise EngineError(f"pocketsphinx's dictionary has no pronunciation for: {missing} "
                              "(rephrase the command, or give one with extra_pronunciations)")
        if garbage_weight:
            garbage = [w for w in dict.fromkeys(GARBAGE_WORDS) if w not in self._words]
            for word in garbage:
                for i, phones in enumerate(self._pronunciations(word)):
                    to_add.append((f"{_GARBAGE_PREFIX}{word}{'' if i == 0 else i}", phones))
        for i, (word, phones) in enumerate(to_add):
            # update=False skips rebuilding the search per word; the last add must update, or the
            # new words are silently missing from the grammar.
            try:
                self._decoder.add_word(word, phones, i == len(to_add) - 1)
            except RuntimeError:
                self.close()
                raise EngineError(f"pocketsphinx rejected the pronunciation {phones!r} for {word!r}: "
                                  "use the model's ARPABET phones, such as 'N AA B UW'") from None
        # The grammar as written, to tell complete phrases from truncated ones.
        try:
            self._fsg = self._decoder.parse_jsgf(jsgf)
            search = jsgf if not garbage_weight else _with_garbage(jsgf, match.group(1), garbage_weight,
                                                                         [w for w, _ in to_add if w.startswith(_GARBAGE_PREFIX)])
            self._decoder.add_jsgf_string("commands", search)
            self._decoder.activate_search("commands")
        except (RuntimeError, ValueError) as e:
            self.close()
            raise EngineError(f"pocketsphinx could not load the command grammar: {e}") from None
        self.noise_floor = noise_floor
        self._in_utt = False
        self._last_partial = ""
        self._rng = np.random.default_rng(0)

    def missing_words(self) -> set[str]:
        return set(self._missing)

    @property
    def words(self) -> set[str]:
        """The grammar's words."""
        return set(self._words)

    def _prepare(self, block: bytes) -> bytes:
        samples = np.frombuffer(block[: len(block) // 2 * 2], dtype="<i2")
        if not self.noise_floor:
            return samples.tobytes()
        noisy = samples + self._rng.normal(0.0, self.noise_floor, samples.shape)
        return np.clip(noisy, -32768, 32767).astype("<i2").tobytes()

    def process(self, block: bytes) -> Hypothesis | None:
        if self._closed:
            raise EngineError("the recognizer was closed")
        if not self._in_utt:
            self._decoder.start_utt()
            self._in_utt = True
        if block:
            self._decoder.process_raw(self._prepare(block), False, False)
        hyp = self._decoder.hyp()
        text = self._clean(hyp.hypstr) if hyp is not None else ""
        if text == self._last_partial:
            return None
        self._last_partial = text
        return Hypothesis(text, 0.0, final=False, complete=self._fsg.accept(text) if text else False)

    def finish(self) -> Hypothesis:
        if self._closed:
            raise EngineError("the recognizer was closed")
        if not self._in_utt:
            return Hypothesis("", 0.0, final=True, complete=False)
        self._decoder.end_utt()
        self._in_utt = False
        self._last_partial = ""
        hyp = self._decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return Hypothesis("", 0.0, final=True, complete=False)
        words = hyp.hypstr.split()
        if any(w.startswith(_GARBAGE_PREFIX) for w in words):
            # The garbage branch won: the audio was not a command.
            return Hypothesis("", 0.0, final=True, complete=False)
        text = " ".join(words)
        return Hypothesis(text, _confidence(hyp.prob), final=True, complete=bool(self._fsg.accept(text)))

    def reset(self) -> None:
        if self._closed:
            return
        if self._in_utt:
            self._decoder.end_utt()
            self._in_utt = False
        self._last_partial = ""
        self._rng = np.random.default_rng(0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._decoder = None  # the C decoder is freed with its last reference

    def _pronunciations(self, word: str) -> list[str]:
        """The dictionary's pronunciations of `word` (alternates are stored as word(2), word(3)...)."""
        found = []
        for name in [word] + [f"{word}({i})" for i in range(2, 6)]:
            phones = self._decoder.lookup_word(name)
            if phones is None:
                break
            found.append(phones)
        return found

    @staticmethod
    def _clean(hypstr: str) -> str:
        return " ".join(w for w in hypstr.split() if not w.startswith(_GARBAGE_PREFIX))


def _confidence(posterior: float) -> float:
    """The lattice posterior of the best path, 0..1."""
    return float(min(1.0, max(0.0, posterior)))


def _with_garbage(jsgf: str, top: str, weight: float, garbage_words: list[str]) -> str:
    """The grammar with a new first public rule: the original top rule, or a loop of phones."""
    phones = " | ".join(garbage_words)
    # The new rule must be the only public one: pocketsphinx keeps rules in a hash table, so "the
    # first public rule" is not the first in the file.
    header = _JSGF_HEADER.findall(jsgf)
    rest = re.sub(r"\bpublic\s+(?=<)", "", _JSGF_HEADER.sub("", jsgf))
    rules = (
        f"public <tltop> = /1/ <{top}> | /{weight:g}/ <tlgarbage>;\n"
        f"<tlgarbage> = <tlphone>+;\n"
        f"<tlphone> = {phones};\n"
    )
    return "\n".join(header) + "\n" + rules + rest
