"""Voice commands defined in config: the `[commands.NAME]` tables, parsed and checked.

    [commands.timer]
    phrases = ["set a timer for {minutes} minute[s]", "(set|start) a {minutes} minute timer"]
    slots = { minutes = "1-99" }      # a range, "duration", a list of words, or a table words -> value
    action = "timer"                  # one of tallylight.actions.ACTIONS: time, timer, gpio, run, ...
    reply = "Okay, {minutes} minute timer started."

Every other key of a command is an option of its action (`pin`, `set`, `argv`, ...), checked as the
action's spec in tallylight.actions.ACTIONS says. `parse_commands` turns the raw TOML tables into
frozen `Command`s or raises `ConfigError` with one line naming the file, the key
(`commands.timer.phrases[0]`) and the fix. docs/commands.md is the user's guide to this format;
tallylight.speech.phrase reads the phrases.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

from tallylight.actions import ACTIONS
from tallylight.errors import ConfigError
from tallylight.speech import numbers
from tallylight.speech.command_draft import CommandDraft, Option
from tallylight.speech.command_types import Command, FrozenMap, SlotType
from tallylight.speech.conflicts import find_conflict
from tallylight.speech.grammar import Grammar
from tallylight.speech.phrase import PhraseError, Seq, parse_phrase, slot_refs
from tallylight.speech.words import is_word_char

DEFAULT_COMMANDS_RESOURCE = "data/commands-default.toml"

COMMAND_KEYS = ("phrases", "action", "slots", "reply")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _type_name(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _fail(where: str, key: str, detail: str) -> ConfigError:
    return ConfigError(f"{where}: {key}: {detail}")


# ---------------------------------------------------------------------------------------------------
# Parsing


def _parse_slot_text(spec: str) -> SlotType | str:
    """A slot given as text: "1-99" or "duration". Returns the type, or what is wrong."""
    s = spec.strip()
    if s == "duration":
        return SlotType("", "duration")
    rng = numbers.parse_range(s)
    if rng is None:
        return f'"{spec}" is not a slot type: use a range like "1-99", "duration", or a list of words'
    lo, hi = rng
    if hi > numbers.MAX_INT:
        return (f'range "{spec}" goes past {numbers.MAX_INT} '
                "(numbers are spoken as words up to nine hundred and ninety nine)")
    if lo > hi:
        return f'range "{spec}" runs backwards (write the smaller number first, like "{hi}-{lo}")'
    return SlotType("", "int", lo, hi)


def _spoken_words(text: Any) -> str | None:
    """Normalized words of an enum entry, or None when it is not plain lowercase words."""
    if not isinstance(text, str):
        return None
    words = text.split()
    if not words or not all(w and all(is_word_char(c) for c in w) for w in words):
        return None
    return " ".join(words)


def _parse_slot(where: str, key: str, name: str, spec: Any) -> SlotType:
    if isinstance(spec, str):
        got = _parse_slot_text(spec)
        if isinstance(got, str):
            raise _fail(where, key, got)
        return SlotType(name, got.kind, got.lo, got.hi)
    bad_word = "must be plain lowercase words (letters and ' only), like \"living room\""
    if isinstance(spec, list):
        if not spec:
            raise _fail(where, key, "an empty list: list the words that can be said, like [\"red\", \"green\"]")
        values: dict[str, str] = {}
        for i, item in enumerate(spec):
            words = _spoken_words(item)
            if words is None:
                raise _fail(where, f"{key}[{i}]", f"{item!r} {bad_word}")
            if words in values:
                raise _fail(where, f"{key}[{i}]", f"{words!r} is listed twice")
            values[words] = words
        return SlotType(name, "enum", values=FrozenMap(values))
    if isinstance(spec, dict):
        if not spec:
            raise _fail(where, key, 'an empty table: map what is said to a value, like { "living room" = "lounge" }')
        values = {}
        for spoken, value in spec.items():
            words = _spoken_words(spoken)
            if words is None:
                raise _fail(where, f"{key}.{spoken}", f"the key {spoken!r} {bad_word}")
            if not isinstance(value, str) or not value:
                raise _fail(where, f"{key}.{spoken}",
                            f"must be a non-empty string (the value the action gets), not {value!r}")
            if words in values:
                raise _fail(where, f"{key}.{spoken}", f"{words!r} is listed twice")
            values[words] = value
        return SlotType(name, "enum", values=FrozenMap(values))
    raise _fail(where, key,
                f'must be a range like "1-99", "duration", a list of words or a table of words, not {spec!r}')


def _same_type(a: SlotType, b: SlotType) -> bool:
    return (a.kind, a.lo, a.hi, dict(a.values)) == (b.kind, b.lo, b.hi, dict(b.values))


def _check_option(where: str, key: str, value: Any, opt: Option) -> Any:
    ok = isinstance(value, opt.types) and not (isinstance(value, bool) and bool not in opt.types)
    if not ok:
        raise _fail(where, key, f"must be {_type_name(opt.types)}, not {value!r}")
    if float in opt.types and isinstance(value, int):
        value = float(value)
    expected = opt.check(value) if opt.check else None
    if expected:
        raise _fail(where, key, f"must be {expected}, not {value!r}")
    return value


def _check_name(where: str, name: str, body: Any) -> None:
    base = f"commands.{name}"
    if not _NAME.match(name):
        raise _fail(where, base, "a command name must be lowercase letters, digits and _ (like light_on)")
    if not isinstance(body, dict):
        raise _fail(where, base, f"must be a table with phrases and action ([commands.{name}]), not {body!r}")


def _parse_action(draft: CommandDraft, body: dict) -> str:
    action = body.get("action")
    if action is None:
        raise draft.fail(".action", "missing: say what the command does, one of " + ", ".join(ACTIONS))
    if not isinstance(action, str) or action not in ACTIONS:
        raise draft.fail(".action", f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    return action


def _check_keys(draft: CommandDraft, body: dict, action: str) -> None:
    schema = ACTIONS[action].options
    for key in body:
        if key not in COMMAND_KEYS and key not in schema:
            own = ", ".join(schema) if schema else "none"
            raise draft.fail(
                f".{key}",
                f"unknown key (a command has {', '.join(COMMAND_KEYS)}; options of action {action!r}: {own})",
            )


def _parse_phrases(draft: CommandDraft, body: dict) -> tuple[list[str], tuple[Seq, ...]]:
    phrases = body.get("phrases")
    if phrases is None:
        raise draft.fail(".phrases", 'missing: list what can be said, like phrases = ["lights on"]')
    if isinstance(phrases, str):
        phrases = [phrases]
    if not isinstance(phrases, list) or not phrases:
        raise draft.fail(".phrases", f'must be a non-empty list of strings, like ["lights on"], not {phrases!r}')
    trees = []
    for i, text in enumerate(phrases):
        if not isinstance(text, str):
            raise draft.fail(f".phrases[{i}]", f"must be a string, not {text!r}")
        try:
            trees.append(parse_phrase(text))
        except PhraseError as e:
            raise draft.fail(f".phrases[{i}]", str(e)) from None
    return phrases, tuple(trees)


def _parse_slots(draft: CommandDraft, body: dict) -> dict[str, SlotType]:
    """Slots from the `slots` table, and from inline {name:spec} in the phrases; each one used."""
    slots = _table_slots(draft, body.get("slots", {}))
    _add_inline_slots(draft, slots)
    used = {ref.name for tree in draft.trees for ref in slot_refs(tree)}
    for i, tree in enumerate(draft.trees):
        for ref in slot_refs(tree):
            if ref.name not in slots:
                raise draft.fail(
                    f".phrases[{i}]",
                    f'uses {{{ref.name}}}, which is not defined: add slots = {{ {ref.name} = "1-99" }} '
                    '(a range, "duration" or a list of words)',
                )
    for sname in slots:
        if sname not in used:
            raise draft.fail(f".slots.{sname}", f"is defined but no phrase uses {{{sname}}} (use it or remove it)")
    return slots


def _table_slots(draft: CommandDraft, raw_slots: Any) -> dict[str, SlotType]:
    if not isinstance(raw_slots, dict):
        raise draft.fail(".slots", f'must be a table, like slots = {{ minutes = "1-99" }}, not {raw_slots!r}')
    slots: dict[str, SlotType] = {}
    for sname, spec in raw_slots.items():
        key = f"{draft.base}.slots.{sname}"
        if not re.match(r"^[a-z_][a-z0-9_]*$", sname):
            raise _fail(draft.where, key, "a slot name must be lowercase letters, digits and _ (like minutes)")
        slots[sname] = _parse_slot(draft.where, key, sname, spec)
    return slots


def _add_inline_slots(draft: CommandDraft, slots: dict[str, SlotType]) -> None:
    for i, tree in enumerate(draft.trees):
        for ref in slot_refs(tree):
            if ref.spec is None:
                continue
            got = _parse_slot_text(ref.spec)
            if isinstance(got, str):
                raise draft.fail(f".phrases[{i}]", f"in {{{ref.name}:{ref.spec}}}: {got}")
            inline = SlotType(ref.name, got.kind, got.lo, got.hi)
            if ref.name in slots and not _same_type(slots[ref.name], inline):
                raise draft.fail(
                    f".phrases[{i}]",
                    f"{{{ref.name}:{ref.spec}}} disagrees with {ref.name} = {slots[ref.name].describe()} "
                    "elsewhere in this command (give a slot one type)",
                )
            slots[ref.name] = inline


def _parse_reply(draft: CommandDraft, body: dict, action: str) -> str | None:
    reply = body.get("reply")
    if reply is not None:
        draft.check_template(f"{draft.base}.reply", reply, ACTIONS[action].reply_fields)
        if not reply.strip():
            raise draft.fail(".reply", "is empty: write what to say, or leave reply out")
    return reply


def _parse_options(draft: CommandDraft, body: dict, action: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for oname, opt in ACTIONS[action].options.items():
        key = f"{draft.base}.{oname}"
        if oname in body:
            options[oname] = _check_option(draft.where, key, body[oname], opt)
        elif opt.required:
            raise _fail(draft.where, key, f"missing: action {action!r} needs {oname} ({_type_name(opt.types)})")
        elif opt.default is not None:
            options[oname] = opt.default
    return options


def _parse_command(where: str, name: str, body: Any) -> Command:
    _check_name(where, name, body)
    draft = CommandDraft(where, f"commands.{name}")
    action = _parse_action(draft, body)
    _check_keys(draft, body, action)
    phrases, trees = _parse_phrases(draft, body)
    draft = dataclasses.replace(draft, trees=trees)
    draft = dataclasses.replace(draft, slots=FrozenMap(_parse_slots(draft, body)))
    reply = _parse_reply(draft, body, action)
    options = _parse_options(draft, body, action)
    check = ACTIONS[action].check
    if check is not None:
        check(draft, options)
    return Command(
        name=name,
        phrases=tuple(phrases),
        slots=draft.slots,
        action=action,
        options=FrozenMap(options),
        reply=reply,
    )


def parse_commands(raw: Mapping[str, Any], where: str) -> tuple[Command, ...]:
    """Parse and check the `[commands]` table of a config file (`where` names it in messages)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: [commands] must be a table of named commands, like [commands.light_on]")
    commands = tuple(_parse_command(where, name, body) for name, body in raw.items())

    pins: dict[int, Command] = {}
    for cmd in commands:
        if cmd.action != "gpio":
            continue
        other = pins.setdefault(cmd.options["pin"], cmd)
        if other.options["active_high"] != cmd.options["active_high"]:
            raise _fail(
                where, f"commands.{cmd.name}.active_high",
                f"disagrees with commands.{other.name} on pin {cmd.options['pin']} (one pin has one polarity)",
            )

    conflict = find_conflict(Grammar(commands))
    if conflict is not None:
        a = f"commands.{conflict.command_a}.phrases[{conflict.phrase_a}]"
        b = f"commands.{conflict.command_b}.phrases[{conflict.phrase_b}]"
        if conflict.command_a == conflict.command_b:
            raise _fail(
                where, a,
                f"{conflict.text!r} can be heard with two different slot values"
                + (f" (also via {b})" if b != a else "")
                + ": a slot must not border another slot, or optional words that could be part of it",
            )
        raise _fail(where, a,
                    f"can be heard as {conflict.text!r}, and so can {b}: make the two commands' phrases differ")
    return commands


@lru_cache(maxsize=1)
def default_commands_text() -> str:
    """The shipped default [commands.*] tables (TOML), from the package data."""
    return resources.files("tallylight").joinpath(DEFAULT_COMMANDS_RESOURCE).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def default_commands() -> tuple[Command, ...]:
    """The default commands (light_on, light_off, time, timer, ...), parsed."""
    raw = tomllib.loads(default_commands_text())
    return parse_commands(raw["commands"], f"tallylight/{DEFAULT_COMMANDS_RESOURCE}")
