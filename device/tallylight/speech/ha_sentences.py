"""Home Assistant's own sentences as a local command, so the recognizer hears what Home Assistant can do.

Text mode keeps recognition on the device, and the recognizer only hears phrases of its grammar. This
builds one more command, `home_assistant`, from Home Assistant's sentence templates: the
`speech_to_phrase` set that `home-assistant-intents` ships in its wheel (the closed-vocabulary subset
Home Assistant made for its own speech-to-phrase recognizer; no wildcards), read with `hassil`, Home
Assistant's template parser. No network is needed to build it. The intents: HassTurnOn, HassTurnOff,
HassLightSet, HassGetState and the timer intents (start, cancel, increase, decrease, pause, unpause,
status). Actions still run in Home Assistant: what the command matched is sent as text.

The template syntax is close to tallylight's own (docs/commands.md): text, (a|b), [optional], <rule>,
{list}, and (a;b) permutations. Each template is turned into a tallylight phrase:
- <rule> is expanded in place; a permutation becomes the alternatives of its orders;
- {name} and {area} become the owner's names, spelled out as alternatives (no slot: Home Assistant
  reads the names from the text). With no names, templates that need them are left out;
- a range list ({brightness}: 0-100) becomes an integer slot, a values list an enum slot of its plain
  entries; {floor} and wildcard lists ({timer_name}, {message}) are left out: a closed grammar cannot
  hear "any words";
- a branch with characters tallylight's words do not have (digits, "%", "1/2") is left out.

Names are text from the owner's config, or from Home Assistant (the names it exposes to Assist, which
the uplink fetches with the owner's token: `exposed_names` / `exposed_areas`); either way they are
checked (`clean_names`): lowercase letters and apostrophes only, at most MAX_NAME_WORDS words and
MAX_NAME_CHARS characters, at most MAX_NAMES of them. A name that fails is left out with a reason.
Names only add alternatives to this one command; they cannot touch another command. A name from Home
Assistant that would make one of its sentences sound like a local command ("light": "turn on the
light" is the config's light_on) is itself left out, so it neither steals the local phrase nor costs
the sentence its other names.

Local commands win: a phrase of Home Assistant's that can be heard as a local command (its "turn on
the lights" and the default config's light_on) is dropped, as is one that is ambiguous within itself.
The grammar's matcher never guesses, so a near miss ("turn on the kitchen lamp" with no lamp) stays
no_match.

The command's action is `home_assistant` (ACTION): the daemon, wired to the uplink next, sends the
heard text as a TextUtterance. The module needs `hassil` and `home-assistant-intents` (the uplink
extra); the daemon imports it only when Home Assistant is configured.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tallylight.speech.automaton import word_runs
from tallylight.speech.command_types import Command, FrozenMap, SlotType
from tallylight.speech.conflicts import find_conflict
from tallylight.speech.grammar import Grammar
from tallylight.speech.phrase import PhraseError, parse_phrase
from tallylight.speech.words import is_word_char

_LOG = logging.getLogger(__name__)

ACTION = "home_assistant"
COMMAND = "home_assistant"
INTENTS = ("HassTurnOn", "HassTurnOff", "HassLightSet", "HassGetState", "HassStartTimer", "HassCancelTimer",
           "HassIncreaseTimer", "HassDecreaseTimer", "HassPauseTimer", "HassUnpauseTimer", "HassTimerStatus")
NAME_LISTS = ("name", "area")  # filled from the owner's names
MAX_NAMES = 200
MAX_NAME_WORDS = 6
MAX_NAME_CHARS = 60
MAX_EXPANSIONS = 24  # permutation orders of one group (4 items); more is not a spoken sentence
# Names from Home Assistant made only of words the local commands use are each checked against them; this
# many at most (a real home has a few, "light" or "timer"; a flood of them is refused, not searched).
MAX_SUSPECTS = 16


class _Unusable(Exception):
    """This branch of a template cannot be a tallylight phrase (a wildcard, a digit, a missing list)."""


@dataclass(frozen=True, slots=True)
class HaGrammar:
    """The command, and what was left out and why (for `tallylight check` and the log)."""

    command: Command | None
    templates: int  # templates read
    phrases: int  # phrases kept
    left_out: tuple[str, ...]  # one line each: "HassTurnOn: 'open [the] {name}': ..."


def clean_names(raw: Iterable[object], what: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names fit for the grammar, one reason per name left out). Each name: lowercased, "-" and "_"
    as spaces, then only letters and apostrophes, within the bounds above."""
    names: dict[str, None] = {}
    rejected: list[str] = []
    for item in raw:
        if len(names) >= MAX_NAMES:
            rejected.append(f"{what}: more than {MAX_NAMES} names: the rest are left out")
            break
        if not isinstance(item, str) or not item.strip():
            rejected.append(f"{what}: {str(item)[:40]!r} is not a name")
            continue
        shown = item[:MAX_NAME_CHARS + 10]
        if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in item):
            rejected.append(f"{what}: {shown!r} has a control character")
            continue
        words = re.sub(r"[-_]", " ", item.strip().lower()).split()
        if len(item) > MAX_NAME_CHARS or len(words) > MAX_NAME_WORDS:
            rejected.append(f"{what}: {shown!r} is longer than {MAX_NAME_WORDS} words or {MAX_NAME_CHARS} characters")
            continue
        bad = next((c for w in words for c in w if not is_word_char(c)), None)
        if bad is not None:
            rejected.append(f"{what}: {shown!r} has {bad!r}: say it in letters (\"bedroom two\", not \"bedroom 2\")")
            continue
        names[" ".join(words)] = None
    return tuple(names), tuple(rejected)


