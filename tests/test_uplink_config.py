"""`tallylight uplink` takes the daemon's socket from the config file the daemon reads (home_assistant.socket):
one setting, so the two can never disagree. A bad value is one line naming the fix, before anything starts."""

import subprocess
import sys
from pathlib import Path

import pytest

from tallylight import cli
from tallylight import config as C
from tallylight.errors import ConfigError

EXE = Path(sys.executable).parent / "tallylight"


def uplink(cfg: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "uplink", "--config", str(cfg), "--plaintext", "--host", "127.0.0.1",
                           "--port", "0", "--no-mdns", *extra], capture_output=True, text=True, timeout=60)


def test_a_relative_socket_is_taken_from_the_config_files_folder(tmp_path):
    cfg_file = tmp_path / "tallylight.toml"
    cfg_file.write_text('[home_assistant]\nsocket = "run/uplink.sock"\n')
    cfg = C.load(cfg_file)
    assert cfg.home_assistant.socket == str(tmp_path / "run" / "uplink.sock")
    assert ("home_assistant.socket", "run/uplink.sock", str(tmp_path / "run" / "uplink.sock")) in cfg.relative_paths


@pytest.mark.parametrize("value, words", [
    ("", "the path of a socket file"),
    ("/run/tallylight/", "the path of a socket file"),
    (" /run/x.sock", "the path of a socket file"),
    ("/run/" + "x" * 120 + ".sock", "at most 107 bytes"),
])
def test_a_bad_socket_path_is_one_line_naming_the_fix(value, words):
    with pytest.raises(ConfigError) as e:
        C.from_dict({"home_assistant": {"socket": value}})
    assert "home_assistant.socket" in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_a_relative_socket_too_long_once_made_full_is_refused(tmp_path):
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    cfg_file = deep / "tallylight.toml"
    cfg_file.write_text(f'[home_assistant]\nsocket = "{"s" * 60}.sock"\n')
    with pytest.raises(ConfigError, match="longer than a unix socket's 107 bytes: give a shorter full path"):
        C.load(cfg_file)


def test_the_uplink_has_no_socket_option_of_its_own():
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["uplink", "--socket", "/tmp/other.sock"])


def test_the_uplink_process_refuses_a_bad_socket_in_the_config_with_one_line(tmp_path):
    cfg_file = tmp_path / "tallylight.toml"
    cfg_file.write_text('[home_assistant]\nenabled = true\nsocket = "/run/tallylight/"\n')
    r = uplink(cfg_file)
    assert r.returncode == 78, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "home_assistant.socket" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_the_uplink_says_when_the_config_leaves_the_daemons_socket_off(tmp_path):
    # enabled = false: the daemon opens no socket, so the uplink would wait for ever: it says so at start.
    cfg_file = tmp_path / "tallylight.toml"
    cfg_file.write_text(f'[home_assistant]\nsocket = "{tmp_path / "u.sock"}"\n')
    proc = subprocess.Popen([str(EXE), "uplink", "--config", str(cfg_file), "--plaintext", "--host", "127.0.0.1",
                             "--port", "0", "--no-mdns"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"daemon socket {tmp_path / 'u.sock'}" in line, line
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "home_assistant.enabled is false" in err and "set it to true" in err, err
    assert "the daemon is not listening" in err  # the bridge's one warning, naming what to check
    assert "Traceback" not in err, err
