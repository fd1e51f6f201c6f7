"""Recognizer + command grammar = the consumer a capture is handed to.

It streams the capture into the recognizer while the capture light is on, and at the end turns the
final hypothesis into a transcript and either an intent (an exact parse of a configured command, or
the unique completion of a truncated one) or no_match. It never guesses: low confidence, words
outside the grammar, or a truncated phrase with several completions are no_match.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from tallylight.choices import LogLevel
from tallylight.config import Config
from tallylight.errors import EngineError, UnknownWordsError
from tallylight.events import Event, IntentMatched, NoMatch, Transcript
from tallylight.speech.command_types import Command
from tallylight.speech.commands import default_commands, parse_commands
from tallylight.speech.engines import make_recognizer
from tallylight.speech.grammar import Grammar
from tallylight.speech.recognizer import Hypothesis, Recognizer
from tallylight.speech.recognizers import Pairing, RecognizerMode, default_vosk_model, pairing

_LOG = logging.getLogger(__name__)


class Understander:
    name = "recognizer"

    def __init__(self, recognizer: Recognizer, grammar: Grammar, min_confidence: float,
                 wake_words: tuple[str, ...] = ()):
        self.recognizer = recognizer
        self.grammar = grammar
        self.min_confidence = min_confidence
        self.wake_words = wake_words
        self.name = getattr(recognizer, "name", "recognizer")
        self._sure = False  # the partial result is a whole command no longer command continues

    def process(self, block: bytes) -> tuple[list[Event], bool]:
        hyp = self.recognizer.process(block)
        if hyp is not None:  # the partial result changed
            text = " ".join(self._strip_wake_words(hyp.text.split()))
            self._sure = self.grammar.is_final(text)
        return [], self._sure

    def finish(self, t: float) -> list[Event]:
        hyp = self.recognizer.finish()
        return self.interpret(hyp, t)

    def _strip_wake_words(self, words: list[str]) -> list[str]:
        """The capture starts before the wake detector fired (the pre-roll), so a hypothesis may begin
        with the wake phrase or its end. What goes: the wake words in their order, each either
        itself or [unk] (vosk's word for one its model lacks), any of them left out ("nabu ...",
        "okay [unk] ...", "okay ..." from a model without "nabu"), and before them at most one more
        [unk] (a sound just before the wake phrase): "[unk] okay nabu ...". Without wake words (a
        custom wake model) one leading [unk] goes. Any other [unk] stays, and makes the result
        no command."""
        for k in range(min(len(words), len(self.wake_words) + 1), 0, -1):
            head = words[:k]
            if self._wake_run(head) or (head[0] == "[unk]" and self._wake_run(head[1:], real_word=True)):
                return words[k:]
        return words

    def _wake_run(self, head: list[str], real_word: bool = False) -> bool:
        """Whether `head` is the wake words in order, each itself or [unk], some perhaps left out
        (with `real_word`, at least one of them itself)."""
        if not self.wake_words:
            return not real_word and head == ["[unk]"]
        i = 0
        for word in head:
            if word != "[unk]":
                while i < len(self.wake_words) and self.wake_words[i] != word:
                    i += 1
            if i == len(self.wake_words):
                return False
            i += 1
        return bool(head) and (not real_word or any(w != "[unk]" for w in head))

    def interpret(self, hyp: Hypothesis, t: float) -> list[Event]:
        words = self._strip_wake_words(hyp.text.split())
        text = " ".join(words)
        events: list[Event] = [Transcript(t, text, round(hyp.confidence, 3))]
        if not text or "[unk]" in words:
            return events + [NoMatch(t, text)]
        if hyp.confidence < self.min_confidence:
            _LOG.info("rejected %r: confidence %.2f below recognizer.min_confidence %.2f", hyp.text, hyp.confidence,
                      self.min_confidence)
            return events + [NoMatch(t, text)]
        # An exact phrase is one, whatever the recognizer said of its raw text ("[unk] stop" is
        # not a vosk phrase, "stop" is).
        match = self.grammar.match(text)
        if match is None:
            # A truncated hypothesis ("set a timer for five" without "minutes") is trusted only if
            # the grammar allows exactly one way to finish it.
            match = self.grammar.complete(text)
        if match is None:
            return events + [NoMatch(t, text)]
        return events + [IntentMatched(t, match.command.name, dict(match.slots), match=match)]

    def reset(self) -> None:
        self._sure = False
        self.recognizer.reset()

    def close(self) -> None:
        self.recognizer.close()


# Names Home Assistant exposes to Assist, as the uplink sent them: (entity names, area names).
Exposed = tuple[tuple[str, ...], tuple[str, ...]]


def commands_of(cfg: Config, exposed: Exposed | None = None) -> tuple[Command, ...]:
    """The configured commands; the defaults when the config has no [commands] section. Parsed
    when the config was loaded; parsed here only for a Config built without config.from_dict."""
    if not cfg.commands:
        local = default_commands()
    elif cfg.parsed_commands is not None:
        local = cfg.parsed_commands
    else:
        local = parse_commands(cfg.commands, str(cfg.path) if cfg.path else "<config>")
    if not cfg.home_assistant.enabled:
        return local
    # Home Assistant's own sentences, with the owner's names, as one more command (speech/ha_sentences.py).
    from tallylight.speech import ha_sentences  # only with Home Assistant on: it needs hassil

    names, areas = exposed or ((), ())
    built = ha_sentences.build(cfg.home_assistant.names, cfg.home_assistant.areas, local,
                               exposed_names=names, exposed_areas=areas)
    for line in built.left_out:
        if line.startswith("Home Assistant's"):  # a name from the network refused: the owner should hear of it
            _LOG.warning("a name from Home Assistant left out: %s", line)
        else:
            _LOG.debug("home_assistant sentence left out: %s", line)
    return local if built.command is None else (*local, built.command)


def wake_words_of(cfg: Config) -> tuple[str, ...]:
    """The words of a built-in wake phrase ("okay_nabu" -> okay, nabu); none for a model file."""
    model = cfg.wake.model
    return tuple(model.split("_")) if re.fullmatch(r"[a-z]+(_[a-z]+)*", model) else ()


def with_wake_prefix(jsgf: str, wake_words: tuple[str, ...]) -> str:
    """Let the grammar begin with the tail of the wake phrase: `[ [okay] nabu ] <command>`.

    The capture starts up to capture.preroll_s before the detector fired, so it usually holds the
    end of the wake phrase; a grammar without it forces those sounds into command words."""
    if not wake_words:
        return jsgf
    prefix = wake_words[-1]
    for w in reversed(wake_words[:-1]):
        prefix = f"[ {w} ] {prefix}"
    out, done = [], False
    for line in jsgf.splitlines():
        m = re.match(r"public <(\w+)> = (.*);$", line)
        if m and not done:
            out.append(f"public <{m.group(1)}> = [ <wake_tail> ] ( {m.group(2)} );")
            out.append(f"<wake_tail> = {prefix};")
            done = True
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class PairedUnderstander:
    """Two recognizers hear the same capture, and their commands are weighed together
    (recognizer.engine = "both"): the lead, vosk, and the partner its `Pairing` names, pocketsphinx
    (the numbers below are that pairing's, in speech/recognizers.py).

    Their mistakes seldom coincide: on the tuned voices of scripts/measure-intents (with the English
    vosk test model) each got about 20 of 372 commands wrong or missed, and only 2 clips were missed
    by both. pocketsphinx confuses numbers ("thirteen" as "thirty"), vosk "lights on" with "lights off",
    and vosk drops words ("turn off lights"). The rule, chosen on the tuned voices and the tuned
    rejection sets (scripts/measure-intents --dump, one run per recognizer):

    - the same command from both: that command, with vosk's slot values when they differ;
    - different commands: vosk's if its confidence is at least `wins_from` (0.8, a word posterior;
      pocketsphinx's coverage confidence is near 1.0 even on its wrong numbers), else pocketsphinx's;
    - a command from one, none from the other: taken only with `alone_min` (vosk, 0.8) or
      `partner_alone_min` (pocketsphinx, 0.9).
    """

    def __init__(self, lead: Understander, partner: Understander, lead_name: str, pair: Pairing) -> None:
        self.parts = (lead, partner)
        self.pairing = pair
        self._names = (lead_name, pair.partner)  # for the log: "vosk heard ..."
        self.grammar = lead.grammar
        self.wake_words = lead.wake_words
        self.name = f"{lead.name}+{partner.name}"
        self._closed = False

    def process(self, block: bytes) -> tuple[list[Event], bool]:
        events: list[Event] = []
        sure = False
        for part in self.parts:
            ev, part_sure = part.process(block)
            events += ev
            sure = sure or part_sure  # either holding a whole command may end the capture early
        return events, sure

    def finish(self, t: float) -> list[Event]:
        lead_part, partner_part = self.parts
        lead_name, partner_name = self._names
        lead = self._result(lead_part.finish(t))
        if lead_decides(lead, self.pairing):
            # The partner cannot change the answer: skip its end-of-utterance search (pocketsphinx's:
            # about 35 ms, scripts/bench table 6) and drop what it holds of the capture.
            partner_part.reset()
            _LOG.info("%s heard %r (%.2f): %s", lead_name, lead[0].text, lead[0].confidence, lead[1].name)
            return [lead[0], lead[1]]
        partner = self._result(partner_part.finish(t))
        chosen = weigh(lead, partner, self.pairing)
        _LOG.info("%s heard %r (%.2f), %s %r (%.2f): %s", lead_name, lead[0].text, lead[0].confidence,
                  partner_name, partner[0].text, partner[0].confidence, chosen[1].name if chosen[1] else "no command")
        transcript, intent = chosen
        return [transcript, intent if intent is not None else NoMatch(t, transcript.text)]

    @staticmethod
    def _result(events: list[Event]) -> tuple[Transcript, IntentMatched | None]:
        transcript = next(e for e in events if isinstance(e, Transcript))
        return transcript, next((e for e in events if isinstance(e, IntentMatched)), None)

    def reset(self) -> None:
        for part in self.parts:
            part.reset()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for part in self.parts:
            part.close()


Result = tuple[Transcript, "IntentMatched | None"]


def lead_decides(lead: Result, pair: Pairing) -> bool:
    """A command the lead is this sure of is the answer whatever the partner heard (see weigh)."""
    text, intent = lead
    return intent is not None and text.confidence >= max(pair.wins_from, pair.alone_min)


def weigh(lead: Result, partner: Result, pair: Pairing) -> Result:
    """Which of two (transcript, intent or None) results to act on (see PairedUnderstander); when
    neither gives a command, the lead's transcript with no intent."""
    if lead_decides(lead, pair):
        return lead
    (l_text, l_intent), (p_text, p_intent) = lead, partner
    if l_intent is not None and p_intent is not None:
        if l_intent.name == p_intent.name:
            # The same command, maybe with other slot values: take the lead's. pocketsphinx mishears
            # numbers far more often than vosk ("thirteen" as "thirty", "ninety nine" as "twenty nine")
            # and its confidence does not show it (measured: README, "vosk and pocketsphinx together").
            return lead
        return lead if l_text.confidence >= pair.wins_from else partner
    if l_intent is not None and l_text.confidence >= pair.alone_min:
        return lead
    if p_intent is not None and p_text.confidence >= pair.partner_alone_min:
        return partner
    return l_text, None


def make_understander(cfg: Config, exposed: Exposed | None = None) -> Understander | PairedUnderstander:
    """The consumer for this config; `exposed`: with Home Assistant's names too (the daemon rebuilds it
    when the uplink sends them). A name from Home Assistant with a word the recognizer cannot say is left
    out (with a warning) rather than failing the rebuild."""
    if not exposed:
        return _make_understander(cfg, None)
    try:
        return _make_understander(cfg, exposed)
    except UnknownWordsError as e:
        keep = [tuple(n for n in names if not set(n.split()) & e.words) for names in exposed]
        if (keep[0], keep[1]) == exposed:
            raise
        _LOG.warning("names from Home Assistant left out: the recognizer cannot say %s",
                     ", ".join(sorted(e.words)))
        return _make_understander(cfg, (keep[0], keep[1]))


def _make_understander(cfg: Config, exposed: Exposed | None) -> Understander | PairedUnderstander:
    engine = cfg.recognizer.engine
    lead_name, pair = pairing()
    model = Path(cfg.recognizer.vosk_model).expanduser() if cfg.recognizer.vosk_model else default_vosk_model(cfg.state_dir)
    if engine == RecognizerMode.AUTO and cfg.recognizer.vosk_model and not model.is_dir():
        # A model the owner named but that is not there is a typo or a failed download, not a wish
        # for pocketsphinx: say so rather than quietly recognize worse.
        raise EngineError(f"recognizer.vosk_model = {cfg.recognizer.vosk_model!r}: no such folder (fix the path, "
                          "run `tallylight models download small-en-us`, or set vosk_model = \"\" for pocketsphinx)")
    if engine == RecognizerMode.AUTO and pair.ready(cfg.recognizer, cfg.state_dir):
        # With a vosk model installed, both recognizers: the fewest mistakes (see PairedUnderstander).
        _LOG.info("recognizer: vosk (%s) and pocketsphinx", model)
        engine = RecognizerMode.BOTH
    if engine == RecognizerMode.BOTH:
        if not pair.ready(cfg.recognizer, cfg.state_dir):
            raise EngineError("recognizer.engine = 'both' runs vosk beside pocketsphinx and needs a vosk model"
                              f"{f' (there is none at {model})' if model else ''}: run `tallylight models download "
                              "small-en-us`, or set recognizer.engine = 'pocketsphinx'")
        def one(name: str) -> Understander:
            return _make_understander(dataclasses.replace(cfg, recognizer=dataclasses.replace(cfg.recognizer, engine=name)),
                                      exposed)

        lead = one(lead_name)
        try:
            return PairedUnderstander(lead, one(pair.partner), lead_name, pair)
        except BaseException:
            lead.close()  # vosk's model is hundreds of MB
            raise
    grammar = Grammar(commands_of(cfg, exposed))
    wake_words = wake_words_of(cfg)
    # Both grammars may begin with the wake phrase, which the pre-roll holds (see with_wake_prefix).
    common = dict(phrases=grammar.vosk_phrases(wake_prefix=" ".join(wake_words)), words=grammar.vocabulary(), state_dir=cfg.state_dir,
                  preroll_s=cfg.capture.preroll_s, debug=cfg.daemon.log_level == LogLevel.DEBUG,
                  extra_pronunciations={w: p.upper() for w, p in cfg.recognizer.pronunciations})
    try:
        rec = make_recognizer(cfg.recognizer, jsgf=with_wake_prefix(grammar.to_jsgf(), wake_words), **common)
    except UnknownWordsError as e:
        if not e.words & set(wake_words):
            raise
        # A wake word the dictionary lacks (and we have no pronunciation for): do without the prefix.
        _LOG.info("recognizer grammar without the wake phrase prefix: %s", e)
        rec = make_recognizer(cfg.recognizer, jsgf=grammar.to_jsgf(), **common)
    return Understander(rec, grammar, cfg.recognizer.min_confidence, wake_words)