def _templates(language: str = "en") -> dict:
    from home_assistant_intents import get_speech_to_phrase_intents

    data = get_speech_to_phrase_intents(language)
    if not data:
        raise ValueError(f"home-assistant-intents has no speech-to-phrase sentences for {language!r}")
    return data


class _Converter:
    """hassil expression trees -> tallylight phrase text, with the slots they use."""

    def __init__(self, data: dict, names: dict[str, tuple[str, ...]]) -> None:
        from hassil import parse_sentence

        self._parse = parse_sentence
        self._rules = {k: parse_sentence(v) for k, v in data.get("expansion_rules", {}).items()}
        self._lists = data.get("lists", {})
        self._names = names
        self.slots: dict[str, SlotType] = {}

    def phrase(self, template: str) -> str:
        text = self._emit(self._parse(template).expression)
        return re.sub(r"\s+", " ", text).strip()

    def _emit(self, exp: object, depth: int = 0) -> str:
        from hassil.expression import (
            Alternative,
            ListReference,
            Permutation,
            RuleReference,
            TextChunk,
        )
        from hassil.expression import Sequence as HSeq

        if depth > 20:
            raise _Unusable("rules nested too deep")
        if isinstance(exp, TextChunk):
            text = exp.text.lower()
            if any(not (c.isspace() or is_word_char(c)) for c in text):
                raise _Unusable(f"{exp.text.strip()!r} is not plain words")
            return text
        if isinstance(exp, Permutation):
            if len(exp.items) > 4:
                raise _Unusable("a permutation of more than 4 parts")
            orders = [" ".join(self._emit(i, depth + 1) for i in order)
                      for order in itertools.islice(itertools.permutations(exp.items), MAX_EXPANSIONS)]
            return " (" + "|".join(o.strip() for o in orders) + ") "
        if isinstance(exp, Alternative):
            options, empty = [], exp.is_optional
            for item in exp.items:
                try:
                    text = self._emit(item, depth + 1)
                except _Unusable:
                    continue
                if text.strip():
                    options.append(text)
                else:
                    empty = True
            if not options:
                if empty:
                    return " "
                raise _Unusable("no alternative is plain words")
            # light[s]: an optional suffix glued to its word stays glued.
            glued = all(not o[:1].isspace() for o in options)
            body = "|".join(re.sub(r"\s+", " ", o).strip() for o in options)
            group = f"[{body}]" if empty else f"({body})"
            return group if glued else f" {group} "
        if isinstance(exp, HSeq):
            return "".join(self._emit(i, depth + 1) for i in exp.items)
        if isinstance(exp, RuleReference):
            rule = self._rules.get(exp.rule_name)
            if rule is None:
                raise _Unusable(f"unknown rule <{exp.rule_name}>")
            body = re.sub(r"\s+", " ", self._emit(rule.expression, depth + 1)).strip()
            return f" ({body}) "
        if isinstance(exp, ListReference):
            return self._list(exp.list_name)
        raise _Unusable(f"a {type(exp).__name__}")

    def _list(self, name: str) -> str:
        if name in NAME_LISTS:
            values = self._names.get(name, ())
            if not values:
                raise _Unusable(f"no {name}s given")
            return " (" + "|".join(values) + ") "
        spec = self._lists.get(name)
        slot = re.sub(r"[^a-z0-9_]", "_", name.lower())
        if not isinstance(spec, dict) or spec.get("wildcard"):
            raise _Unusable(f"{{{name}}} is any words")
        if "range" in spec:
            lo, hi = int(spec["range"].get("from", 0)), int(spec["range"].get("to", 0))
            if spec["range"].get("step", 1) != 1 or not 0 <= lo <= hi <= 999:
                raise _Unusable(f"{{{name}}} is not a range of whole numbers 0-999")
            self.slots[slot] = SlotType(slot, "int", lo, hi)
            return f" {{{slot}}} "
        from hassil.sample import sample_sentence

        values = {}
        for entry in spec.get("values", ()):
            spoken = entry.get("in") if isinstance(entry, dict) else entry
            out = entry.get("out", spoken) if isinstance(entry, dict) else spoken
            if not isinstance(spoken, str) or not spoken:
                continue
            # An entry can be a small template itself ("[securely] locked", "(closed|shut)"): its forms.
            for form in itertools.islice(sample_sentence(self._parse(spoken)), MAX_EXPANSIONS):
                words = " ".join(form.lower().split())
                if words and all(c == " " or is_word_char(c) for c in words):
                    values.setdefault(words, str(out))
        if not values:
            raise _Unusable(f"{{{name}}} has no plain-word values")
        self.slots[slot] = SlotType(slot, "enum", values=FrozenMap(values))
        return f" {{{slot}}} "


