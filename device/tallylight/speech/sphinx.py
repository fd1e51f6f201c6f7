"""pocketsphinx 5 in grammar (FSG) mode, with the US English model that ships inside its wheel.

What matters for accuracy and rejection (each measured with scripts/measure-intents):

- **A noise floor.** Digitally silent input (synthetic speech, mics with a hard noise gate) throws the
  model's cepstral mean and silence model off: on clean espeak-ng clips the search ended mid-phrase or
  in the wrong phrase in 28 of 96 cases. A fixed, seeded, inaudible noise floor (about -60 dBFS) added
  to every block before decoding brought that to 4 of 96.
- **Rejection by coverage.** JSGF has no `[unk]`. Speech that is not a command is forced onto the
  nearest command, and the FSG search parks the rest of it in long `<sil>`/filler segments. So the
  confidence is the share of the utterance's loud frames that fall inside command words: a command
  explains nearly all of its loud frames, a sentence from a book explains a fraction. (A garbage loop
  of one-phone or common words as an alternative to the commands was tried: it made the FSG search
  50-100x slower, too slow for a Pi.)
- **Truncated hypotheses.** The FSG search can end in a state that is not the end of a phrase
  ("Final result does not match the grammar"). Such a result is cut back to the longest whole
  phrase it begins with, and that phrase's confidence counts only its own words: "stop" said alone,
  whose released P the search took for "the", is "stop" again (tuned voices: 344 -> 351 of 372
  right), while "stop the music" stays rejected because "the music" is left unexplained. With no
  whole phrase to fall back to, the result has `complete=False` and confidence 0: it is never a
  command. (Guessing the completion of "what's the" or "turn off the" turned non-command speech
  into commands; with the cepstral mean below no in-grammar clip needed it.)
- **A cepstral mean from the pre-roll.** pocketsphinx's live CMN starts from the model's prior and
  only moves after seconds of audio, so a short command was decoded with the wrong mean: "thirteen"
  became "thirty", "lights on" became "lights off" (tuned voices: 81% right). A second pass over
  the whole utterance with its own mean (batch CMN) fixed that (92%), but cost a whole decode,
  about 255 ms on the build machine, between the end of speech and the action. Instead, the first
  `prime_s` of audio (the capture's pre-roll: the end of the room's quiet and the wake phrase, said
  by the same voice through the same mic) is run through the front end alone (no search, a few ms)
  to get its mean, and the one streaming pass decodes with that mean from the first frame. Its
  result is final: same accuracy on the tuned voices within 6 of 372 clips, better held out and in
  rejection (scripts/measure-intents), half the CPU, and no decode left to do after the speech ends.
  The search itself starts SEARCH_LEAD_S before the first loud frame of those first samples: the
  quiet before the wake phrase costs search time, and the end-of-utterance lattice grows with every
  frame, for no change in accuracy.
- **Alternate pronunciations that make one grammar word sound like another.** cmudict's "thirty(2)"
  TH ER T IY is "thirteen" without its final N, and "seventy(2)" is "seven" plus a short vowel; the
  search took "thirteen minutes" for "thirty minutes" and "seven minutes" for "seventy minutes". The
  decoder therefore gets a dictionary of the grammar's words only, without such alternates
  (`prune_alternates`; tuned voices: 343 -> 349 of 372 right).
- **Stretched words.** Speech that is not a command is forced onto a command whose words then
  stretch over seconds. A word holding more than MAX_FRAMES_PER_PHONE frames per phone
  gives confidence 0 (commands measured at most ~22, recorded non-command speech 33-85).

During an utterance the recognizer holds, besides the decoder's own state, one number per 10 ms frame
(its energy) and, until `prime_s` of audio has come, those first samples: in RAM only, in one buffer
of `prime_s` (the pre-roll, 1.5 s by default) allocated once, overwritten with zeros as soon as they
are decoded and in `reset` and `close`.
"""

from __future__ import annotations

import logging
import math
import os
import re
from importlib import resources

import numpy as np

from tallylight.errors import EngineError, UnknownWordsError
from tallylight.pcm import BYTES_PER_SAMPLE, RATE
from tallylight.speech.noisefloor import NoiseFloor
from tallylight.speech.recognizer import Hypothesis, Recognizer

_LOG = logging.getLogger(__name__)

# pocketsphinx is imported where the decoder and its model are made, not here, so that a device on
# vosk never loads it (engines imports this module whichever engine is configured).

