"""Recognizer + command grammar = the consumer a capture is handed to.

It streams the capture into the recognizer while the capture light is on, and at the end turns the
final hypothesis into a transcript and either an intent (an exact parse of a configured command, or
the unique completion of a truncated one) or no_match. It never guesses: low confidence, words
outside the grammar, or a truncated phrase with several completions are no_match.
"""

from __future__ import annotations

import logging

from tallylight.config import Config
from tallylight.events import Event, IntentMatched, NoMatch, Transcript
from tallylight.speech.commands import default_commands, parse_commands
from tallylight.speech.grammar import Grammar
from tallylight.speech.recognizer import Hypothesis, Recognizer, make_recognizer

_LOG = logging.getLogger(__name__)


class Understander:
    name = "recognizer"

    def __init__(self, recognizer: Recognizer, grammar: Grammar, min_confidence: float):
        self.recognizer = recognizer
        self.grammar = grammar
        self.min_confidence = min_confidence
        self.name = getattr(recognizer, "name", "recognizer")

    def process(self, block: bytes) -> tuple[list[Event], bool]:
        self.recognizer.process(block)
        return [], False

    def finish(self, t: float) -> list[Event]:
        hyp = self.recognizer.finish()
        return self.interpret(hyp, t)

    def interpret(self, hyp: Hypothesis, t: float) -> list[Event]:
        text = " ".join(w for w in hyp.text.split() if w != "[unk]")
        events: list[Event] = [Transcript(t, hyp.text, round(hyp.confidence, 3))]
        if not text or "[unk]" in hyp.text.split():
            return events + [NoMatch(t, hyp.text)]
        if hyp.confidence < self.min_confidence:
            _LOG.info("rejected %r: confidence %.2f below recognizer.min_confidence %.2f", hyp.text, hyp.confidence,
                      self.min_confidence)
            return events + [NoMatch(t, hyp.text)]
        match = self.grammar.match(text) if hyp.complete else None
        if match is None:
            # A truncated hypothesis ("set a timer for five" without "minutes") is trusted only if
            # the grammar allows exactly one way to finish it.
            match = self.grammar.complete(text)
        if match is None:
            return events + [NoMatch(t, hyp.text)]
        return events + [IntentMatched(t, match.command.name, dict(match.slots), match=match)]

    def reset(self) -> None:
        self.recognizer.reset()

    def close(self) -> None:
        self.recognizer.close()


def commands_of(cfg: Config):
    """The configured commands; the defaults when the config has no [commands] section."""
    where = str(cfg.path) if cfg.path else "<config>"
    return parse_commands(cfg.commands, where) if cfg.commands else default_commands()


def make_understander(cfg: Config) -> Understander:
    grammar = Grammar(commands_of(cfg))
    rec = make_recognizer(cfg.recognizer, jsgf=grammar.to_jsgf(), phrases=grammar.vosk_phrases(),
                          words=grammar.vocabulary(), state_dir=cfg.state_dir,
                          debug=cfg.daemon.log_level == "debug")
    return Understander(rec, grammar, cfg.recognizer.min_confidence)