def build(names: Sequence[str] = (), areas: Sequence[str] = (), local: Sequence[Command] = (),
          language: str = "en", *, exposed_names: Sequence[str] = (), exposed_areas: Sequence[str] = ()) -> HaGrammar:
    """The `home_assistant` command for these names, without phrases that local commands already have.

    `exposed_names` / `exposed_areas` come from Home Assistant (over the uplink): checked like the config's,
    added after them (the config's come first within MAX_NAMES), and each one that would let one of Home
    Assistant's sentences be heard as a local command is dropped, with a reason in left_out (the config's own
    names are the owner's: such a clash drops the sentence instead, as it always did)."""
    names_ok, bad_names = clean_names(names, "home_assistant.names")
    areas_ok, bad_areas = clean_names(areas, "home_assistant.areas")
    data = _templates(language)
    left_out = list(bad_names + bad_areas)
    if exposed_names or exposed_areas:
        extra_n, bad_n = clean_names(exposed_names, "Home Assistant's names")
        extra_a, bad_a = clean_names(exposed_areas, "Home Assistant's areas")
        left_out += bad_n + bad_a
        extra_n = _room_for(names_ok, extra_n, "Home Assistant's names", left_out)
        extra_a = _room_for(areas_ok, extra_a, "Home Assistant's areas", left_out)
        extra_n, extra_a = _without_collisions(data, names_ok, areas_ok, extra_n, extra_a, tuple(local), left_out)
        names_ok, areas_ok = names_ok + extra_n, areas_ok + extra_a
    command, templates, dropped, _ = _command(data, names_ok, areas_ok)
    left_out += dropped
    if command is None:
        return HaGrammar(None, templates, 0, tuple(left_out))
    command, dropped = _without_conflicts(command, tuple(local))
    left_out += dropped
    return HaGrammar(command, templates, len(command.phrases) if command else 0, tuple(left_out))


def _command(data: dict, names: Sequence[str], areas: Sequence[str],
             skip: frozenset[str] = frozenset()) -> tuple[Command | None, int, list[str], list[str]]:
    """Home Assistant's templates with these names: (the command or None, templates read, left out, the
    template of each phrase). Templates in `skip` are left out quietly."""
    conv = _Converter(data, {"name": tuple(names), "area": tuple(areas)})
    left_out: list[str] = []
    phrases: list[str] = []
    sources: list[str] = []
    templates = 0
    for intent in INTENTS:
        for block in data["intents"].get(intent, {}).get("data", ()):
            for template in block.get("sentences", ()):
                templates += 1
                if template in skip:
                    continue
                try:
                    text = conv.phrase(template)
                    parse_phrase(text)
                except (_Unusable, PhraseError) as e:
                    left_out.append(f"{intent}: {template!r}: {e}")
                    continue
                if text not in phrases:
                    phrases.append(text)
                    sources.append(template)
    if not phrases:
        return None, templates, left_out, sources
    used = {s for p in phrases for s in re.findall(r"\{([a-z0-9_]+)\}", p)}
    slots = FrozenMap({k: v for k, v in conv.slots.items() if k in used})
    return Command(COMMAND, tuple(phrases), slots, ACTION, FrozenMap()), templates, left_out, sources


def _room_for(own: tuple[str, ...], extra: tuple[str, ...], what: str, left_out: list[str]) -> tuple[str, ...]:
    """The extra names not already among the config's, within MAX_NAMES in all (the config's first)."""
    new = tuple(n for n in extra if n not in own)
    room = max(0, MAX_NAMES - len(own))
    if len(new) > room:
        left_out.append(f"{what}: {len(new) - room} more than the {MAX_NAMES} names the grammar takes: left out")
    return new[:room]


