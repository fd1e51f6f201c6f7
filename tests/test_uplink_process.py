"""`tallylight uplink` as a real process between a real daemon-side link (UplinkLink, polled here as the
daemon's audio loop will) and Home Assistant's client library, over a unix socket and 127.0.0.1 with Noise."""

import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aioesphomeapi import APIClient
from aioesphomeapi.model import VoiceAssistantTimerEventType

from tallylight.uplink import messages
from tallylight.uplink.link import UplinkLink

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "tallylight"
WAIT_S = 15.0


def tallylight(*args: str, config: Path = REPO / "config" / "tallylight.toml", **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args, "--config", str(config)], capture_output=True, text=True, timeout=60, **kw)


def config_with_socket(folder: Path, sock: str) -> Path:
    """A config whose [home_assistant] socket is `sock`: the one place both processes read it from."""
    cfg = folder / "tallylight.toml"
    cfg.write_text(f'[home_assistant]\nenabled = true\nsocket = "{sock}"\n')
    return cfg


def test_new_key_is_private_printed_once_and_never_overwritten(tmp_path):
    key = tmp_path / "uplink.key"
    r = tallylight("uplink", "--new-key", "--key-file", str(key))
    assert r.returncode == 0, r.stderr
    printed = r.stdout.strip().rsplit(" ", 1)[-1]
    assert len(base64.b64decode(printed)) == 32 and key.read_text().strip() == printed
    assert (key.stat().st_mode & 0o777) == 0o600
    again = tallylight("uplink", "--new-key", "--key-file", str(key))
    assert again.returncode == 78 and "exists already" in again.stderr and key.read_text().strip() == printed


@pytest.mark.parametrize("setup, message", [
    (lambda k: k.chmod(0o644), "can be read by others (mode 0644): chmod 600"),
    (lambda k: k.write_text("c2hvcnQ=\n"), "does not hold a base64 32-byte key"),
    (lambda k: k.unlink(), "no API key at"),
])
def test_a_bad_key_file_is_a_one_line_error_before_anything_listens(tmp_path, setup, message):
    key = tmp_path / "uplink.key"
    assert tallylight("uplink", "--new-key", "--key-file", str(key)).returncode == 0
    setup(key)
    r = tallylight("uplink", "--key-file", str(key), "--host", "127.0.0.1", "--port", "0", "--no-mdns",
                   config=config_with_socket(tmp_path, str(tmp_path / "s.sock")))
    assert r.returncode == 78 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


class Daemon:
    """The daemon's side: a real UplinkLink, polled from the event loop every few ms like the audio loop."""

    def __init__(self, path: Path):
        self.link = UplinkLink(path, allowed_uid=os.getuid())
        self.inbox: list[messages.Message] = []
        self.link.open()

    async def poll_forever(self):
        while True:
            self.inbox += self.link.poll()
            await asyncio.sleep(0.005)

    async def receive(self, cls, **match):
        async with asyncio.timeout(WAIT_S):
            while True:
                for i, m in enumerate(self.inbox):
                    if isinstance(m, cls) and all(getattr(m, k) == v for k, v in match.items()):
                        return self.inbox.pop(i)
                await asyncio.sleep(0.005)


async def until(cond):
    async with asyncio.timeout(WAIT_S):
        while not cond():
            await asyncio.sleep(0.005)


@pytest.fixture
def uplink(tmp_path):
    key = tmp_path / "uplink.key"
    assert tallylight("uplink", "--new-key", "--key-file", str(key)).returncode == 0
    sock = tmp_path / "uplink.sock"
    proc = subprocess.Popen([str(EXE), "uplink", "--config", str(config_with_socket(tmp_path, "uplink.sock")),
                             "--host", "127.0.0.1", "--port", "0", "--key-file", str(key),
                             "--no-mdns", "--name", "tallylight-test"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"on 127\.0\.0\.1:(\d+),", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
    yield proc, int(m.group(1)), key.read_text().strip(), sock
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_home_assistant_and_the_daemon_meet_through_the_uplink_process(uplink):
    proc, port, key, sock = uplink
    result = {}

    async def main():
        daemon = Daemon(sock)
        poller = asyncio.create_task(daemon.poll_forever())
        try:
            await daemon.receive(messages.UplinkHello)
            assert await daemon.receive(messages.HomeAssistantLink) == messages.HomeAssistantLink(False, False, False)
            daemon.link.send(messages.Hello("tallylight 0.1.0", "kitchen", "text"))
            daemon.link.send(messages.State("listening"))

            api = APIClient("127.0.0.1", port, None, noise_psk=key, client_info="test")
            await api.connect(login=True)
            info = await api.device_info()
            assert info.name == "tallylight-test"
            states = {}
            api.subscribe_states(lambda s: states.__setitem__(s.key, s))
            await until(lambda: len(states) == 3 and not states[1].missing_state)
            daemon.link.send(messages.State("capturing"))
            await until(lambda: states[2].state)

            async def start(*_):
                return 0

            async def stop(*_):
                pass

            api.subscribe_voice_assistant(handle_start=start, handle_stop=stop)
            assert await daemon.receive(messages.HomeAssistantLink, connected=True) == \
                messages.HomeAssistantLink(True, True, False)
            api.send_voice_assistant_timer_event(VoiceAssistantTimerEventType.VOICE_ASSISTANT_TIMER_STARTED,
                                                 "t1", "tea", 180, 180, True)
            assert await daemon.receive(messages.TimerEvent) == messages.TimerEvent("started", "t1", "tea", 180, 180,
                                                                                   True)
            announced = asyncio.create_task(api.send_voice_assistant_announcement_await_response(
                "", WAIT_S, text="The washing is done"))
            ann = await daemon.receive(messages.Announcement)
            assert (ann.text, ann.with_audio) == ("The washing is done", False)
            daemon.link.send(messages.AnnounceDone(ann.announce_id, True))
            assert (await announced).success

            daemon.link.send(messages.TextUtterance("u1", "what is the weather"))
            err = await daemon.receive(messages.PipelineEvent, utterance_id="u1")
            assert (err.event, err.code) == ("error", "no_conversation_path")

            result["rss_kib"] = int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{proc.pid}/status").read_text())[1])
            fds = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
            assert not any(f.startswith("/dev/snd") for f in fds), fds
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            assert "portaudio" not in maps and "libasound" not in maps  # P6: the uplink has no audio stack

            # The daemon goes away: Home Assistant sees the states become unknown, not "off"; and the
            # uplink is back on the daemon's socket when it returns.
            daemon.link.close()
            await until(lambda: all(s.missing_state for s in states.values()))
            daemon.link.open()
            await daemon.receive(messages.UplinkHello)
            daemon.link.send(messages.State("muted"))
            await until(lambda: states[1].state and not states[1].missing_state)
            assert daemon.link.dropped == 0 and daemon.link.rejected == 0
            await api.disconnect()
        finally:
            poller.cancel()
            daemon.link.close()

    asyncio.run(asyncio.wait_for(main(), 90))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=WAIT_S) == 0
    err = proc.stderr.read()
    assert "Traceback" not in err, err
    print(f"uplink RSS while connected: {result['rss_kib'] / 1024:.1f} MiB")
