"""The phrase grammar: round trips (every phrase the grammar can produce parses back to its intent and
typed slots), pocketsphinx's own JSGF parser on our JSGF, vosk phrase lists, completion of truncated
hypotheses, and number words / durations."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tallylight.errors import ConfigError
from tallylight.speech import numbers
from tallylight.speech.command_types import Command, FrozenMap
from tallylight.speech.commands import _parse_slot, default_commands, parse_commands
from tallylight.speech.grammar import Grammar
from tallylight.speech.phrase import PhraseError, parse_phrase
from tallylight.speech.words import normalize_words

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def grammar() -> Grammar:
    return Grammar(default_commands())


@pytest.fixture(scope="module")
def decoder():
    """The real pocketsphinx 5 decoder (English model from its wheel); its parse_jsgf is the real
    JSGF parser and FSG builder the recognizer uses."""
    from pocketsphinx import Decoder

    return Decoder(loglevel="ERROR")


def fsg_of(decoder, g: Grammar):
    return decoder.parse_jsgf(g.to_jsgf())


# ---------------------------------------------------------------------------------------------------
# The default grammar


def test_every_default_phrase_parses_back(grammar):
    texts = list(grammar.expand(limit=None))
    assert len(texts) == grammar.size()  # the defaults have no duplicate paths
    assert len(texts) > 400  # the 1-99 timer slot is in there, both minute and minutes
    for text, name, slots in texts:
        m = grammar.match(text)
        assert m is not None, text
        assert (m.command.name, dict(m.slots)) == (name, slots), text
        m.reply_text({"time": "noon", "duration": "five minutes", "volume": "fifty", "control": "the mute switch"})


def test_defaults_are_accepted_by_pocketsphinx_and_use_only_its_dictionary_words(grammar, decoder):
    fsg = fsg_of(decoder, grammar)
    for text, _, _ in grammar.expand(limit=None):
        assert fsg.accept(text), text
    missing = sorted(w for w in grammar.vocabulary() if decoder.lookup_word(w) is None)
    assert missing == [], f"not in pocketsphinx's English dictionary: {missing}"
    # The recognizer loads it the same way.
    decoder.add_jsgf_string("tallylight_test", grammar.to_jsgf())


def test_jsgf_keeps_number_slots_in_one_rule(grammar):
    jsgf = grammar.to_jsgf()
    assert jsgf.count("<int_1_99> =") == 1
    assert jsgf.count("ninety nine") == 1  # not once per phrase
    assert len(jsgf) < 4000


def test_vocabulary_words_are_all_in_the_jsgf(grammar):
    tokens = set(re.findall(r"[^\s|()\[\]<>;=]+", grammar.to_jsgf()))
    assert grammar.vocabulary() <= tokens
    assert {"timer", "ninety", "minutes", "minute", "what's", "lights", "light"} <= grammar.vocabulary()


def test_match_rejects_what_is_not_exactly_a_command(grammar):
    for text in ("", "[unk]", "lights [unk]", "turn on the light please", "turn on the", "set a timer for five",
                 "set a timer for five minutes minutes", "the light on", "banana", "volume"):
        assert grammar.match(text) is None, text


def test_match_normalizes_recognizer_output(grammar):
    assert grammar.match("Turn ON the light(2)").command.name == "light_on"  # pocketsphinx alt pronunciation
    assert grammar.match("<s> lights  on </s>").command.name == "light_on"
    assert grammar.match("set a timer for twenty-one minutes.").slots == {"minutes": 21}
    assert normalize_words("What's the time?") == ["what's", "the", "time"]


def test_complete_resolves_only_unique_completions(grammar):
    m = grammar.complete("set a timer for five")
    assert m is not None and m.command.name == "timer" and m.slots == {"minutes": 5}
    assert m.text == "set a timer for five minute" or m.text == "set a timer for five minutes"
    assert grammar.complete("start a five minute").slots == {"minutes": 5}
    assert grammar.complete("turn on the").command.name == "light_on"  # light or lights: one intent
    assert grammar.complete("what time").command.name == "time"
    assert grammar.complete("cancel").command.name == "timer_cancel"
    assert grammar.complete("lights on").command.name == "light_on"  # already whole
    # More than one intent fits: never guess.
    assert grammar.complete("set a timer for twenty") is None  # twenty, or twenty one...
    assert grammar.complete("turn the") is None  # light on/off, volume up/down
    assert grammar.complete("stop") is None  # stop, stop listening, stop the timer
    assert grammar.complete("set a timer for") is None
    # Nothing fits, or too much is missing.
    assert grammar.complete("banana") is None
    assert grammar.complete("") is None
    assert grammar.complete("what") is None  # three words missing
    assert grammar.complete("what", max_missing=3).command.name == "time"


def test_vosk_phrases_cover_every_word_pair_and_stay_in_the_grammar(grammar):
    phrases = grammar.vosk_phrases()
    assert "[unk]" in phrases
    lines = [p for p in phrases if p != "[unk]"]
    for line in set(lines):
        assert grammar.match(line) is not None, line

    def pairs(words):
        seq = ["<s>", *words, "</s>"]
        return set(zip(seq, seq[1:]))

    needed = set().union(*(pairs(t.split()) for t, _, _ in grammar.expand(limit=None)))
    got = set().union(*(pairs(line.split()) for line in lines))
    assert got == needed
    # Far fewer distinct lines than the full expansion (which repeats the 1-99 slot per phrase).
    assert len(set(lines)) < grammar.size() / 2
    # Balanced: every command (and [unk]) has the same number of lines.
    counts = {}
    for line in lines:
        name = grammar.match(line).command.name
        counts[name] = counts.get(name, 0) + 1
    assert len(set(counts.values())) == 1 and phrases.count("[unk]") == next(iter(counts.values()))
    assert set(counts) == {c.name for c in grammar.commands}


def test_vosk_phrases_with_the_wake_prefix_add_each_line_after_the_wake_phrase(grammar):
    plain = grammar.vosk_phrases(balance=False)
    prefixed = grammar.vosk_phrases(balance=False, wake_prefix=" okay  nabu ")
    lines = [p for p in plain if p != "[unk]"]
    assert sorted(prefixed) == sorted(plain + [f"okay nabu {line}" for line in lines])
    # Balanced as before: every command (and [unk]) the same number of lines.
    counts = {}
    for line in grammar.vosk_phrases(wake_prefix="okay nabu"):
        if line != "[unk]":
            name = grammar.match(line.removeprefix("okay nabu ")).command.name
            counts[name] = counts.get(name, 0) + 1
    assert len(set(counts.values())) == 1
    assert grammar.vosk_phrases(wake_prefix="okay nabu").count("[unk]") == next(iter(counts.values()))


# ---------------------------------------------------------------------------------------------------
# Random command definitions round-trip

WORDS = ["turn", "on", "off", "the", "light", "red", "blue", "dark", "white", "twenty", "one", "stop", "open", "a"]


@st.composite
def phrase_parts(draw, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["word", "word", "word", "alt", "opt", "glue"] if depth < 2 else ["word"]))
        if kind == "word":
            parts.append(draw(st.sampled_from(WORDS)))
        elif kind == "alt":
            opts = draw(st.lists(phrase_parts(depth + 1), min_size=2, max_size=3))
            parts.append("(" + "|".join(opts) + ")")
        elif kind == "opt":
            parts.append("[" + draw(phrase_parts(depth + 1)) + "]")
        else:
            parts.append(draw(st.sampled_from(WORDS)) + "[s]")
    return " ".join(parts)


@st.composite
def command_tables(draw) -> dict:
    raw = {}
    for i in range(draw(st.integers(1, 4))):
        slots = {}
        phrases = []
        for _ in range(draw(st.integers(1, 3))):
            phrase = draw(st.sampled_from(WORDS)) + " " + draw(phrase_parts())  # never all optional
            phrases.append(phrase)
        if draw(st.booleans()):
            kind = draw(st.sampled_from(["int", "int", "enum", "duration"]))
            if kind == "int":
                lo = draw(st.integers(0, 120))
                slots["n"] = f"{lo}-{lo + draw(st.integers(0, 30))}"
            elif kind == "enum":
                slots["n"] = draw(st.lists(st.sampled_from(["red", "green", "dark blue", "blue", "warm white"]),
                                           min_size=1, max_size=3, unique=True))
            else:
                slots["n"] = "duration"
            # the slot goes into every phrase, at the start, the end or in between
            phrases = [draw(st.sampled_from(["{n} " + p, p + " {n}", p + " to {n} please"])) for p in phrases]
        raw[f"cmd{i}"] = {"phrases": phrases, "action": "stop", **({"slots": slots} if slots else {})}
    return raw


def unchecked(name: str, body: dict) -> Command:
    """A Command built without parse_commands' checks, to look at a definition it refused."""
    slots = {n: _parse_slot("t", "k", n, spec) for n, spec in body.get("slots", {}).items()}
    return Command(name, tuple(body["phrases"]), FrozenMap(slots), body["action"], FrozenMap())


