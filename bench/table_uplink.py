"""Table 11: the Home Assistant uplink (issue 15) with real processes: `tallylight run` (simulated pins,
a PulseAudio null-sink mic) with and without `[home_assistant] enabled`, a real `tallylight uplink
--plaintext --no-mdns` on its socket, and Home Assistant's side played by aioesphomeapi's APIClient
(bench/children/ha_client.py), connected and subscribed to the voice assistant."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Ctx, Table, proc_status, register, verdict, wait_for
from bench.daemon_runs import RUN_CONFIG
from bench.inputs import LED_PIN, MUTE_PIN, noise_pcm

HA_SECTION = """
[home_assistant]
enabled = {enabled}
socket = "{sock}"
uplink_user = "{uid}"
"""


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rig:
    """One daemon (and, with Home Assistant on, its uplink and an APIClient) as real processes."""

    def __init__(self, work: Path, env: dict[str, str], ha: bool, tag: str):
        self.work, self.env, self.ha = work, env, ha
        self.sock = work / f"u{tag}.sock"
        self.cfg = work / f"c{tag}.toml"
        text = RUN_CONFIG.format(mute_pin=MUTE_PIN, led_pin=LED_PIN, indicator="terminal", state=work / f"state{tag}",
                                 pin_factory="mock", engine="pocketsphinx", vosk_model="")
        text += HA_SECTION.format(enabled="true" if ha else "false", sock=self.sock, uid=os.getuid())
        self.cfg.write_text(text)
        self.procs: list[subprocess.Popen] = []
        self.daemon = self.uplink = self.client = None
        self.served_s: float | None = None

    def _spawn(self, *args: str, **kw) -> subprocess.Popen:
        with open(self.work / "err.txt", "a") as err:  # the child keeps its own copy of the descriptor
            p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stderr=err, **kw)
        self.procs.append(p)
        return p

    def start(self) -> None:
        self.daemon = self._spawn("-m", "tallylight", "run", "--config", str(self.cfg), stdout=subprocess.DEVNULL)
        if not self.ha:
            return
        if not wait_for(lambda: self.sock.exists() or self.daemon.poll() is not None, 60, 0.05) or not self.sock.exists():
            raise RuntimeError(f"the daemon opened no socket: {(self.work / 'err.txt').read_text()[-400:]}")
        self.port = free_port()
        self.uplink = self._spawn("-m", "tallylight", "uplink", "--config", str(self.cfg), "--plaintext", "--no-mdns",
                                  "--host", "127.0.0.1", "--port", str(self.port), stdout=subprocess.DEVNULL)
        self.connect()

    def connect(self, timeout: float = 30) -> float:
        """Home Assistant (an APIClient child) connects, subscribes and gets states; seconds that took."""
        deadline = time.monotonic() + timeout
        while True:
            t0 = time.monotonic()
            c = self._spawn("-m", "bench.children.ha_client", str(self.port), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
            line = c.stdout.readline()
            if line:
                self.client = c
                self.served_s = time.monotonic() - t0
                return json.loads(line)["served_s"]
            c.wait(10)
            if time.monotonic() > deadline:
                raise RuntimeError(f"Home Assistant's client was not served: {(self.work / 'err.txt').read_text()[-400:]}")
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


@register(11, "uplink", "Home Assistant uplink")
def table_uplink(ctx: Ctx) -> Table:
    t = Table(11, "Home Assistant uplink: CPU and RSS while listening, connected and idle (issue 15)",
              "daemon CPU with the uplink connected and idle <= 1.10 x without; uplink RSS <= 60 MiB",
              ["what", "runs", "median", "max", "goal", "result"])
    from testkit.audio_rigs import have_pulseaudio, pulse_mic

    if not have_pulseaudio():
        t.verdict = "SKIPPED"
        t.notes.append("needs pulseaudio, pactl, pacat and libasound2-plugins (scripts/setup.sh test installs them)")
        return t
    try:
        import aioesphomeapi  # noqa: F401 - Home Assistant's side of the link
    except ImportError:
        t.verdict = "SKIPPED"
        t.notes.append("needs aioesphomeapi (the test extras)")
        return t
    rounds = 2 if ctx.quick else 5
    window = 5.0 if ctx.quick else 15.0
    settle = 2.0
    work = Path(tempfile.mkdtemp(prefix="tl-up-"))  # short: a unix socket path must fit in 108 bytes
    cpu = {"off": [], "on": []}
    up_cpu: list[float] = []
    rss: list[float] = []
    hwm: list[float] = []
    served: list[float] = []
    try:
        with pulse_mic(work / "pa", rate=16000, channels=1) as mic:
            mic.play(noise_pcm(3600), lead_s=0.0)
            time.sleep(0.3)
            env = dict(mic.env, PYTHONUNBUFFERED="1")
            for r in range(rounds):
                order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
                for mode in order:
                    rig = Rig(work, env, mode == "on", f"{r}{mode}")
                    try:
                        rig.start()
                        time.sleep(settle)
                        procs = [rig.daemon] + ([rig.uplink] if rig.uplink else [])
                        if any(p.poll() is not None for p in procs):
                            raise RuntimeError(f"a process exited: {(work / 'err.txt').read_text()[-400:]}")
                        c0 = [cpu_s(p.pid) for p in procs]
                        w0 = time.monotonic()
                        time.sleep(window)
                        c1 = [cpu_s(p.pid) for p in procs]
                        audio_s = time.monotonic() - w0
                        cpu[mode].append((c1[0] - c0[0]) / audio_s)
                        if rig.uplink:
                            up_cpu.append((c1[1] - c0[1]) / audio_s)
                            st = proc_status(rig.uplink.pid)
                            rss.append(st["VmRSS"])
                            hwm.append(st["VmHWM"])
                            served.append(rig.served_s or 0.0)
                    finally:
                        rig.stop()
    except RuntimeError as e:
        t.verdict = "SKIPPED" if not cpu["on"] else "MISS"
        t.notes.append(f"not measured: {e}")
        return t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    off, on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    ratio = on / off if off else float("inf")
    ok_cpu, ok_rss = ratio <= 1.10, max(rss) <= 60
    t.rows += [
        ["daemon CPU s per audio s, home_assistant off", len(cpu["off"]), off, max(cpu["off"]), "-", "-"],
        ["daemon CPU s per audio s, uplink connected, idle", len(cpu["on"]), on, max(cpu["on"]), "-", "-"],
        ["ratio (medians), on / off", rounds, ratio, "-", "<= 1.10", verdict(ok_cpu)],
        ["uplink's own CPU s per audio s (not in the ratio)", len(up_cpu), statistics.median(up_cpu), max(up_cpu), "-", "-"],
        ["uplink VmRSS MiB, connected and idle", len(rss), statistics.median(rss), max(rss), "<= 60", verdict(ok_rss)],
        ["uplink VmHWM MiB (peak since start)", len(hwm), statistics.median(hwm), max(hwm), "-", "-"],
        ["HA client start -> served (connected, entities, states) s", len(served), statistics.median(served),
         max(served), "-", "-"],
    ]
    t.verdict = verdict(ok_cpu and ok_rss)
    t.notes.append(f"{os.cpu_count()}-core x86_64 machine, not a Pi. Each round starts real processes: `tallylight run` "
                   "(pocketsphinx, simulated pins, mic = a PulseAudio null-sink monitor fed hiss), with "
                   "`[home_assistant] enabled = true` also `tallylight uplink --plaintext --no-mdns` on its socket (no "
                   "Home Assistant URL: idle) and aioesphomeapi's APIClient in a child process connected to it, "
                   "subscribed to states and the voice assistant; off = the same daemon with home_assistant disabled")
    t.notes.append(f"CPU = utime+stime from /proc/PID/stat over {window:g} s of wall clock (= audio seconds) after "
                   f"{settle:g} s settling; {rounds} interleaved rounds (the order flips each round), medians; RSS and "
                   "HWM from /proc/PID/status of the uplink at the end of the window")
    t.notes.append("the issue's text-mode latency and reconnect goals are not in this table yet")
    return t
