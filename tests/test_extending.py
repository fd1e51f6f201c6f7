"""docs/extending.md's example action, run as the page has it: its Python code registers the action,
its TOML command uses it, and the command is heard and carried out."""

from __future__ import annotations

import re
import tomllib

import pytest

from tallylight import actions
from tallylight.actions import ActionRunner
from tallylight.config import ActionsConfig
from tallylight.errors import ConfigError
from tallylight.speech.commands import parse_commands
from tallylight.speech.grammar import Grammar

ROLLED = re.compile(r"^You rolled a (one|two|three|four|five|six)\.$")


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


@pytest.fixture()
def page(repo):
    # The page registers its action; the registry (one dict, imported by name elsewhere) is put back
    # as it was afterwards, in place.
    saved = dict(actions.ACTIONS)
    text = (repo / "docs" / "extending.md").read_text(encoding="utf-8")
    (python,) = code_blocks(text, "python")
    (toml,) = code_blocks(text, "toml")
    try:
        exec(compile(python, "docs/extending.md", "exec"), {})  # noqa: S102 - our own page, run as written
        yield tomllib.loads(toml)
    finally:
        actions.ACTIONS.clear()
        actions.ACTIONS.update(saved)


def test_the_example_action_is_heard_and_carried_out(page):
    commands = parse_commands(page["commands"], "example.toml")
    assert commands[0].action == "dice" and commands[0].options == {"sides": 6}
    match = Grammar(commands).match("roll the dice")
    runner = ActionRunner(ActionsConfig())
    try:
        for _ in range(20):
            result = runner.perform(match)
            assert result.ok and ROLLED.match(result.reply), result
    finally:
        runner.close()


def test_the_example_actions_own_checks_name_the_key(page):
    table = page["commands"]
    with pytest.raises(ConfigError, match=r"^x\.toml: commands\.roll\.sides: a die with one side"):
        parse_commands({"roll": {**table["roll"], "sides": 1}}, "x.toml")
    with pytest.raises(ConfigError, match=r"commands\.roll\.sides: must be a number from 1 to 100, not 0"):
        parse_commands({"roll": {**table["roll"], "sides": 0}}, "x.toml")
    with pytest.raises(ConfigError, match=r"commands\.roll\.reply: uses \{colour\}"):
        parse_commands({"roll": {**table["roll"], "reply": "A {colour} die."}}, "x.toml")
    unknown = {"roll": {**table["roll"], "action": "dize"}}
    with pytest.raises(ConfigError, match=r"unknown action 'dize' \(one of time, .*, run, dice\)"):
        parse_commands(unknown, "x.toml")


def test_every_action_is_in_the_users_guide(repo):
    guide = (repo / "docs" / "commands.md").read_text(encoding="utf-8")
    actions_table = guide[guide.index("## Actions"):]
    missing = [name for name in actions.ACTIONS if f"`{name}`" not in actions_table]
    assert not missing, f"docs/commands.md's Actions table does not describe: {', '.join(missing)}"


def test_an_action_name_is_registered_once():
    with pytest.raises(ValueError, match="already an action 'timer'"):
        actions.register_action(actions.ACTIONS["timer"])