@given(raw=command_tables(), seed=st.integers(0, 2**32))
@example(raw={"cmd0": {"phrases": ["open [twenty] {n}"], "slots": {"n": "1-30"}, "action": "stop"}}, seed=1)
@example(raw={"cmd0": {"phrases": ["turn [dark] {n}"], "slots": {"n": ["blue", "dark blue"]}, "action": "stop"}}, seed=1)
@example(raw={"cmd0": {"phrases": ["turn (on|off) {n}"], "slots": {"n": "duration"}, "action": "stop"},
              "cmd1": {"phrases": ["turn on a minute"], "action": "stop"}}, seed=1)
@FAST
def test_random_definitions_round_trip_or_are_rejected_for_a_real_reason(raw, seed, decoder):
    try:
        cmds = parse_commands(raw, "random.toml")
    except ConfigError as e:
        # The only reason random definitions from valid syntax are refused: two meanings for one
        # text. Check the witness in the message really is one.
        msg = str(e)
        m = re.search(r"commands\.(cmd\d)\.phrases\[\d\]: (?:can be heard as )?'([^']*)'", msg)
        assert m, msg
        text = m.group(2)
        event("refused: " + ("two commands" if "and so can" in msg else "two slot values"))
        if "and so can commands." in msg:
            other = re.search(r"and so can commands\.(cmd\d)\.", msg).group(1)
            for name in (m.group(1), other):
                single = Grammar(parse_commands({name: raw[name]}, "one.toml"))
                assert single.match(text) is not None, (name, text)
        else:
            # One command, one text, two slot values: pocketsphinx's grammar takes the text, the
            # matcher refuses to pick a meaning.
            assert "two different slot values" in msg
            cmd = unchecked(m.group(1), raw[m.group(1)])
            alone = Grammar([cmd])
            assert fsg_of(decoder, alone).accept(text) and alone.match(text) is None, text
        return
    event("accepted")
    g = Grammar(cmds)
    fsg = fsg_of(decoder, g)
    has_duration = any(s.kind == "duration" for c in cmds for s in c.slots.values())
    rng = random.Random(seed)
    produced = [g.sample(rng) for _ in range(40)] if has_duration else list(g.expand(limit=600))
    for text, name, slots in produced:
        m = g.match(text)
        assert m is not None, text
        assert (m.command.name, dict(m.slots)) == (name, slots), text
        assert fsg.accept(text), text
    # And in the other direction: texts made of grammar words are accepted by pocketsphinx exactly
    # when the matcher takes them.
    vocab = sorted(g.vocabulary())
    for _ in range(30):
        words = [rng.choice(vocab) for _ in range(rng.randint(1, 6))]
        text = " ".join(words)
        assert fsg.accept(text) == (g.match(text) is not None), text


