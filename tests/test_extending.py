"""docs/extending.md's examples, run as the page has them: its Python code registers an action, a
wake engine and a recognizer, its TOML uses them, and the command is heard and carried out (the
engines through `tallylight listen` on a spoken clip)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from tallylight import actions, wake_engines
from tallylight import config as C
from tallylight.actions import ActionRunner
from tallylight.config import ActionsConfig, WakeConfig
from tallylight.ears import make_wake_detector
from tallylight.errors import ConfigError, EngineError
from tallylight.speech import recognizers
from tallylight.speech.commands import parse_commands
from tallylight.speech.grammar import Grammar
from tallylight.wake import microwakeword_files

ROLLED = re.compile(r"^You rolled a (one|two|three|four|five|six)\.$")


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def section(text: str, title: str) -> str:
    """The page's `## title` section, up to the next `## ` heading."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def run_page_code(python: str) -> None:
    exec(compile(python, "docs/extending.md", "exec"), {})  # noqa: S102 - our own page, run as written


@pytest.fixture()
def page(repo):
    # The page registers its action; the registry (one dict, imported by name elsewhere) is put back
    # as it was afterwards, in place.
    saved = dict(actions.ACTIONS)
    text = section((repo / "docs" / "extending.md").read_text(encoding="utf-8"), "Actions")
    (python,) = code_blocks(text, "python")
    (toml,) = code_blocks(text, "toml")
    try:
        run_page_code(python)
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


# ------------------------------------------------------------------------- wake engines, recognizers
@pytest.fixture()
def engines_page(repo):
    """The page's wake engine and recognizer registered; both registries put back afterwards, in place."""
    saved = dict(wake_engines.WAKE_ENGINES), dict(recognizers.RECOGNIZERS)
    text = (repo / "docs" / "extending.md").read_text(encoding="utf-8")
    pages = {}
    try:
        for title in ("Wake engines", "Recognizers"):
            part = section(text, title)
            (python,) = code_blocks(part, "python")
            (toml,) = code_blocks(part, "toml")
            run_page_code(python)
            pages[title] = (part, toml, python)
        yield pages
    finally:
        for registry, before in zip((wake_engines.WAKE_ENGINES, recognizers.RECOGNIZERS), saved, strict=True):
            registry.clear()
            registry.update(before)


def _own_model(folder):
    """pymicro-wakeword's okay_nabu model copied to `folder` as if it were the owner's hey_tally."""
    models = microwakeword_files().models_dir
    folder.mkdir()
    shutil.copy(models / "okay_nabu.tflite", folder / "okay_nabu.tflite")  # the .json names it
    shutil.copy(models / "okay_nabu.json", folder / "hey_tally.json")


def listen(cfg, clip, page_code) -> tuple[list[dict], str]:
    """`tallylight listen --json` in a process that first runs the page's code, as a module of the
    owner's would be imported: the JSON events, and what was logged."""
    module = cfg.parent / "extension.py"
    module.write_text(page_code, encoding="utf-8")
    start = f"import runpy, sys; runpy.run_path({str(module)!r}); from tallylight import cli; sys.exit(cli.main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", start, "listen", str(clip), "--json", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_the_example_recognizer_hears_and_times_a_command_through_tallylight_listen(engines_page, tmp_path, synth):
    cfg = tmp_path / "tallylight.toml"
    cfg.write_text(engines_page["Recognizers"][1] + "\n[reply]\nenabled = false\n", encoding="utf-8")
    clip = synth("okay nabu, what time is it", lead_s=1.0, tail_s=1.5)
    events, log = listen(cfg, clip, engines_page["Recognizers"][2])
    (capture,) = [e for e in events if e["event"] == "capture"]
    assert capture["handed_to"] == "timed pocketsphinx", capture
    assert [e["name"] for e in events if e["event"] == "intent"] == ["time"], events
    # The transcript leaves out the wake phrase that the pre-roll holds; the recognizer's own words have it.
    (heard,) = [e["text"] for e in events if e["event"] == "transcript"]
    timed = [line for line in log.splitlines() if "tallylight.timed" in line]
    assert len(timed) == 1 and re.fullmatch(rf"INFO tallylight.timed: pocketsphinx took \d+ ms to decide on "
                                            rf"'(okay nabu )?{heard}'", timed[0]), log


def test_the_example_wake_engine_wakes_through_tallylight_listen_as_the_builtin_does(engines_page, tmp_path, synth):
    # The owner's model file: pymicro-wakeword's own okay_nabu, copied, so the builtin engine can run
    # the same file and the two can be compared.
    _own_model(tmp_path / "models")
    clip = synth("okay nabu, what time is it", lead_s=1.0, tail_s=1.5)
    runs = {}
    for engine in ("microwakeword-public", "microwakeword"):
        toml = engines_page["Wake engines"][1].replace('engine = "microwakeword-public"', f'engine = "{engine}"')
        cfg = tmp_path / f"{engine}.toml"
        cfg.write_text(toml + '\n[recognizer]\nengine = "pocketsphinx"\n[reply]\nenabled = false\n', encoding="utf-8")
        runs[engine], _ = listen(cfg, clip, engines_page["Wake engines"][2])
    wakes = {engine: [e for e in events if e["event"] == "wake"] for engine, events in runs.items()}
    (own,), (builtin,) = wakes["microwakeword-public"], wakes["microwakeword"]
    assert (own["word"], own["engine"]) == ("okay nabu", "microwakeword-public")
    assert abs(own["t"] - builtin["t"]) <= 0.1 and abs(own["score"] - builtin["score"]) < 0.05, (own, builtin)

    def after_the_wake(events):  # what the capture made of it: the same audio, so the same
        return [e for e in events if e["event"] in ("capture", "transcript", "intent", "no_match")]

    assert after_the_wake(runs["microwakeword-public"]) == after_the_wake(runs["microwakeword"])
    assert any(e["event"] == "capture" for e in runs["microwakeword"])


