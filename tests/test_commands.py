"""The [commands] config format: the shipped defaults, and one test per kind of bad input, each
checking that the one-line ConfigError names the file and the key to fix."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from tallylight import config
from tallylight.actions import timer_seconds
from tallylight.errors import ConfigError
from tallylight.speech.command_types import Command, FrozenMap
from tallylight.speech.commands import (
    default_commands,
    default_commands_text,
    parse_commands,
)
from tallylight.speech.grammar import Grammar
from tallylight.speech.understand import commands_of

WHERE = "/etc/tallylight/tallylight.toml"

GOOD = {
    "light_on": {"phrases": ["turn on the light", "lights on"], "action": "gpio", "pin": 22, "set": "on"},
    "timer": {
        "phrases": ["set a timer for {minutes} minute[s]"],
        "slots": {"minutes": "1-99"},
        "action": "timer",
        "reply": "Okay, {minutes} minute timer.",
    },
    "say_hi": {"phrases": ["say hello to {name}"], "slots": {"name": ["anna", "bob"]}, "action": "run",
               "argv": ["/usr/local/bin/hello", "{name}"]},
}


def bad(**changes) -> dict:
    """GOOD with changes: bad(timer={"action": "nope"}) merges into commands.timer; a value of
    None deletes the key; a whole new command can be added by name."""
    raw = copy.deepcopy(GOOD)
    for name, body in changes.items():
        if body is None:
            del raw[name]
            continue
        target = raw.setdefault(name, {})
        if not isinstance(body, dict):
            raw[name] = body
            continue
        for k, v in body.items():
            if v is None:
                target.pop(k, None)
            else:
                target[k] = v
    return raw


def error_for(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse_commands(raw, WHERE)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert msg.startswith(WHERE + ": "), msg
    return msg


# ---------------------------------------------------------------------------------------------------
# The shipped defaults


def test_good_config_parses_to_frozen_commands():
    cmds = {c.name: c for c in parse_commands(GOOD, WHERE)}
    assert cmds["light_on"].action == "gpio"
    assert dict(cmds["light_on"].options) == {"pin": 22, "set": "on", "active_high": True}
    assert cmds["timer"].slots["minutes"].kind == "int"
    assert (cmds["timer"].slots["minutes"].lo, cmds["timer"].slots["minutes"].hi) == (1, 99)
    assert cmds["say_hi"].options["argv"] == ("/usr/local/bin/hello", "{name}")
    assert cmds["say_hi"].options["pass_transcript"] is False
    with pytest.raises(AttributeError):
        cmds["timer"].action = "time"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cmds["timer"].options["x"] = 1  # type: ignore[index]
    hash(cmds["timer"])  # frozen all the way down, so usable as a key


def test_default_commands_have_the_names_and_phrases_the_issue_fixes():
    cmds = {c.name: c for c in default_commands()}
    assert {"light_on", "light_off", "time", "timer", "timer_cancel", "volume_up", "volume_down", "mute"} <= set(cmds)
    g = Grammar(default_commands())
    expected = {
        "turn on the light": "light_on",
        "lights on": "light_on",
        "turn off the light": "light_off",
        "lights off": "light_off",
        "what time is it": "time",
        "cancel the timer": "timer_cancel",
        "volume up": "volume_up",
        "volume down": "volume_down",
        "stop listening": "mute",
    }
    for text, name in expected.items():
        m = g.match(text)
        assert m is not None and m.command.name == name, text
    for n, words in ((1, "one"), (21, "twenty one"), (99, "ninety nine")):
        m = g.match(f"set a timer for {words} minutes")
        assert m is not None and m.command.name == "timer" and m.slots == {"minutes": n}
        assert type(m.slots["minutes"]) is int
    m = g.match("set a timer for one minute")
    assert m is not None and m.slots == {"minutes": 1}
    for outside in ("set a timer for zero minutes", "set a timer for one hundred minutes"):
        assert g.match(outside) is None, outside
    assert cmds["light_on"].options["pin"] == cmds["light_off"].options["pin"] == 22
    assert (cmds["light_on"].options["set"], cmds["light_off"].options["set"]) == ("on", "off")
    assert cmds["mute"].action == "mute"
    assert timer_seconds(g.match("set a timer for five minutes")) == 300


def test_default_replies_render():
    g = Grammar(default_commands())
    assert g.match("set a timer for twenty one minutes").reply_text() == "Okay, twenty one minute timer started."
    assert g.match("what time is it").reply_text({"time": "ten past five"}) == "It's ten past five."
    assert g.match("lights on").reply_text() == "Okay, the light is on."


def test_shipped_config_ends_with_the_default_commands_as_the_package_has_them(repo):
    # One source: the package data (what an installed package reads when a config has no
    # [commands]). config/tallylight.toml shows the same text to the owner, to edit; it must not drift.
    text = (repo / "config" / "tallylight.toml").read_text()
    assert text.endswith(default_commands_text()), (
        "config/tallylight.toml's commands differ from device/tallylight/data/commands-default.toml: edit the "
        "package file and copy it to the end of the config"
    )
    path = repo / "config" / "tallylight.toml"
    assert parse_commands(config.load(path).commands, str(path)) == default_commands()


def test_config_load_validates_commands_through_parse_commands():
    raw = {"commands": bad(timer={"action": "teleport"})}
    with pytest.raises(ConfigError, match=r"^x\.toml: commands\.timer\.action: unknown action 'teleport'"):
        config.from_dict(raw, "x.toml")
    assert config.from_dict({"commands": GOOD}, "x.toml").commands == GOOD


def test_the_commands_are_parsed_once_when_the_config_is_loaded():
    cfg = config.from_dict({"commands": GOOD}, "x.toml")
    assert cfg.parsed_commands == parse_commands(GOOD, "x.toml")
    assert commands_of(cfg) is cfg.parsed_commands
    # A config changed after loading is parsed again, never answered with the old commands.
    fewer = {"timer": GOOD["timer"]}
    changed = dataclasses.replace(cfg, commands=fewer)
    assert changed.parsed_commands is None
    assert [c.name for c in commands_of(changed)] == ["timer"]
    assert commands_of(config.from_dict({}, "x.toml")) == default_commands()


def test_inline_slot_type_and_enum_table():
    cmds = parse_commands(
        {
            "timer": {"phrases": ["set a timer for {minutes:1-99} minute[s]"], "action": "timer"},
            "lamp": {"phrases": ["make it {color}"], "slots": {"color": {"warm white": "ffd0a0", "red": "ff0000"}},
                     "action": "run", "argv": ["/usr/bin/lamp", "--color={color}"]},
            "wait": {"phrases": ["wake me in {d:duration}"], "action": "timer"},
        },
        WHERE,
    )
    g = Grammar(cmds)
    assert g.match("set a timer for nine minutes").slots == {"minutes": 9}
    m = g.match("make it warm white")
    assert m.slots == {"color": "ffd0a0"} and m.argv() == ("/usr/bin/lamp", "--color=ffd0a0")
    m = g.match("wake me in an hour and a half")
    assert m.slots == {"d": 5400} and timer_seconds(m) == 5400


def test_frozen_map_behaves_like_a_read_only_dict():
    m = FrozenMap({"a": 1})
    assert m == {"a": 1} and dict(m) == {"a": 1} and len(m) == 1 and hash(m) == hash(FrozenMap(a=1))
    assert isinstance(default_commands()[0], Command)


# ---------------------------------------------------------------------------------------------------
# One test per kind of bad input


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        # the table itself
        ({"light-on": GOOD["light_on"]}, "commands.light-on", "lowercase letters, digits and _"),
        (bad(timer="set a timer"), "commands.timer", "must be a table"),
        # phrases
        (bad(timer={"phrases": None}), "commands.timer.phrases", "missing"),
        (bad(timer={"phrases": []}), "commands.timer.phrases", "non-empty list"),
        (bad(light_on={"phrases": ["lights on", 5]}), "commands.light_on.phrases[1]", "must be a string"),
        (bad(light_on={"phrases": ["lights on", "Lights off"]}), "commands.light_on.phrases[1]", "capital letter 'L'"),
        (bad(light_on={"phrases": ["turn on light 2"]}), "commands.light_on.phrases[0]", "digit '2'"),
        (bad(light_on={"phrases": ["lights on!"]}), "commands.light_on.phrases[0]", "character '!'"),
        (bad(light_on={"phrases": ["twenty-one lights"]}), "commands.light_on.phrases[0]", "'-'"),
        (bad(light_on={"phrases": ["turn (on|off the light"]}), "commands.light_on.phrases[0]", "never closed"),
        (bad(light_on={"phrases": ["turn on] the light"]}), "commands.light_on.phrases[0]", "unmatched ']'"),
        (bad(light_on={"phrases": ["turn (on] the light"]}), "commands.light_on.phrases[0]", "expected ')'"),
        (bad(light_on={"phrases": ["turn (on|) the light"]}), "commands.light_on.phrases[0]", "empty alternative"),
        (bad(light_on={"phrases": ["turn on [] light"]}), "commands.light_on.phrases[0]", "empty [...]"),
        (bad(light_on={"phrases": ["on | off"]}), "commands.light_on.phrases[0]", "'|' outside"),
        (bad(light_on={"phrases": ["[lights on]"]}), "commands.light_on.phrases[0]", "as nothing at all"),
        (bad(light_on={"phrases": ["   "]}), "commands.light_on.phrases[0]", "empty phrase"),
        # slots
        (bad(timer={"slots": None}), "commands.timer.phrases[0]", "{minutes}, which is not defined"),
        (bad(timer={"slots": {"minutes": "1-99", "hours": "1-9"}}), "commands.timer.slots.hours", "no phrase uses {hours}"),
        (bad(timer={"slots": {"minutes": "99-1"}}), "commands.timer.slots.minutes", "runs backwards"),
        (bad(timer={"slots": {"minutes": "1-1000"}}), "commands.timer.slots.minutes", "goes past 999"),
        (bad(timer={"slots": {"minutes": "lots"}}), "commands.timer.slots.minutes", "not a slot type"),
        (bad(timer={"slots": {"minutes": 5}}), "commands.timer.slots.minutes", "must be a range"),
        (bad(say_hi={"slots": {"name": []}}), "commands.say_hi.slots.name", "empty list"),
        (bad(say_hi={"slots": {"name": ["anna", "Bob"]}}), "commands.say_hi.slots.name[1]", "plain lowercase words"),
        (bad(say_hi={"slots": {"name": ["anna", "anna"]}}), "commands.say_hi.slots.name[1]", "listed twice"),
        (bad(say_hi={"slots": {"name": {"anna": 3}}}), "commands.say_hi.slots.name.anna", "non-empty string"),
        (bad(timer={"phrases": ["set a timer for {minutes:1-99} minutes", "{minutes:1-9} minute timer"],
                    "slots": None}), "commands.timer.phrases[1]", "give a slot one type"),
        (bad(timer={"phrases": ["set a timer for {minutes:many} minutes"], "slots": None}),
         "commands.timer.phrases[0]", "not a slot type"),
        (bad(timer={"phrases": ["set {minutes} and {minutes} minutes"]}), "commands.timer.phrases[0]", "appears twice"),
        (bad(timer={"phrases": ["set {Minutes} minutes"]}), "commands.timer.phrases[0]", "bad slot name"),
        (bad(timer={"phrases": ["set a timer for{minutes} minutes"]}), "commands.timer.phrases[0]", "separate word"),
        # action and options
        (bad(timer={"action": None}), "commands.timer.action", "missing"),
        (bad(timer={"action": "teleport"}), "commands.timer.action", "unknown action 'teleport'"),
        (bad(light_on={"colour": "red"}), "commands.light_on.colour", "unknown key"),
        (bad(light_on={"pin": None}), "commands.light_on.pin", "needs pin"),
        (bad(light_on={"pin": "22"}), "commands.light_on.pin", "whole number"),
        (bad(light_on={"pin": True}), "commands.light_on.pin", "whole number"),
        (bad(light_on={"pin": 40}), "commands.light_on.pin", "BCM GPIO number"),
        (bad(light_on={"set": "dim"}), "commands.light_on.set", "one of 'on', 'off', 'toggle', 'pulse'"),
        (bad(light_on={"pulse_s": 1.0}), "commands.light_on.pulse_s", 'only applies with set = "pulse"'),
        (bad(light_off={"phrases": ["lights off"], "action": "gpio", "pin": 22, "set": "off", "active_high": False}),
         "commands.light_off.active_high", "disagrees with commands.light_on"),
        (bad(say_hi={"argv": None}), "commands.say_hi.argv", "needs argv"),
        (bad(say_hi={"argv": "/usr/local/bin/hello"}), "commands.say_hi.argv", "must be a list"),
        (bad(say_hi={"argv": []}), "commands.say_hi.argv", "is empty"),
        (bad(say_hi={"argv": ["/usr/local/bin/hello", 5]}), "commands.say_hi.argv[1]", "must be a string"),
        (bad(say_hi={"argv": ["hello", "{name}"]}), "commands.say_hi.argv[0]", "full path"),
        (bad(say_hi={"argv": ["/bin/echo", "{nome}"]}), "commands.say_hi.argv[1]", "uses {nome}"),
        (bad(say_hi={"pass_transcript": "yes"}), "commands.say_hi.pass_transcript", "true or false"),
        (bad(say_hi={"timeout_s": 0}), "commands.say_hi.timeout_s", "from 0.1 to 600"),
        (bad(timer={"phrases": ["start the timer"], "slots": None, "reply": None}), "commands.timer.phrases[0]",
         "gives the timer no length"),
        (bad(timer={"slots": {"minutes": "0-99"}}), "commands.timer.slots.minutes", "zero"),
        # replies
        (bad(timer={"reply": "Okay, {mins} minutes."}), "commands.timer.reply", "uses {mins}"),
        (bad(timer={"reply": "Okay, {minutes:03d} minutes."}), "commands.timer.reply", "not a plain {name}"),
        (bad(timer={"reply": "Okay, {minutes minutes."}), "commands.timer.reply", "bad template"),
        (bad(timer={"reply": 5}), "commands.timer.reply", "must be a string"),
        (bad(timer={"phrases": ["set a timer for {minutes} minutes", "start a [{minutes} minute] timer"],
                    "action": "timer", "seconds": 300}), "commands.timer.reply", "phrases[1] can be said without it"),
        # ambiguity
        (bad(lamp={"phrases": ["lights on"], "action": "stop"}), "commands.light_on.phrases[1]", "and so can commands.lamp.phrases[0]"),
        (bad(lamp={"phrases": ["(switch|turn) on the light[s]"], "action": "stop"}), "commands.light_on.phrases[0]", "'turn on the light'"),
        (bad(pair={"phrases": ["add {a} {b}"], "slots": {"a": "0-999", "b": "0-999"}, "action": "stop"}),
         "commands.pair.phrases[0]", "two different slot values"),
    ],
)
def test_bad_input_names_the_key(raw, key, words):
    msg = error_for(raw)
    assert f"{WHERE}: {key}: " in msg, msg
    assert words in msg, msg


def test_not_a_table():
    msg = error_for(["light_on"])  # type: ignore[arg-type]
    assert "[commands] must be a table" in msg


def test_neighbouring_slots_with_a_word_between_are_fine():
    g = Grammar(parse_commands({"add": {"phrases": ["add {a} and {b}"], "slots": {"a": "1-99", "b": "1-99"}, "action": "stop"}}, WHERE))
    assert g.match("add twenty and one").slots == {"a": 20, "b": 1}
    assert g.match("add twenty one and five").slots == {"a": 21, "b": 5}


@pytest.mark.parametrize("action, options, reply", [
    ("run", {"argv": ["/bin/echo", "hi"]}, "{output}"),
    ("gpio", {"pin": 23, "set": "toggle"}, "The fan is {state}."),
    ("timer_cancel", {}, "{count} timer cancelled."),
])
def test_each_reply_field_docs_commands_md_names_is_accepted(action, options, reply):
    """docs/commands.md offers {output} for a run reply (and {state}, {count}): the check takes them."""
    cmds = parse_commands({"x": {"phrases": ["do the thing"], "action": action, "reply": reply, **options}}, "t")
    assert cmds[0].reply == reply


def test_a_reply_field_the_action_does_not_give_is_still_refused():
    with pytest.raises(ConfigError, match="output"):
        parse_commands({"x": {"phrases": ["do the thing"], "action": "time", "reply": "{output}"}}, "t")


def test_the_docs_way_to_look_a_word_up_in_cmudict_works_in_a_clone(repo, tmp_path):
    """docs/commands.md's lookup ran `python`, which on Debian is absent or lacks pocketsphinx (it is in
    the clone's .venv): the command printed nothing. Run it as written, in a clone-like folder whose
    .venv is this one, with only the system's programs on PATH."""
    import re
    import subprocess
    import sys

    doc = (repo / "docs" / "commands.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", doc, re.S) if "^zorro " in b]
    assert len(blocks) == 1, "docs/commands.md has no ```sh block with the cmudict lookup"
    (tmp_path / ".venv").symlink_to(sys.prefix)
    r = subprocess.run(["bash", "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.stdout.split("\n")[0] == "zorro Z AO R OW", (r.stdout, r.stderr)