@given(seed=st.integers(0, 2**32))
@FAST
def test_truncated_phrases_complete_to_their_intent_when_unique(seed, grammar):
    rng = random.Random(seed)
    text, name, slots = grammar.sample(rng)
    words = text.split()
    cut = rng.randint(1, min(2, len(words) - 1)) if len(words) > 1 else 0
    prefix = " ".join(words[: len(words) - cut])
    m = grammar.complete(prefix)
    # Work out the answer independently, by brute force over the full expansion.
    intents = {(n, tuple(sorted(s.items())))
               for t, n, s in grammar.expand(limit=None)
               if t.split()[: len(prefix.split())] == prefix.split() and len(t.split()) - len(prefix.split()) <= 2}
    assert (name, tuple(sorted(slots.items()))) in intents
    if len(intents) == 1:
        assert m is not None and (m.command.name, dict(m.slots)) == (name, slots)
    else:
        assert m is None, (prefix, intents)


# ---------------------------------------------------------------------------------------------------
# Phrase syntax


def test_glued_and_nested_groups():
    g = Grammar(parse_commands({"x": {"phrases": ["[please] (turn|switch) on [the] light[s] [(now|right now)]"], "action": "stop"}}, "x"))
    texts = {t for t, _, _ in g.expand()}
    assert "turn on light" in texts and "please switch on the lights right now" in texts
    assert len(texts) == 2 * 2 * 2 * 2 * 3
    g = Grammar(parse_commands({"x": {"phrases": ["[un]lock the door"], "action": "stop"}}, "x"))
    assert {t for t, _, _ in g.expand()} == {"lock the door", "unlock the door"}


