"""Table 11's processes and its two runs beyond the idle link: `tallylight run` with its `tallylight uplink`
and aioesphomeapi's APIClient as real processes (Rig), their logs read as they come (LogTail); text mode
against the fake Home Assistant, which runs in this process (text_mode_run), and Home Assistant's client
killed or frozen and a new one served (reconnect_runs)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import ROOT, proc_status, rss_by_mapping, wait_for
from bench.daemon_runs import RUN_CONFIG
from bench.inputs import LED_PIN, MUTE_PIN, wav_pcm

HA_SECTION = """
[home_assistant]
enabled = {enabled}
socket = "{sock}"
uplink_user = "{uid}"
"""

# Text mode's daemon: the log at info (the bench reads its "command ..." lines as they come) and replies on,
# played to ALSA's null device, as a speaker with replies would be while the next command comes.
TEXT_MODE_DAEMON = {'log_level = "warning"': 'log_level = "info"',
                    "[reply]\nenabled = false": '[reply]\nenabled = true\noutput_device = "null"'}
LOCAL_TEXT, HA_TEXT = "turn on the light", "turn on the kitchen light"
LOCAL_LINE = "command 'light_on' (gpio)"  # tallylight.actions logs it once the pin is driven
HA_LINE = "command 'home_assistant' (home_assistant)"  # the daemon hands the words to the uplink
NAMES_LINE = "grammar rebuilt with Home Assistant's"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LogTail:
    """A child's stderr read line by line as it comes, each line with time.monotonic() as it was read
    (PYTHONUNBUFFERED: the child writes each log line at once), and copied to `copy`."""

    def __init__(self, stream, copy: Path):
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(stream, copy), daemon=True)
        self._thread.start()

    def _read(self, stream, copy: Path) -> None:
        with open(copy, "a") as out:
            for line in iter(stream.readline, ""):
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                out.write(line)
                out.flush()

    def find(self, needle: str, since: float = 0.0) -> list[float]:
        """When each line holding `needle` was read, from `since` on."""
        return [at for at, line in list(self.lines) if at >= since and needle in line]


class Rig:
    """One daemon (and, with Home Assistant on, its uplink and an APIClient) as real processes."""

    def __init__(self, work: Path, env: dict[str, str], ha: bool, tag: str, daemon: dict[str, str] | None = None,
                 ha_extra: str = ""):
        self.work, self.env, self.ha = work, env, ha
        self.sock = work / f"u{tag}.sock"
        self.cfg = work / f"c{tag}.toml"
        self.err = work / "err.txt"
        text = RUN_CONFIG.format(mute_pin=MUTE_PIN, led_pin=LED_PIN, indicator="terminal", state=work / f"state{tag}",
                                 pin_factory="mock", engine="pocketsphinx", vosk_model="")
        for old, new in (daemon or {}).items():
            if old not in text:
                raise RuntimeError(f"bench.daemon_runs.RUN_CONFIG has no {old!r} to change")
            text = text.replace(old, new)
        text += HA_SECTION.format(enabled="true" if ha else "false", sock=self.sock, uid=os.getuid()) + ha_extra
        self.cfg.write_text(text)
        self.procs: list[subprocess.Popen] = []
        self.daemon = self.uplink = self.client = None
        self.daemon_log = self.uplink_log = None
        self.served_s: float | None = None  # the last client's, from its process start
        self.own_served_s: float | None = None  # the same client's own, from its connect()

    def _spawn(self, *args: str, log: bool = False, **kw) -> subprocess.Popen:
        if log:
            p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stderr=subprocess.PIPE, text=True,
                                 **kw)
            p.log = LogTail(p.stderr, self.err)
        else:
            with open(self.err, "a") as err:  # the child keeps its own copy of the descriptor
                p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stderr=err, **kw)
        self.procs.append(p)
        return p

    def tail(self) -> str:
        return self.err.read_text()[-400:] if self.err.exists() else ""

    def start(self) -> None:
        self.daemon = self._spawn("-m", "tallylight", "run", "--config", str(self.cfg), stdout=subprocess.DEVNULL,
                                  log=True)
        self.daemon_log = self.daemon.log
        if not self.ha:
            return
        if not wait_for(lambda: self.sock.exists() or self.daemon.poll() is not None, 60, 0.05) or not self.sock.exists():
            raise RuntimeError(f"the daemon opened no socket: {self.tail()}")
        self.port = free_port()
        self.uplink = self._spawn("-m", "tallylight", "uplink", "--config", str(self.cfg), "--plaintext", "--no-mdns",
                                  "--host", "127.0.0.1", "--port", str(self.port), stdout=subprocess.DEVNULL, log=True)
        self.uplink_log = self.uplink.log
        self.connect()

    def connect(self, timeout: float = 30) -> tuple[float, int]:
        """Home Assistant (an APIClient child) connects, subscribes and is served; (the child's own seconds
        from connect() to served, attempts). self.served_s: from the child's start, its Python start-up in."""
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            attempts += 1
            t0 = time.monotonic()
            c = self._spawn("-m", "bench.children.ha_client", str(self.port), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
            line = c.stdout.readline()
            if line:
                self.client = c
                self.served_s = time.monotonic() - t0
                self.own_served_s = json.loads(line)["served_s"]
                return self.own_served_s, attempts
            c.wait(10)
            if time.monotonic() > deadline:
                raise RuntimeError(f"Home Assistant's client was not served: {self.tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.client is not None and self.client.poll() is None:
            self.client.stdin.close()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        self.procs.clear()


@contextmanager
def fake_home_assistant(**kw) -> Iterator:
    """testkit's FakeHomeAssistant on its own event loop in a thread of this process, started and closed."""
    from testkit.fake_home_assistant import FakeHomeAssistant

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ha = FakeHomeAssistant(**kw)
    try:
        asyncio.run_coroutine_threadsafe(ha.start(), loop).result(30)
        yield ha
    finally:
        if ha.port:
            asyncio.run_coroutine_threadsafe(ha.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def mapped(pid: int, *packages: str) -> list[str]:
    """Which of `packages` (site-packages folder names) the process has mapped."""
    paths = list(rss_by_mapping(pid))
    return [p for p in packages if any(f"site-packages/{p}" in m for m in paths)]


def heard(log: LogTail, since: float) -> str:
    """What the daemon made of a clip, from its log: no wake word, or what it transcribed."""
    lines = [line for at, line in list(log.lines) if at >= since]
    said = [line.split("transcript text=", 1)[1] for line in lines if "transcript text=" in line]
    if said:
        return "heard " + "; ".join(repr(x) for x in said)
    return "wake word heard, no transcript" if any("wake word=" in line for line in lines) else "no wake word"


def reply_over(log: LogTail, since: float) -> bool:
    """The daemon's speaker has played a reply that began after `since` and is quiet now."""
    return bool(log.find("speaker done", since)) and len(log.find("speaker playing")) == len(log.find("speaker done"))


def text_mode_run(work: Path, mic, env: dict[str, str], pairs: int, times: int) -> tuple[dict, dict]:
    """The daemon with the uplink and the fake Home Assistant (with a token, a "Kitchen Light" entity):
    "okay nabu, turn on the light" (a local command) and "okay nabu, turn on the kitchen light" (text for
    Home Assistant) played in turn into the mic, `pairs` times each. Per clip the milliseconds from the end
    of its speech to the daemon's "command 'light_on'" line being read, or to the text's arrival at Home
    Assistant (and, for those, to the daemon's line handing the words over, and from it to the arrival);
    and the uplink's memory idle, after replies as 16 kHz WAV (passed through) in the first
    half, and after replies as 22.05 kHz WAV (converted with numpy and soxr) in the second. Then, on the same
    processes, reconnect_runs(rig, times)."""
    from testkit import speech
    from testkit.fake_home_assistant import TOKEN, wav_bytes

    voice = "en-us"
    clips = {}
    for kind, text in (("local", LOCAL_TEXT), ("ha", HA_TEXT)):
        pcm = wav_pcm(speech.synth(f"okay nabu, {text}", voice=voice, speed=160, lead_s=0.5, tail_s=2.0))
        clips[kind] = (pcm, speech.speech_end_s(pcm))
    out: dict = {"local": [], "ha": [], "decided": [], "handed": [], "missed": [], "rss": {}, "mapped": {}}
    with fake_home_assistant(entities={"light.kitchen": {"name": "Kitchen Light"}}) as ha:
        ha.files["reply.wav"] = (wav_bytes(rate=16000), "audio/wav")  # as Home Assistant converts when asked
        token = work / "ha.token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        extra = f'url = "{ha.url}"\ntoken_file = "{token}"\nnames = ["kitchen light"]\n'
        rig = Rig(work, env, True, "text", daemon=TEXT_MODE_DAEMON, ha_extra=extra)
        try:
            rig.start()
            if not wait_for(lambda: rig.daemon_log.find(NAMES_LINE) or rig.daemon.poll() is not None, 60, 0.05) \
                    or rig.daemon.poll() is not None:
                raise RuntimeError(f"the daemon never had Home Assistant's names: {rig.tail()}")
            time.sleep(1.0)  # the new grammar is swapped in between captures
            out["rss"]["idle"] = proc_status(rig.uplink.pid)
            out["mapped"]["idle"] = mapped(rig.uplink.pid, "numpy", "soxr")
            for i in range(2 * pairs):
                if i == pairs:  # the first half's replies were 16 kHz WAV; the rest need converting
                    out["rss"]["passed"] = proc_status(rig.uplink.pid)
                    out["mapped"]["passed"] = mapped(rig.uplink.pid, "numpy", "soxr")
                    ha.files["reply.wav"] = (wav_bytes(), "audio/wav")  # 22.05 kHz, as Piper makes it
                kind = ("local", "ha")[(i + i // 2) % 2]  # local, ha, ha, local, local, ha ...
                pcm, end_s = clips[kind]
                player = mic.play(pcm, lead_s=0.3)
                end = player.at(end_s)

                def seen(kind: str = kind, since: float = player.t0) -> list[float]:
                    """When the local command ran, or the text reached Home Assistant."""
                    if kind == "local":
                        return rig.daemon_log.find(LOCAL_LINE, since)
                    return [at for at, text in ha.runs_at() if at >= since and text == HA_TEXT]

                wait_for(lambda seen=seen: seen() or rig.daemon.poll() is not None, end - time.monotonic() + 10, 0.005)
                got = seen()
                player.wait()
                if rig.daemon.poll() is not None or rig.uplink.poll() is not None:
                    raise RuntimeError(f"a process exited: {rig.tail()}")
                if got:
                    out[kind].append((got[0] - end) * 1000)
                    handed = rig.daemon_log.find(HA_LINE, player.t0) if kind == "ha" else []
                    if handed:
                        out["decided"].append((handed[0] - end) * 1000)
                        out["handed"].append((got[0] - handed[0]) * 1000)
                else:
                    out["missed"].append(f"{kind} ({heard(rig.daemon_log, player.t0)})")
                # The reply plays (wake detection off meanwhile); the next clip comes a second after it ends.
                wait_for(lambda end=end: reply_over(rig.daemon_log, end), 10, 0.02)
                time.sleep(1.0)
            out["rss"]["converted"] = proc_status(rig.uplink.pid)
            out["mapped"]["converted"] = mapped(rig.uplink.pid, "numpy", "soxr")
            out["replies"] = len(ha.runs())
            out["breakdown"] = rss_by_mapping(rig.uplink.pid)
            recon = reconnect_runs(rig, times)
        finally:
            rig.stop()  # before the fake closes: it waits for the uplink's WebSocket to go
    return out, recon


def reconnect_runs(rig: Rig, times: int) -> dict:
    """Home Assistant's client, connected and subscribed, is killed (SIGKILL: its socket closes) or frozen
    (SIGSTOP: its connection stays open and silent, as when Home Assistant hangs or the network cuts out
    half-way), and a new client connects at once; `times` of each. Per run: the new client's own seconds
    from connect() to served, from its process start, and from the signal; and the uplink's "takes over"
    lines (a new subscriber replacing a stale connection at once, not after the pings time out)."""
    out: dict = {}
    for name, sig in (("killed", signal.SIGKILL), ("frozen", signal.SIGSTOP)):
        runs = out[name] = {"own": [], "start": [], "signal": [], "attempts": 0}
        before = len(rig.uplink_log.find("takes over the voice assistant"))
        for _ in range(times):
            old = rig.client
            t0 = time.monotonic()
            os.kill(old.pid, sig)
            own, attempts = rig.connect()
            runs["signal"].append(time.monotonic() - t0)
            runs["own"].append(own)
            runs["start"].append(rig.served_s)
            runs["attempts"] += attempts
            if old.poll() is None:
                old.kill()
            old.wait(10)
        runs["takeovers"] = len(rig.uplink_log.find("takes over the voice assistant")) - before
    return out
