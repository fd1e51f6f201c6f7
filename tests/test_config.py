"""Config: defaults, one-line errors naming file and key, exit code 78, shipped file documents all."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tallylight import config
from tallylight.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "t.toml"
    p.write_text(text)
    return p


def test_shipped_config_loads_and_equals_defaults(repo):
    cfg = config.load(repo / "config" / "tallylight.toml")
    for section in config.section_fields():
        assert getattr(cfg, section) == getattr(config.Config(), section), section


def test_shipped_config_documents_every_key_with_a_comment(repo):
    """Each key sits under a comment (keys in a group, like red/green/blue_pin, may share one)."""
    lines = (repo / "config" / "tallylight.toml").read_text().splitlines()
    section, seen = None, {}
    for n, line in enumerate(lines):
        if m := re.match(r"\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"(\w+)\s*=", line):
            j = n - 1
            while j >= 0 and re.match(r"\w+\s*=", lines[j]):
                j -= 1
            seen[(section, m.group(1))] = j >= 0 and lines[j].lstrip().startswith("#")
    for section, keys in config.section_fields().items():
        for key in keys:
            assert (section, key) in seen, f"{section}.{key} missing from config/tallylight.toml"
            assert seen[(section, key)], f"{section}.{key} has no comment above it"


@pytest.mark.parametrize("text, words", [
    ("[audio]\nblock_ms = 5\n", ["audio.block_ms", "10 to 20", "5"]),
    # Closed within 20 ms of the switch edge needs blocks of at most 20 ms (issue 13).
    ("[audio]\nblock_ms = 100\n", ["audio.block_ms must be 10 to 20", "20 ms promise", "not 100"]),
    ("[audio]\nblock_ms = 21\n", ["audio.block_ms must be 10 to 20"]),
    ("[audio]\nbogus = 1\n", ["unknown key audio.bogus", "block_ms"]),
    ("[nosuch]\n", ["unknown section [nosuch]"]),
    # A key under the wrong table names the table it belongs to (issue 17).
    ("[audio]\nblock_ms = 20\nkind = \"pwmled\"\n",
     ["`kind` is not a key of [audio]; it is a key of [indicator]: move it under [indicator]"]),
    ("[audio]\nindicator.kind = \"pwmled\"\n",
     ["`indicator.kind` is not a key of [audio] (a dotted key belongs to the table above it): "
      "write `kind = \"pwmled\"` under [indicator]"]),
    ("kind = \"pwmled\"\n[audio]\nblock_ms = 20\n",
     ["`kind` is above the first [table] line, in no table; it is a key of [indicator]: move it under [indicator]"]),
    ("[reply]\nengine = \"vosk\"\n",
     ["`engine` is not a key of [reply]; it is a key of [wake] and [recognizer]: move it under the one you meant"]),
    ("[wake]\nengine = \"snowboy\"\n", ["wake.engine", "'microwakeword'"]),
    ("[mute]\npin = true\n", ["mute.pin", "an integer"]),
    ("[mute]\npin = 40\n", ["mute.pin", "BCM GPIO number"]),
    ("[capture]\nring_s = 3\n", ["capture.ring_s", "0.1 to 2"]),
    ("[capture]\nring_s = 0.5\npreroll_s = 1.0\n", ["capture.preroll_s", "ring_s"]),
    ("[indicator]\nkind = \"rgbled\"\n", ["red_pin"]),
    # A glow as bright as capturing: the light would lie (issue 13).
    ("[indicator]\nkind = \"pwmled\"\nlistening_glow = 1.0\n",
     ["indicator.kind = 'pwmled'", "LISTENING", "CAPTURING", "alike", "listening_glow to 0.25 or less"]),
    ("[indicator]\nlistening_glow = 0.5\n", ["'auto'", "LISTENING", "CAPTURING", "listening_glow to 0.25 or less"]),
    ("[audio]\ndevice = 1.5\n", ["audio.device", "a string or an integer"]),
    ("audio = 3\n", ["[audio] must be a table"]),
    ("[audio\n", ["not valid TOML"]),
    ("\ufeff[audio]\nblock_ms = 20\n", ["byte-order mark", "without BOM"]),
    ("[audio]\nblock_ms = 20\nblock_ms = 30\n", ["'block_ms = 30' sets a key or table a second time"]),
    ("[audio]\n[audio]\n", ["'[audio]' sets a key or table a second time"]),
    ("[daemon]\nstate_dir = \"~nosuchuser-tl/x\"\n", ["daemon.state_dir", "cannot expand '~nosuchuser-tl'", "full path"]),
    ("[recognizer]\nvosk_model = \"~nosuchuser-tl\"\n", ["recognizer.vosk_model", "cannot expand"]),
])
def test_bad_values_name_file_and_key(tmp_path, text, words):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        config.load(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg
    for w in words:
        assert w in msg


def test_int_accepted_for_float_keys(tmp_path):
    cfg = config.load(write(tmp_path, "[wake]\nsensitivity = 1\n"))
    assert cfg.wake.sensitivity == 1.0 and isinstance(cfg.wake.sensitivity, float)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="is a folder"):
        config.load(tmp_path)
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe[audio]")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)


@pytest.mark.parametrize("verb, text, key", [
    ("check", "[audio]\nblock_ms = \"fast\"\n", "audio.block_ms"),
    ("run", "[audio]\nblock_ms = \"fast\"\n", "audio.block_ms"),
    ("ledger", "[audio]\nblock_ms = \"fast\"\n", "audio.block_ms"),
    ("devices", "[audio]\nblock_ms = \"fast\"\n", "audio.block_ms"),
    ("run", "[indicator]\nkind = \"pwmled\"\nlistening_glow = 1.0\n", "indicator.listening_glow"),
    ("check", "[indicator]\nkind = \"pwmled\"\nlistening_glow = 1.0\n", "indicator.listening_glow"),
])
def test_cli_exits_78_with_one_line_and_no_traceback(tmp_path, verb, text, key):
    p = write(tmp_path, text)
    r = subprocess.run([sys.executable, "-m", "tallylight", verb, "--config", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 78
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0] and str(p) in lines[0]


@pytest.mark.parametrize("appended, words", [
    ('kind = "pwmled"\n', "`kind` is not a key of [commands.mute]; it is a key of [indicator]: move it under [indicator]"),
    ('indicator.kind = "pwmled"\n', "`indicator.kind` is not a key of [commands.mute] (a dotted key belongs to the "
                                    'table above it): write `kind = "pwmled"` under [indicator]'),
])
def test_a_key_appended_to_the_shipped_config_names_its_table(tmp_path, appended, words):
    """A line added at the end of the shipped file lands in its last table, [commands.mute]."""
    shipped = Path(__file__).resolve().parents[1] / "config" / "tallylight.toml"
    p = tmp_path / "tallylight.toml"
    p.write_text(shipped.read_text() + appended)
    r = subprocess.run([sys.executable, "-m", "tallylight", "check", "--config", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"tallylight: {p}: {words}"]


def test_state_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "sd"))
    assert config.Config().state_dir == tmp_path / "sd"
    cfg = config.from_dict({"daemon": {"state_dir": str(tmp_path / "x")}})
    assert cfg.state_dir == tmp_path / "x"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert config.Config().state_dir == tmp_path / "xdg" / "tallylight"


def test_check_names_a_state_dir_that_is_a_file_in_one_line(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    p = write(tmp_path, f'[daemon]\nstate_dir = "{blocker}"\n[gpio]\npin_factory = "mock"\n[indicator]\nkind = "terminal"\n')
    r = subprocess.run([sys.executable, "-m", "tallylight", "check", "--config", str(p)],
                       capture_output=True, text=True, timeout=120)
    line = next(x for x in (r.stdout + r.stderr).splitlines() if "state directory" in x)
    assert "is a file, not a folder (set daemon.state_dir" in line and "Errno" not in line


def test_models_download_takes_config_after_the_name(tmp_path):
    """`tallylight models download NAME --config F`, as users type it, not only before the action."""
    p = write(tmp_path, "[audio]\nblock_ms = 20\n")
    r = subprocess.run([sys.executable, "-m", "tallylight", "models", "download", "no-such-model", "--config", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert "unrecognized arguments" not in r.stderr
    assert r.returncode != 0 and "unknown model 'no-such-model'" in r.stderr
    from tallylight.cli import _parser

    for argv, config_file in ((["models", "--config", "A", "download", "x"], "A"),
                              (["models", "download", "x", "--config", "B"], "B")):
        assert str(_parser().parse_args(argv).config) == config_file


def test_relative_paths_are_taken_from_the_config_files_folder(tmp_path, monkeypatch):
    """Not from the working directory (systemd starts tallylight in /): issue 13."""
    folder = tmp_path / "etc"
    folder.mkdir()
    p = folder / "t.toml"
    p.write_text('[daemon]\nstate_dir = "state"\n[debug]\nrecord_dir = "../rec"\n'
                 '[recognizer]\nvosk_model = "models/vosk"\n'
                 '[wake]\nmodel = "mine.json"\nporcupine_access_key_file = "pv.key"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = config.load(Path("..") / "etc" / "t.toml")  # a relative --config too
    assert cfg.state_dir == folder / "state"
    assert Path(cfg.debug.record_dir) == tmp_path / "rec"
    assert Path(cfg.recognizer.vosk_model) == folder / "models" / "vosk"
    assert Path(cfg.wake.model) == folder / "mine.json"
    assert Path(cfg.wake.porcupine_access_key_file) == folder / "pv.key"
    assert [key for key, _, _ in cfg.relative_paths] == [
        "daemon.state_dir", "debug.record_dir", "recognizer.vosk_model", "wake.model", "wake.porcupine_access_key_file"]
    assert ("daemon.state_dir", "state", str(folder / "state")) in cfg.relative_paths


def test_full_paths_and_names_stay_as_they_are(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    p = write(tmp_path, f'[daemon]\nstate_dir = "~/tl"\n[debug]\nrecord_dir = "{tmp_path / "rec"}"\n'
                        '[wake]\nmodel = "hey_jarvis"\n')
    cfg = config.load(p)
    assert cfg.state_dir == tmp_path / "home" / "tl"
    assert cfg.debug.record_dir == str(tmp_path / "rec") and cfg.wake.model == "hey_jarvis"
    assert cfg.relative_paths == ()


def test_a_relative_path_without_a_config_file_is_refused():
    with pytest.raises(ConfigError) as e:
        config.from_dict({"daemon": {"state_dir": "state"}})
    assert str(e.value) == ("<config>: daemon.state_dir = 'state' is a relative path but there is no config file "
                            "to take it from: give a full path")


def test_cli_logs_and_check_shows_the_resolved_state_dir(tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir()
    p = folder / "t.toml"
    p.write_text('[daemon]\nstate_dir = "state"\nlog_level = "info"\n[gpio]\npin_factory = "mock"\n'
                 '[indicator]\nkind = "terminal"\n')
    r = subprocess.run([sys.executable, "-m", "tallylight", "ledger", "--config", str(p)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (f"INFO tallylight.cli: daemon.state_dir = 'state' is relative to the config file's folder: "
            f"using {folder / 'state'}") in r.stderr.splitlines()
    assert f"no ledger at {folder / 'state' / 'ledger.jsonl'}" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tallylight", "check", "--config", str(p)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = r.stdout.splitlines()
    note = f"daemon.state_dir = 'state' is relative to the config file's folder: {folder / 'state'}"
    assert f"  ok       config: {note}" in lines
    assert any(line.startswith(f"  ok       state directory: {folder / 'state'}") for line in lines)


# -- `check`'s GPIO line says what `run` will do, by run's own rule (issue 17: it said "reads muted"
# on simulated pins while `run` listened).
def _gpio_line(tmp_path, **mute):
    from tallylight.check import _check_gpio

    cfg = config.from_dict({"gpio": {"pin_factory": "mock"}, "mute": mute, "indicator": {"kind": "terminal"},
                       "daemon": {"state_dir": str(tmp_path / "state")}})
    return cfg, _check_gpio(cfg)


def test_check_on_simulated_pins_says_there_is_no_control_and_that_run_listens(tmp_path):
    _, line = _gpio_line(tmp_path, control="button")
    assert "simulated pins: no mute control" in line and 'mute.control = "key"' in line
    assert "run starts listening (simulated pins have no mute control to press)" in line
    assert "reads" not in line


def test_check_with_a_key_names_it_and_follows_the_ledger_as_run_does(tmp_path):
    from tallylight.ledger import Ledger
    from tallylight.restart import CLEAN_STOP

    cfg, line = _gpio_line(tmp_path, control="key", key="space", at_start="last")
    assert "mute control: the space key on the terminal" in line
    assert "run starts muted (the ledger records no earlier run)" in line
    cfg.state_dir.mkdir(parents=True)
    led = Ledger(cfg.state_dir / "ledger.jsonl")
    led.append("start", version="test", pid=1)
    led.append("stop", reason=CLEAN_STOP, state_before="listening")
    led.close()
    assert "run starts listening (listening when last stopped cleanly)" in _gpio_line(tmp_path, control="key", key="space",
                                                                                       at_start="last")[1]


def test_check_beside_a_running_daemon_says_it_runs_not_how_it_would_start(tmp_path):
    """While `run` holds the state directory, its ledger has no stop entry yet: check said "the last
    stop was not clean (a crash or a power cut)" about a daemon that was running fine."""
    import os

    from tallylight.ledger import Ledger
    from tallylight.statedir import StateDirLock, running_pid

    cfg, _ = _gpio_line(tmp_path, control="key", key="space", at_start="last")
    cfg.state_dir.mkdir(parents=True)
    led = Ledger(cfg.state_dir / "ledger.jsonl")
    led.append("start", version="test", pid=os.getpid())
    led.append("state", state="listening", reason="mute control")
    led.close()
    lock = StateDirLock(cfg.state_dir)
    lock.acquire()
    try:
        line = _gpio_line(tmp_path, control="key", key="space", at_start="last")[1]
        assert f"`tallylight run` is running now (pid {os.getpid()})" in line, line
        assert "not clean" not in line
        second = StateDirLock(cfg.state_dir)  # check took nothing: the lock is still the daemon's alone
        with pytest.raises(Exception, match="already using"):
            second.acquire()
    finally:
        lock.release()
    assert running_pid(cfg.state_dir) is None
    assert "run starts muted (the last stop was not clean" in _gpio_line(tmp_path, control="key", key="space",
                                                                          at_start="last")[1]