def test_non_english_words_are_words():
    tree = parse_phrase("불 켜 [줘]")  # vosk has models for many languages; Korean has no case
    assert len(tree.items) == 3
    with pytest.raises(PhraseError, match="capital letter"):
        parse_phrase("Élan")


# ---------------------------------------------------------------------------------------------------
# Numbers and durations


def test_number_words_round_trip_0_to_999():
    for n in range(1000):
        assert numbers.words_to_int(numbers.int_to_words(n)) == n
        for form in numbers.spoken_forms(n):
            assert numbers.words_to_int(form) == n
    assert numbers.int_to_words(0) == "zero"
    assert numbers.int_to_words(21) == "twenty one"
    assert numbers.int_to_words(105) == "one hundred and five"
    assert numbers.words_to_int("ninety-nine") == 99
    assert numbers.words_to_int("one hundred five") == 105
    assert numbers.words_to_int("a hundred and twenty") == 120
    for bad in ("", "twenty twenty", "one thousand", "hundred", "five hundred and", "oh", "twelve hundred"):
        with pytest.raises(ValueError):
            numbers.words_to_int(bad)
    for bad in (-1, 1000, 2.5, True):
        with pytest.raises(ValueError):
            numbers.int_to_words(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("five minutes", 300),
        ("a minute", 60),
        ("one minute", 60),
        ("ninety seconds", 90),
        ("an hour", 3600),
        ("two hours", 7200),
        ("one hour ten minutes", 4200),
        ("one hour and ten minutes", 4200),
        ("an hour and a half", 5400),
        ("one and a half hours", 5400),
        ("two and a half minutes", 150),
        ("half an hour", 1800),
        ("half a minute", 30),
        ("a minute and a half", 90),
        ("one hour five minutes and thirty seconds", 3930),
        ("twenty-one minutes", 1260),
    ],
)
def test_durations(text, seconds):
    assert numbers.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "minutes", "five", "ten minutes one hour", "an minute", "a hour",
                                  "five minutes five minutes", "two hours and a half", "zero minutes", "and five minutes",
                                  "one hundred minutes", "five minutes and"])
def test_not_durations(text):
    with pytest.raises(ValueError):
        numbers.parse_duration(text)


@pytest.fixture(scope="module")
def duration_grammar() -> Grammar:
    return Grammar(parse_commands({"wait": {"phrases": ["{d:duration}"], "action": "timer"}}, "d.toml"))


@given(seconds=st.integers(1, numbers.MAX_DURATION_S))
@FAST
def test_duration_words_round_trip_through_the_grammar(seconds, duration_grammar):
    words = numbers.duration_to_words(seconds)
    assert numbers.parse_duration(words) == seconds
    m = duration_grammar.match(words)
    assert m is not None and m.slots == {"d": seconds}, words


@given(seed=st.integers(0, 2**32))
@FAST
def test_duration_grammar_and_parser_agree(seed, duration_grammar, decoder):
    rng = random.Random(seed)
    fsg = fsg_of(decoder, duration_grammar)
    vocab = sorted(duration_grammar.vocabulary())
    for _ in range(20):
        text, _, slots = duration_grammar.sample(rng)
        assert numbers.parse_duration(text) == slots["d"]
        assert fsg.accept(text), text
        # A near variant: one word swapped. The parser and the grammar must agree on it.
        words = text.split()
        words[rng.randrange(len(words))] = rng.choice(vocab)
        variant = " ".join(words)
        try:
            parsed = numbers.parse_duration(variant)
        except ValueError:
            parsed = None
        m = duration_grammar.match(variant)
        assert (m.slots["d"] if m else None) == parsed, variant
        assert fsg.accept(variant) == (m is not None), variant
