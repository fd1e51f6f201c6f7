"""From a recognizer's final hypothesis to an intent or no_match (speech/understand.py), with the real
default commands' grammar: what the pre-roll's wake phrase may leave at the start of a result."""

from __future__ import annotations

import pytest

from tallylight.speech.commands import default_commands
from tallylight.speech.grammar import Grammar
from tallylight.speech.recognizer import Hypothesis
from tallylight.speech.understand import Understander


@pytest.fixture(scope="module")
def understander():
    # interpret() uses only the grammar; the recognizer is what process() and finish() feed from.
    return Understander(None, Grammar(default_commands()), min_confidence=0.5, wake_words=("okay", "nabu"))


def outcome(understander, text: str, confidence: float = 0.9, complete: bool = False):
    events = understander.interpret(Hypothesis(text, confidence, final=True, complete=complete), 1.0)
    intents = [(e.name, dict(e.slots)) for e in events if e.kind == "intent"]
    return intents[0] if intents else None


@pytest.mark.parametrize("text", [
    "turn on the light",
    "okay nabu turn on the light",  # the whole wake phrase (vosk and pocketsphinx grammars have it)
    "nabu turn on the light",  # its end: the pre-roll began inside it
    "[unk] turn on the light",  # vosk: a model without "nabu"
    "okay [unk] turn on the light",
    "[unk] [unk] turn on the light",
    "[unk] nabu turn on the light",
    "okay turn on the light",  # vosk: a model with neither "nabu" nor [unk] drops it from its lines
    "[unk] okay nabu turn on the light",  # a sound just before the wake phrase
])
def test_the_wake_phrase_at_the_start_is_dropped(understander, text):
    assert outcome(understander, text) == ("light_on", {})


@pytest.mark.parametrize("text", ["[unk] stop", "nabu stop", "okay [unk] stop", "okay nabu stop", "stop"])
def test_a_phrase_that_begins_a_longer_one_is_itself_after_the_wake_phrase(understander, text):
    # Not a vosk phrase as heard ("[unk] stop"), but exactly the phrase "stop" once the wake phrase goes.
    assert outcome(understander, text, complete=False) == ("stop", {})


@pytest.mark.parametrize("text", [
    "[unk] [unk] [unk] turn on the light",  # more than the wake phrase before the command
    "nabu [unk] turn on the light",  # an unknown word after the wake phrase
    "okay nabu [unk] turn on the light",
    "okay okay turn on the light",
    "turn on [unk] light",
    "turn on the light [unk]",
    "[unk]",
    "okay nabu",
    "",
])
def test_any_other_unknown_speech_is_no_command(understander, text):
    assert outcome(understander, text) is None


def test_low_confidence_is_no_command(understander):
    assert outcome(understander, "okay nabu set a timer for five minutes", 0.49) is None
    assert outcome(understander, "okay nabu set a timer for five minutes", 0.5) == ("timer", {"minutes": 5})


def test_without_wake_words_one_leading_unknown_word_goes():
    bare = Understander(None, Grammar(default_commands()), min_confidence=0.5, wake_words=())
    assert outcome(bare, "[unk] volume up") == ("volume_up", {})
    assert outcome(bare, "[unk] [unk] volume up") is None