def _without_collisions(data: dict, names: tuple[str, ...], areas: tuple[str, ...], extra_names: tuple[str, ...],
                        extra_areas: tuple[str, ...], local: tuple[Command, ...],
                        left_out: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The extra names and areas less those that make a sentence of Home Assistant's sound like a local command.

    Only a name made wholly of words of the local commands can do that (a text heard as a local command has
    only such words, and a sentence using the name holds all of its words), so only those are tried, at most
    MAX_SUSPECTS of them: with the config's names, Home Assistant's sentences are checked against the local
    commands; a clash whose words hold a suspect drops that suspect; a clash that holds none is the
    sentence's own (the config's names, or "turn on the lights"), and that sentence is set aside for the
    search, as build() drops it."""
    if not local:
        return extra_names, extra_areas
    vocabulary = Grammar(local).vocabulary()

    def suspect(name: str) -> bool:
        return set(name.split()) <= vocabulary

    suspects = {("name", n) for n in extra_names if suspect(n)} | {("area", a) for a in extra_areas if suspect(a)}
    if len(suspects) > MAX_SUSPECTS:
        kept = set(sorted(suspects)[:MAX_SUSPECTS])
        for kind, n in sorted(suspects - kept):
            left_out.append(f"Home Assistant's {kind} {n!r}: made only of words of local commands, and more than "
                            f"{MAX_SUSPECTS} such: left out")
        suspects = kept
    base, _, _, _ = _command(data, names, areas)
    base_phrases = Grammar((base,)).phrases if base is not None else ()
    dropped: set[tuple[str, str]] = set()
    set_aside: set[str] = set()  # templates whose clash is their own, not a suspect's
    while suspects - dropped:
        live = suspects - dropped
        command, _, _, sources = _command(data, names + tuple(n for k, n in sorted(live) if k == "name"),
                                          areas + tuple(n for k, n in sorted(live) if k == "area"),
                                          frozenset(set_aside))
        if command is None:
            break
        conflict = find_conflict(Grammar((*local, command)))
        if conflict is None or COMMAND not in (conflict.command_a, conflict.command_b) \
                or conflict.command_a == conflict.command_b:
            break  # no clash with a local command left (Home Assistant's own ambiguities: build() drops those)
        words = conflict.text.split()
        if any(word_runs(ph.nfa, words) for ph in base_phrases):
            # The config's names alone say it: the sentence's own clash, dropped by build() as always.
            set_aside.add(sources[conflict.phrase_a if conflict.command_a == COMMAND else conflict.phrase_b])
            continue
        heard = f" {conflict.text} "
        named = {s for s in live if f" {s[1]} " in heard}
        if not named:  # cannot be (only a suspect's words can make it), but never loop for ever
            break

        def says_it(suspect: tuple[str, str], words: list[str] = words) -> bool:
            kind, n = suspect
            alone, _, _, _ = _command(data, names + ((n,) if kind == "name" else ()),
                                      areas + ((n,) if kind == "area" else ()), frozenset(set_aside))
            return alone is not None and any(word_runs(ph.nfa, words) for ph in Grammar((alone,)).phrases)

        # The one that makes the clash by itself ("light", not "on" in "turn on the light"); if only two
        # together do (an area and a name), both.
        guilty = {s for s in named if says_it(s)} or named
        other = conflict.command_b if conflict.command_a == COMMAND else conflict.command_a
        for kind, n in sorted(guilty):
            left_out.append(f"Home Assistant's {kind} {n!r}: {conflict.text!r} would be heard as commands.{other}, "
                            "a local command: left out")
        dropped |= guilty
    return (tuple(n for n in extra_names if ("name", n) not in dropped),
            tuple(a for a in extra_areas if ("area", a) not in dropped))


def _without_conflicts(command: Command, local: tuple[Command, ...]) -> tuple[Command | None, list[str]]:
    """Drop Home Assistant's phrases that a local command can be heard as, or that are ambiguous."""
    dropped: list[str] = []
    while command is not None:
        conflict = find_conflict(Grammar((*local, command)))
        if conflict is None:
            return command, dropped
        if COMMAND not in (conflict.command_a, conflict.command_b):
            return command, dropped  # the local commands' own conflict: the config check reports it
        index = conflict.phrase_a if conflict.command_a == COMMAND else conflict.phrase_b
        if conflict.command_a == conflict.command_b == COMMAND:
            index = max(conflict.phrase_a, conflict.phrase_b)
        other = conflict.command_b if conflict.command_a == COMMAND else conflict.command_a
        dropped.append(f"{command.phrases[index]!r}: can be heard as {conflict.text!r}, which "
                       f"{'another of its phrases' if other == COMMAND else 'commands.' + other} also means")
        phrases = command.phrases[:index] + command.phrases[index + 1:]
        if not phrases:
            return None, dropped
        used = {s for p in phrases for s in re.findall(r"\{([a-z0-9_]+)\}", p)}
        command = Command(COMMAND, phrases, FrozenMap({k: v for k, v in command.slots.items() if k in used}),
                          ACTION, FrozenMap())
    return None, dropped