# The decoder's filler words: silence only (<s>, </s>, <sil>). The model's own list adds [NOISE] and
# [SPEECH], which the FSG search puts beside every grammar state: without them finish() takes 0.77 of
# the time (the end-of-utterance lattice; scripts/bench table 7, side by side), and with fillprob 1e-8
# they changed no result in scripts/measure-intents (the same transcript and confidence for every clip).
FILLERS_RESOURCE = "data/pocketsphinx-fillers.dict"

# Pronunciations (CMU ARPABET, as in cmudict) for words our shipped config uses that cmudict lacks.
KNOWN_PRONUNCIATIONS = {"nabu": "N AA B UW"}

# Seconds of audio whose cepstral mean the decoding starts from (see above): the default
# capture.preroll_s. engines.make_recognizer passes the configured pre-roll instead (`prime_window`).
PRIME_S = 1.5
# Below this much audio the mean of what there is would be worse than the model's prior.
MIN_PRIME_S = 0.3
SEARCH_LEAD_S = 0.1  # quiet kept before the first loud frame of the first samples
NOISE_FLOOR = 30.0  # standard deviation of the added noise floor, in s16 units (about -60 dBFS)
FRAME = 160  # pocketsphinx's frame shift: 10 ms at 16 kHz
# A frame is "loud" (speech to be explained) when it is within LOUD_RANGE_DB of the utterance's
# loudest frame and LOUD_ABOVE_FLOOR_DB above its quiet floor (10th percentile).
LOUD_RANGE_DB = 30.0
LOUD_ABOVE_FLOOR_DB = 10.0
# confidence = (coverage - COVERAGE_ZERO) / (1 - COVERAGE_ZERO), clipped to 0..1: with the default
# recognizer.min_confidence of 0.5 a result is kept when >= 84.5% of the loud frames are command
# words. Measured on whole clips: commands 85-100%, the rejection set 5-84% (scripts/measure-intents).
COVERAGE_ZERO = 0.69
# A word with more 10 ms frames per phone than this is stretched over speech it does not explain (see above).
MAX_FRAMES_PER_PHONE = 28.0

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


def read_pronunciations(dict_path: str, words: set[str]) -> dict[str, list[str]]:
    """The pronunciations of `words` in a cmudict-format file, the primary one first ("thirty":
    ["TH ER D IY", "TH ER T IY"] from the lines `thirty ...` and `thirty(2) ...`)."""
    found: dict[str, dict[int, str]] = {}
    with open(dict_path, encoding="utf-8") as f:
        for line in f:
            head, _, phones = line.strip().partition(" ")
            base, _, alt = head.partition("(")
            if base in words and phones:
                found.setdefault(base, {})[int(alt.rstrip(")")) if alt else 1] = " ".join(phones.split())
    return {w: [p for _, p in sorted(alts.items())] for w, alts in found.items()}


def prune_alternates(prons: dict[str, list[str]]) -> dict[str, list[str]]:
    """Drop each alternate (not primary) pronunciation that is a prefix of another grammar word's
    pronunciation, or has one as its prefix: "thirty(2)" TH ER T IY is "thirteen" TH ER T IY N
    without its last phone, and "seventy(2)" S EH V AH N IY is "seven" plus a short vowel. With
    such a pair in one grammar the search keeps the shorter word and hands the last phone to the
    next word ("thirteen minutes" -> "thirty minutes"). Primary pronunciations always stay."""
    others = [(w, p.split()) for w, ps in prons.items() for p in ps]

    def collides(word: str, phones: list[str]) -> bool:
        for other, op in others:
            if other == word or op == phones:
                continue
            n = min(len(op), len(phones))
            if op[:n] == phones[:n]:
                return True
        return False

    return {w: ps[:1] + [p for p in ps[1:] if not collides(w, p.split())] for w, ps in prons.items()}


def prime_window(preroll_s: float) -> float:
    """The seconds of audio to measure the cepstral mean on, for a capture with this pre-roll: the
    pre-roll itself (the room and the wake phrase), but at least MIN_PRIME_S. A longer window than
    the pre-roll would hold back every partial result, and so the early end, until it is full."""
    return max(float(preroll_s), MIN_PRIME_S)


def _loud_frames(energy: np.ndarray) -> np.ndarray:
    """Per 10 ms frame (energy in dB): within LOUD_RANGE_DB of the loudest, and LOUD_ABOVE_FLOOR_DB
    above the quiet floor (10th percentile)."""
    if energy.size == 0:
        return np.zeros(0, dtype=bool)
    return energy > max(energy.max() - LOUD_RANGE_DB, np.percentile(energy, 10) + LOUD_ABOVE_FLOOR_DB)


def _model_files() -> dict:
    import pocketsphinx

    base = pocketsphinx.get_model_path()
    return {"hmm": os.path.join(base, "en-us", "en-us"), "dict": os.path.join(base, "en-us", "cmudict-en-us.dict")}