def test_the_example_wake_engines_own_check_is_the_line_the_page_shows(engines_page):
    part = engines_page["Wake engines"][0]
    (line,) = re.findall(r"^`(wake\.model: .*)`\.$", part, flags=re.M)
    with pytest.raises(ConfigError) as e:
        C.from_dict({"wake": {"engine": "microwakeword-public", "model": "okay_nabu"}}, "x.toml")
    assert str(e.value) == f"x.toml: {line}"


def test_the_config_offers_what_is_registered(engines_page):
    with pytest.raises(ConfigError, match=r"wake\.engine must be one of 'microwakeword', 'openwakeword', "
                                          r"'porcupine', 'microwakeword-public', not 'x'"):
        C.from_dict({"wake": {"engine": "x"}}, "x.toml")
    with pytest.raises(ConfigError, match=r"recognizer\.engine must be one of 'auto', 'vosk', 'pocketsphinx', "
                                          r"'timed-pocketsphinx', 'both', not 'x'"):
        C.from_dict({"recognizer": {"engine": "x"}}, "x.toml")


def test_without_the_registration_the_config_refuses_the_names(tmp_path):
    with pytest.raises(ConfigError, match=r"wake\.engine must be one of .*, not 'microwakeword-public'"):
        C.from_dict({"wake": {"engine": "microwakeword-public", "model": "/m/hey_tally.json"}}, "x.toml")
    with pytest.raises(ConfigError, match=r"recognizer\.engine must be one of .*, not 'timed-pocketsphinx'"):
        C.from_dict({"recognizer": {"engine": "timed-pocketsphinx"}}, "x.toml")


def test_an_engine_whose_library_is_missing_is_one_line_naming_the_fix(engines_page):
    spec = wake_engines.WAKE_ENGINES["microwakeword-public"]
    wake_engines.register_wake_engine(dataclasses.replace(
        spec, name="needs-more", needs=("tallylight_no_such_library",), install="pip install tallylight-no-such-library"))
    with pytest.raises(EngineError) as e:
        make_wake_detector(WakeConfig(engine="needs-more", model="/m/x.json"))
    assert str(e.value) == ("wake.engine = 'needs-more' needs the tallylight_no_such_library module, which cannot be "
                            "used here (ModuleNotFoundError: No module named 'tallylight_no_such_library'): "
                            "pip install tallylight-no-such-library")


def test_an_engine_name_is_registered_once():
    with pytest.raises(ValueError, match="already a wake engine 'microwakeword'"):
        wake_engines.register_wake_engine(wake_engines.WAKE_ENGINES["microwakeword"])
    with pytest.raises(ValueError, match="already a recognizer 'vosk'"):
        recognizers.register_recognizer(recognizers.RECOGNIZERS["vosk"])
    with pytest.raises(ValueError, match="already a recognizer 'both'"):
        recognizers.register_recognizer(dataclasses.replace(recognizers.RECOGNIZERS["vosk"], name="both"))


def test_check_notes_an_engine_key_that_the_chosen_engine_does_not_read(engines_page):
    from tallylight.check import unread_options

    cfg = C.from_dict({"wake": {"engine": "openwakeword", "porcupine_access_key_file": "/k", "lowered_view": 0.7},
                       "recognizer": {"engine": "timed-pocketsphinx", "vosk_model": "/m"}}, "x.toml")
    assert unread_options(cfg) == [
        "wake.lowered_view is set, but wake.engine = 'openwakeword' does not read it (only microwakeword does)",
        "wake.porcupine_access_key_file is set, but wake.engine = 'openwakeword' does not read it (only porcupine does)",
        "recognizer.vosk_model is set, but recognizer.engine = 'timed-pocketsphinx' does not read it (only vosk does)",
    ]
    # The page's recognizer reads what pocketsphinx reads; "auto" reads what vosk and pocketsphinx read.
    assert unread_options(C.from_dict({"recognizer": {"engine": "timed-pocketsphinx",
                                                      "pronunciations": {"nabu": "N AA B UW"}}}, "x.toml")) == []
    assert unread_options(C.from_dict({"recognizer": {"vosk_model": "/m"}}, "x.toml")) == []


def test_a_recognizers_own_check_refuses_the_config_in_one_line(engines_page):
    recognizers.register_recognizer(dataclasses.replace(
        recognizers.RECOGNIZERS["timed-pocketsphinx"], name="needs-words",
        check=lambda cfg: None if cfg.pronunciations else "recognizer.pronunciations: give at least one word"))
    with pytest.raises(ConfigError) as e:
        C.from_dict({"recognizer": {"engine": "needs-words"}}, "x.toml")
    assert str(e.value) == "x.toml: recognizer.pronunciations: give at least one word"
    cfg = C.from_dict({"recognizer": {"engine": "needs-words", "pronunciations": {"nabu": "N AA B UW"}}}, "x.toml")
    assert cfg.recognizer.engine == "needs-words"
