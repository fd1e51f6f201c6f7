"""The daemon <-> uplink socket across restarts of either end, with the real daemon (mock pins, a paced silent
mic) and the real `tallylight uplink` process, and Home Assistant's client library watching the states.

- the uplink killed (SIGKILL, no goodbye): the daemon's loop goes on reading blocks, its gate untouched, and
  it takes the new uplink when one starts;
- the daemon stopped and started again: the uplink reconnects by itself, and Home Assistant sees the states
  unknown while the daemon is away and right again after.
"""

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from aioesphomeapi import APIClient
from test_uplink_daemon import Rig, until

from tallylight.gate import State

EXE = Path(sys.executable).parent / "tallylight"
BACK_WITHIN_S = 10.0


@pytest.fixture
def short_dir():
    d = Path(tempfile.mkdtemp(prefix="tl-", dir="/tmp"))  # a unix socket's path: at most 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


class UplinkProcess:
    def __init__(self, folder: Path, sock: Path):
        self.cfg = folder / "uplink.toml"
        self.cfg.write_text(f'[home_assistant]\nenabled = true\nsocket = "{sock}"\n')
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, port: int = 0) -> None:
        self.proc = subprocess.Popen([str(EXE), "uplink", "--config", str(self.cfg), "--plaintext", "--host", "127.0.0.1",
                                      "--port", str(port), "--no-mdns", "--name", "tallylight-restart"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"on 127\.0\.0\.1:(\d+),", line)
        assert m, (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.port = int(m.group(1))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        return err


def test_the_uplink_killed_and_restarted_leaves_the_daemon_untouched_and_is_taken_back(tmp_path, short_dir):
    sock = short_dir / "uplink.sock"
    up = UplinkProcess(tmp_path, sock)
    with Rig(tmp_path / "state", sock, muted=False) as rig:
        link = rig.daemon.uplink.link
        up.start()
        until(lambda: link.connected, BACK_WITHIN_S, "the uplink connected")
        up.kill()
        until(lambda: not link.connected, BACK_WITHIN_S, "the daemon noticing the uplink is gone")
        blocks = rig.daemon.blocks_read
        # The loop goes on with the uplink dead: a loop waiting for it would stop counting blocks.
        until(lambda: rig.daemon.blocks_read >= blocks + 25, BACK_WITHIN_S, "the audio loop going on")
        assert rig.daemon.gate.state is State.LISTENING and rig.raised == []

        t0 = time.monotonic()
        up.start()
        until(lambda: link.connected and link.connections == 2, BACK_WITHIN_S, "the new uplink taken")
        took = time.monotonic() - t0
        err = up.stop()
    assert rig.rc == 0 and rig.raised == [] and rig.mic.violations == []
    assert not {"capturing", "uploading"} & set(rig.states)
    assert "Traceback" not in err, err
    print(f"a restarted uplink process back on the daemon's socket {took:.2f} s after it was started")


def test_a_restarted_daemon_is_found_again_by_the_uplink_and_home_assistant_sees_it(tmp_path, short_dir):
    sock = short_dir / "uplink.sock"
    up = UplinkProcess(tmp_path, sock)
    up.start()
    measured = {}

    async def main():
        api = APIClient("127.0.0.1", up.port, None, client_info="home-assistant")
        await api.connect(login=True)
        states = {}
        api.subscribe_states(lambda s: states.__setitem__(s.key, s))

        async def ha_sees(cond, what):
            try:
                async with asyncio.timeout(BACK_WITHIN_S):
                    while not cond():
                        await asyncio.sleep(0.01)
            except TimeoutError:
                pytest.fail(f"Home Assistant did not see {what} within {BACK_WITHIN_S:g} s: {states}")

        rig = Rig(tmp_path / "state", sock, muted=True)
        await asyncio.to_thread(rig.__enter__)
        await asyncio.to_thread(until, lambda: rig.daemon.uplink.link.connected, BACK_WITHIN_S, "the uplink connected")
        await ha_sees(lambda: len(states) == 3 and states[1].state and not states[1].missing_state, "muted")
        await asyncio.to_thread(rig.__exit__, None, None, None)
        # The daemon is gone: Home Assistant sees the states unknown, not "off".
        await ha_sees(lambda: all(s.missing_state for s in states.values()), "unknown states")
        assert not sock.exists()  # the daemon removed its socket when it stopped

        rig = Rig(tmp_path / "state", sock, muted=False)
        await asyncio.to_thread(rig.__enter__)
        t0 = time.monotonic()
        await asyncio.to_thread(until, lambda: rig.daemon.uplink.link.connected, BACK_WITHIN_S,
                                "the uplink back on the new daemon")
        measured["back_s"] = time.monotonic() - t0
        await ha_sees(lambda: not states[1].state and not states[1].missing_state, "listening")
        await asyncio.to_thread(rig.__exit__, None, None, None)
        await api.disconnect()

    try:
        asyncio.run(asyncio.wait_for(main(), 90))
    finally:
        err = up.stop()
    assert "Traceback" not in err, err
    assert "the daemon closed the connection: reconnecting" in err
    print(f"the uplink back on a restarted daemon's socket {measured['back_s']:.2f} s after it listened")
