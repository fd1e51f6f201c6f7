"""The local grammar of Home Assistant's own sentences (speech.ha_sentences), built offline from the
templates home-assistant-intents ships, with the owner's names: what it hears, what it refuses, and that
local commands keep their phrases."""

import pytest

from tallylight.speech import ha_sentences
from tallylight.speech.commands import default_commands
from tallylight.speech.conflicts import find_conflict
from tallylight.speech.grammar import Grammar

NAMES = ["Kitchen Light", "ceiling-fan", "front door"]
AREAS = ["kitchen", "living room"]


@pytest.fixture(scope="module")
def built():
    return ha_sentences.build(NAMES, AREAS, default_commands())


@pytest.fixture(scope="module")
def grammar(built):
    return Grammar((*default_commands(), built.command))


@pytest.mark.parametrize("text, slots", [
    ("turn on the kitchen light", {}),
    ("switch off ceiling fan", {}),
    ("turn on the lights in the living room", {}),
    ("kitchen lights off", {}),
    ("set the kitchen brightness to fifty percent", {"brightness": 50}),
    ("what is the front door", {}),
    ("is the front door locked", {"lock_states": "locked"}),
    ("set a timer for two hours", {"timer_hours": 2}),
    ("add five minutes to my timer", {"timer_minutes": 5}),
    ("pause the timer", {}),
    ("how long is left on my timer", {}),
])
def test_home_assistants_sentences_with_the_owners_names_are_heard_locally(grammar, text, slots):
    match = grammar.match(text)
    assert match is not None and match.command.name == "home_assistant" and match.command.action == "home_assistant"
    assert dict(match.slots) == slots


@pytest.mark.parametrize("text", [
    "turn on the kitchen lamp",  # no such name
    "turn on the bathroom light",  # no such area or name
    "turn on kitchen the light",
    "set the kitchen brightness to fifty",  # "percent" is optional, so this one is...
])
def test_a_near_miss_is_no_match(grammar, text):
    if text.endswith("fifty"):
        assert grammar.match(text) is not None  # ...heard: the template says [percent]
        return
    assert grammar.match(text) is None


def test_local_commands_keep_their_phrases_and_the_combined_grammar_has_no_conflict(built, grammar):
    for text, name in [("turn on the lights", "light_on"), ("lights off", "light_off"),
                       ("set a timer for five minutes", "timer"), ("cancel the timer", "timer_cancel"),
                       ("what time is it", "time")]:
        match = grammar.match(text)
        assert match is not None and match.command.name == name, text
    assert find_conflict(grammar) is None
    assert any("commands.light_on also means" in line for line in built.left_out)


def test_without_names_only_the_sentences_that_need_none_remain():
    bare = ha_sentences.build((), (), default_commands())
    assert bare.command is not None and 0 < bare.phrases < ha_sentences.build(NAMES, AREAS).phrases
    g = Grammar((*default_commands(), bare.command))
    assert g.match("pause the timer") is not None and g.match("turn on the kitchen light") is None
    assert any("no names given" in line for line in bare.left_out)


def test_names_are_checked_and_bounded_and_only_extend_the_grammar():
    ok, rejected = ha_sentences.clean_names(
        ["Kitchen Light", "kitchen light", "bedroom 2", "x" * 61, "a b c d e f g", "", 7, "lamp\nERROR forged",
         "gate; rm -rf", "Wohnzimmer-Lampe"], "names")
    assert ok == ("kitchen light", "wohnzimmer lampe")  # "kitchen light" once
    assert len(rejected) == 7 and all("\n" not in r for r in rejected)
    assert any("'bedroom 2' has '2'" in r for r in rejected)
    many, rejected = ha_sentences.clean_names([f"lamp {chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(300)], "n")
    assert len(many) == ha_sentences.MAX_NAMES and "more than 200 names" in rejected[-1]
    # A name that is a local command's phrase cannot take it over: the local command still wins.
    hostile = ha_sentences.build(["lights", "the timer"], [], default_commands())
    g = Grammar((*default_commands(), hostile.command))
    assert g.match("turn on the lights").command.name == "light_on"
    assert find_conflict(g) is None


def test_building_needs_no_network(monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("ha_sentences opened a socket")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert ha_sentences.build(["fan"], ["hall"]).command is not None