@pytest.mark.parametrize("mode, says", [("text", "text mode: only the words"), ("audio", "AUDIO mode: after the wake word")])
def test_check_says_what_leaves_the_device_for_each_home_assistant_mode(tmp_path, mode, says):
    import os

    from tallylight.check import _check_home_assistant

    off = config.from_dict({})
    assert _check_home_assistant(off).startswith("off (home_assistant.enabled = false)")
    cfg = config.from_dict({"home_assistant": {"enabled": True, "mode": mode, "uplink_user": str(os.getuid())}})
    assert _check_home_assistant(cfg).startswith(says)


def test_home_assistant_mode_is_text_or_audio(tmp_path):
    with pytest.raises(ConfigError, match="home_assistant.mode"):
        config.from_dict({"home_assistant": {"mode": "video"}})


def test_check_notes_which_built_in_commands_a_config_of_its_own_commands_leaves_out(repo, tmp_path):
    """One [commands.X] table added to config/laptop.toml replaced all nine built-in commands, "stop"
    and "stop listening" among them, and check said only "with 1 commands"."""
    import io

    from tallylight.check import run_checks

    laptop = (repo / "config" / "laptop.toml").read_text()
    mine = tmp_path / "mine.toml"
    mine.write_text(laptop + f'\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n[reply]\nenabled = false\nsounds = false\n'
                    '\n[commands.hello]\nphrases = ["what time is it now"]\naction = "time"\n')
    out = io.StringIO()
    run_checks(config.load(mine), out)
    lines = out.getvalue().splitlines()
    note = [ln for ln in lines if ln.startswith("  note     commands:")]
    assert len(note) == 1, lines
    assert "replace the built-in commands" in note[0] and "stop, mute" in note[0] and "config/tallylight.toml" in note[0]
    assert any("with 1 command, all" in ln for ln in lines), lines
    # The shipped config has all the built-in commands: nothing to say.
    shipped = tmp_path / "shipped.toml"
    text = (repo / "config" / "tallylight.toml").read_text()
    shipped.write_text(text.replace('pin_factory = "auto"', 'pin_factory = "mock"', 1).replace(
        'state_dir = ""', f'state_dir = "{tmp_path / "state"}"', 1))
    out = io.StringIO()
    run_checks(config.load(shipped), out)
    assert "note     commands:" not in out.getvalue(), out.getvalue()
