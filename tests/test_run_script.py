"""scripts/run as owners start it: the process it becomes has the arguments they gave, and one
--config, the one in use (`ps` once showed `--config` twice when the owner passed their own)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from testkit.audio_rigs import no_alsa_devices

REPO = Path(__file__).resolve().parents[1]


def _argv_of_run(args: list[str], env: dict[str, str]) -> list[str]:
    """Start the real scripts/run and read, from /proc, the argv of the `tallylight run` it execs into."""
    proc = subprocess.Popen([str(REPO / "scripts" / "run"), *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # a first run may set up the venv
        while True:
            try:
                argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1]
            except OSError:
                argv = []
            argv = [a.decode() for a in argv]
            if len(argv) > 2 and argv[1].endswith("/bin/tallylight"):
                return argv[2:]
            assert proc.poll() is None, f"scripts/run ended ({proc.returncode}): {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "scripts/run did not start tallylight"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.fixture
def env(tmp_path):
    with no_alsa_devices(tmp_path, apply=False) as alsa_env:
        yield dict(alsa_env, STATE_DIRECTORY=str(tmp_path / "state"))


@pytest.fixture
def conf(tmp_path) -> Path:
    p = tmp_path / "mine.toml"
    p.write_text(f'[gpio]\npin_factory = "mock"\n[indicator]\nkind = "terminal"\n'
                 f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n')
    return p


@pytest.mark.parametrize("given", [
    ["--config", "{conf}"],
    ["--config={conf}"],
    ["-v", "--conf", "{conf}"],  # argparse takes an unambiguous prefix
])
def test_the_owners_config_is_the_only_one(env, conf, given):
    args = [a.format(conf=conf) for a in given]
    assert _argv_of_run(args, env) == ["run", *args]


def test_without_one_the_default_config_is_given_once(env):
    default = Path("/etc/tallylight/tallylight.toml")
    if not default.exists():
        default = REPO / "config" / "tallylight.toml"
    assert _argv_of_run(["-v"], env) == ["run", "--config", str(default), "-v"]