class SphinxRecognizer(Recognizer):
    """pocketsphinx FSG search over a JSGF grammar."""

    name = "pocketsphinx"

    def __init__(self, jsgf: str, extra_pronunciations: dict[str, str] | None = None, *,
                 noise_floor: float = NOISE_FLOOR, prime_s: float = PRIME_S, sample_rate: int = RATE,
                 debug: bool = False, **decoder_options) -> None:
        """`extra_pronunciations` maps words missing from cmudict to ARPABET ("nabu": "N AA B UW");
        `decoder_options` go to `pocketsphinx.Decoder` (beam, silprob...)."""
        try:
            import pocketsphinx
        except ImportError as e:  # pragma: no cover - a dependency of the package
            raise EngineError(f"pocketsphinx is not installed ({e}): run scripts/setup.sh or pip install pocketsphinx") from None
        if sample_rate != RATE:
            raise EngineError(f"pocketsphinx's model wants {RATE} Hz audio, not {sample_rate} Hz")
        if not _PUBLIC_RULE.search(_JSGF_COMMENT.sub(" ", jsgf)):
            raise EngineError("the command grammar has no public rule: the JSGF needs `public <name> = ...;`")
        model = _model_files()
        # The decoder gets a dictionary of the grammar's words only (added below), not the 134,000
        # words of cmudict: less to load and hold, and alternates can be left out (prune_alternates);
        # and silence as its only filler (FILLERS_RESOURCE).
        options = {**model, "dict": os.devnull, "lm": None, "samprate": float(sample_rate), **decoder_options}
        if not debug:
            options["logfn"] = os.devnull  # pocketsphinx logs every utterance to stderr otherwise
        try:
            with resources.as_file(resources.files("tallylight").joinpath(FILLERS_RESOURCE)) as fillers:
                self._decoder = pocketsphinx.Decoder(**{"fdict": str(fillers), **options})
        except KeyError as e:  # an option pocketsphinx does not know ("Unknown key b'slprob'")
            key = re.search(r"b'([^']*)'", str(e.args[0] if e.args else e))
            raise EngineError(f"pocketsphinx has no option {key.group(1) if key else e}") from None
        except (RuntimeError, ValueError) as e:
            raise EngineError(f"pocketsphinx could not load its model: {e}") from None
        self._closed = False
        self._words = jsgf_words(jsgf)
        pronunciations = {**KNOWN_PRONUNCIATIONS, **(extra_pronunciations or {})}
        if "dict" in decoder_options:  # a caller's own full dictionary: only add what it lacks
            known = {w: [] for w in self._words if self._decoder.lookup_word(w) is not None}
        else:
            known = prune_alternates(read_pronunciations(model["dict"], self._words))
        self._missing = {w for w in self._words if w not in known and w not in pronunciations}
        if self._missing:
            missing = ", ".join(sorted(self._missing))
            self.close()
            raise UnknownWordsError(f"pocketsphinx's dictionary has no pronunciation for: {missing} "
                                    "(rephrase the command, or spell how it sounds: [recognizer] pronunciations = "
                                    '{ word = "W ER D" }, in the ARPABET phones of cmudict; docs/commands.md shows how)',
                                    frozenset(self._missing))
        to_add: list[tuple[str, str]] = []
        for w in sorted(self._words):
            prons = known[w] if w in known else [pronunciations[w]]
            to_add += [(w if i == 0 else f"{w}({i + 1})", p) for i, p in enumerate(prons)]  # thirty, thirty(2)
        for i, (word, phones) in enumerate(to_add):
            # update=False skips rebuilding the search per word; the last add must update, or the
            # new words are silently missing from the grammar.
            try:
                self._decoder.add_word(word, phones, i == len(to_add) - 1)
            except RuntimeError:
                self.close()
                raise EngineError(f"pocketsphinx rejected the pronunciation {phones!r} for {word!r}: "
                                  "use the model's ARPABET phones, such as 'N AA B UW'") from None
        try:
            # The grammar as written, to tell complete phrases from truncated ones.
            self._fsg = self._decoder.parse_jsgf(jsgf)
            self._decoder.add_jsgf_string("commands", jsgf)
            self._decoder.activate_search("commands")
        except (RuntimeError, ValueError) as e:
            self.close()
            raise EngineError(f"pocketsphinx could not load the command grammar: {e}") from None
        self._floor = NoiseFloor(noise_floor)
        self.prime_s = prime_s
        # The model's prior mean: each utterance's mean is measured from this same start, so no
        # result depends on what was said before.
        self._cmn0 = self._decoder.get_cmn(False)
        # The first samples of the utterance, until prime_s have come: one buffer allocated once
        # (a growing bytearray would leave earlier copies of the audio in freed memory).
        self._priming = bytearray(int(prime_s * RATE) * BYTES_PER_SAMPLE)
        self._primed = 0  # bytes of it in use
        self._in_utt = False
        self._last_partial = ""
        self._energy: list[float] = []  # dB per 10 ms frame of this utterance (not the audio)
        self.last_stretch = 0.0  # loud frames per phone of the last result's most stretched word
        self._frame_fill, self._frame_sum = 0, 0.0

    def missing_words(self) -> set[str]:
        """Always empty for a built recognizer: a grammar with unknown words fails to build (the
        error names them), because pocketsphinx cannot load such a grammar at all."""
        return set(self._missing)

    @property
    def words(self) -> set[str]:
        return set(self._words)

    def _prepare(self, block: bytes) -> bytes:
        out = self._floor.process(block)
        self._track_energy(out)
        return out.tobytes()

    @staticmethod
    def _search_start(samples: np.ndarray) -> int:
        """Where the search starts in the first samples: SEARCH_LEAD_S before the first loud 10 ms
        frame (as in `_loud`), on a frame boundary. The quiet before it is left out."""
        n = len(samples) // FRAME
        if n == 0:
            return 0
        x = samples[: n * FRAME].astype(np.float64) ** 2
        energy = 10 * np.log10(x.reshape(n, FRAME).mean(axis=1) + 1.0)
        loud = np.nonzero(_loud_frames(energy))[0]
        first = int(loud[0]) if loud.size else 0
        return max(0, first - round(SEARCH_LEAD_S * 100)) * FRAME

    def _track_energy(self, samples: np.ndarray) -> None:
        # Frames are counted from the start of the utterance; a block may end mid-frame, so the
        # remainder is kept (as energy sum and count, not samples) in the last partial frame.
        x = samples.astype(np.float64) ** 2
        pos = 0
        if self._frame_fill:
            need = FRAME - self._frame_fill
            take = x[:need]
            self._frame_sum += float(take.sum())
            self._frame_fill += len(take)
            pos = len(take)
            if self._frame_fill == FRAME:
                self._energy.append(10 * math.log10(self._frame_sum / FRAME + 1.0))
                self._frame_fill, self._frame_sum = 0, 0.0
        n = (len(x) - pos) // FRAME
        if n > 0:
            frames = x[pos : pos + n * FRAME].reshape(n, FRAME).mean(axis=1)
            self._energy.extend((10 * np.log10(frames + 1.0)).tolist())
            pos += n * FRAME
        rest = x[pos:]
        if len(rest):
            self._frame_sum = float(rest.sum())
            self._frame_fill = len(rest)

    def process(self, block: bytes) -> Hypothesis | None:
        """Decode a block as it comes: a new partial result, or None when it is unchanged (or the
        first `prime_s` of audio are still being gathered)."""
        if self._closed:
            raise EngineError("the recognizer was closed")
        if not self._in_utt:
            take = min(len(block), len(self._priming) - self._primed)
            self._priming[self._primed:self._primed + take] = memoryview(block)[:take]
            self._primed += take
            if self._primed < len(self._priming):
                return None
            self._start_utt()
            block = memoryview(block)[take:]
        if len(block):
            self._decoder.process_raw(self._prepare(block), False, False)
        hyp = self._decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        if text == self._last_partial:
            return None
        self._last_partial = text
        return Hypothesis(text, 0.0, final=False, complete=bool(text) and bool(self._fsg.accept(text)))

    def _start_utt(self) -> None:
        """Measure the cepstral mean of the audio gathered so far (front end only, no search), start
        the utterance with it, and decode that audio."""
        samples = whole = self._floor.process(memoryview(self._priming)[:self._primed])
        self._wipe_priming()
        d = self._decoder
        cmn = self._cmn0
        if len(samples) >= int(MIN_PRIME_S * RATE):
            d.reinit_feat()  # no front-end state (noise estimate) from the last utterance
            d.set_cmn(self._cmn0)
            d.start_utt()
            d.process_raw(samples.tobytes(), True, True)  # full_utt: batch CMN over these frames; no_search
            cmn = d.get_cmn(False)
            d.end_utt()
        samples = samples[self._search_start(samples):]
        self._track_energy(samples)
        d.reinit_feat()
        d.set_cmn(cmn)
        d.start_utt()
        self._in_utt = True
        d.process_raw(samples.tobytes(), False, False)
        whole[:] = 0

    def finish(self) -> Hypothesis:
        if self._closed:
            raise EngineError("the recognizer was closed")
        if not self._in_utt and self._primed:
            self._start_utt()  # an utterance shorter than prime_s
            hyp = self._decoder.hyp()
            self._last_partial = hyp.hypstr if hyp is not None else ""
        if not self._in_utt:
            return Hypothesis("", 0.0, final=True, complete=False)
        self._decoder.end_utt()
        self._in_utt = False
        hyp = self._decoder.hyp()
        text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
        result = Hypothesis("", 0.0, final=True, complete=False)
        if not text and self._last_partial:
            # The search found no path to the end of a phrase (a phrase cut short) and gave up;
            # its last partial result still goes in the transcript, never trusted.
            text = " ".join(self._last_partial.split())
            result = Hypothesis(text, 0.0, final=True, complete=bool(self._fsg.accept(text)))
        elif text:
            complete = bool(self._fsg.accept(text))
            kept = self._command_segs()
            if not complete:
                prefix, prefix_segs = self._complete_prefix(text, kept)
                if prefix:
                    _LOG.debug("pocketsphinx: truncated %r ends a phrase at %r", text, prefix)
                    text, kept, complete = prefix, prefix_segs, True
            coverage = self._coverage(kept)
            self.last_stretch = self._stretch(kept)
            confidence = min(1.0, max(0.0, (coverage - COVERAGE_ZERO) / (1.0 - COVERAGE_ZERO)))
            if not complete or self.last_stretch > MAX_FRAMES_PER_PHONE:
                # A truncated phrase ("Final result does not match the grammar") goes in the
                # transcript but is never trusted as it is.
                _LOG.debug("pocketsphinx: %r not trusted (complete=%s, %.1f frames per phone)", text, complete,
                           self.last_stretch)
                confidence = 0.0
            result = Hypothesis(text, confidence, final=True, complete=complete)
        self._forget()
        return result

    def _loud(self) -> np.ndarray:
        """Per 10 ms frame: speech to be explained (near the loudest frame, well above the floor)."""
        return _loud_frames(np.asarray(self._energy))

    def _command_segs(self) -> list:
        """The result's command words (not <s>, </s>, <sil>, [NOISE]...), in order."""
        return [seg for seg in self._decoder.seg() or () if not seg.word.startswith(("<", "[", "+"))]

    def _complete_prefix(self, text: str, segs: list) -> tuple[str, list]:
        """The longest whole phrase that a truncated result begins with, and its words' segments;
        ("", []) if there is none. "stop" said alone, its final P released into the quiet, can end
        the search inside "stop the [alarm]": the result is then "stop" with the trailing "the" left
        unexplained, so the coverage confidence still counts its sound against it ("stop the music"
        is rejected: "the music" is loud and outside the kept words)."""
        words = text.split()
        if [seg.word.split("(")[0] for seg in segs] != words:  # "on(2)" is "on"
            return "", []  # cannot tell which segment is which word: do not guess
        for n in range(len(words) - 1, 0, -1):
            if self._fsg.accept(" ".join(words[:n])):
                return " ".join(words[:n]), segs[:n]
        return "", []

    def _stretch(self, segs: list) -> float:
        """Frames per phone of the most stretched of these words. (Counting only loud frames, or
        only frames up to the last loud one, let recorded speech through: it is the quieter speech
        a command word is stretched over that gives it away.)"""
        worst = 0.0
        for seg in segs:
            phones = self._decoder.lookup_word(seg.word.split("(")[0]) or ""
            worst = max(worst, (seg.end_frame - seg.start_frame + 1) / max(len(phones.split()), 1))
        return worst

    def _coverage(self, segs: list) -> float:
        """Share of the utterance's loud frames that lie inside these command words."""
        loud = self._loud()
        if not loud.any():
            return 0.0
        in_word = np.zeros(loud.size, dtype=bool)
        for seg in segs:
            in_word[max(seg.start_frame, 0) : seg.end_frame + 1] = True
        return float((loud & in_word).sum() / loud.sum())

    def _wipe_priming(self) -> None:
        self._priming[:self._primed] = bytes(self._primed)
        self._primed = 0

    def _forget(self) -> None:
        self._wipe_priming()
        self._last_partial = ""
        self._energy = []
        self._floor.reset()
        self._frame_fill, self._frame_sum = 0, 0.0

    def reset(self) -> None:
        if self._closed:
            return
        if self._in_utt:
            self._decoder.end_utt()
            self._in_utt = False
        self._forget()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if hasattr(self, "_energy"):  # close() also runs when __init__ fails half-way
            self._forget()
        self._decoder = None  # the C decoder is freed with its last reference
