"""systemd/tallylight.service run for real: systemd as PID 1 in private namespaces (tests/systemd_rig.py).

The unit under test is systemd/tallylight.service with only these changes (the hardening is untouched):
- ExecStart: this checkout's venv instead of /opt/tallylight/venv, and a test config in the rig;
- Environment=ALSA_CONFIG_PATH=...: a microphone made with ALSA's `file` plugin whose infile is a
  FIFO; the test writes 20 ms blocks of silence (and "okay nabu" once) into it in real time;
- StandardOutput/StandardError=append:FILE (the rig has no journald);
- ExecStopPost=+...: records systemd's $SERVICE_RESULT/$EXIT_CODE/$EXIT_STATUS for every stop;
- when this venv's Python lives under /root or /home (pyenv), ProtectHome=tmpfs plus a read-only
  bind of that Python, because ProtectHome=yes would hide the interpreter itself. On a Pi the
  interpreter is /usr/bin/python3 and the shipped ProtectHome=yes stays.
The `tallylight` user and the `gpio` group are created inside the rig only (its own /etc/passwd and
/etc/group), so User=tallylight and SupplementaryGroups=audio gpio are exercised as shipped. GPIO is
gpiozero's mock pins (gpio.pin_factory = "mock") with the terminal light.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testkit import speech

from systemd_rig import SystemdRig, unavailable

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
BLOCK = 640  # 20 ms of 16 kHz s16 mono

pytestmark = [pytest.mark.slow, pytest.mark.skipif(unavailable() is not None, reason=f"systemd rig: {unavailable()}")]


class PacedMic:
    """Writes 16 kHz mono s16 into a FIFO in real time: silence, or queued speech."""

    def __init__(self, fifo: Path):
        os.mkfifo(fifo)
        fifo.chmod(0o644)
        # O_RDWR: opening never blocks, and there is always a reader, so a restarting daemon
        # finds the FIFO ready and we never get EPIPE.
        self._fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self._queue = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def say(self, pcm: bytes) -> None:
        with self._lock:
            self._queue += pcm

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                chunk = bytes(self._queue[:BLOCK]) if self._queue else b"\0" * BLOCK
                chunk += b"\0" * (BLOCK - len(chunk))
                try:
                    os.write(self._fd, chunk)
                    del self._queue[:BLOCK]
                except BlockingIOError:
                    pass  # nobody reads (daemon muted, stopped or restarting): the pipe is full
            next_t += 0.02
            time.sleep(max(0.0, next_t - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._fd)


def unit_under_test(rig: SystemdRig, config: Path, asound: Path, log: Path, results: Path) -> str:
    text = (REPO / "systemd" / "tallylight.service").read_text()
    text = text.replace("ExecStart=/opt/tallylight/venv/bin/tallylight run --config /etc/tallylight/tallylight.toml",
                        f"ExecStart={VENV_BIN / 'tallylight'} run --config {rig.inside(config)}")
    assert f"ExecStart={VENV_BIN}" in text
    extra = [
        f"Environment=ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:{rig.inside(asound)}",
        f"StandardOutput=append:{rig.inside(log)}",
        f"StandardError=append:{rig.inside(log)}",
        # '+': runs outside the sandbox, which could not write to the rig folder.
        f"ExecStopPost=+/bin/sh -c 'echo \"$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\" >> {rig.inside(results)}'",
    ]
    extra += _checkout_visible()
    text = text.replace("ProtectHome=yes", "ProtectHome=tmpfs")  # so binds below /root can show through
    return text.replace("[Install]", "\n".join(extra) + "\n\n[Install]")


def _checkout_visible() -> list[str]:
    """Directives that let the sandboxed test copy see this checkout's venv and its Python: the
    checkout may live under /tmp (hidden by PrivateTmp, as CI's clone may be) or /root (hidden by
    ProtectHome), and pyenv's Python under /root. On a Pi the venv is /opt/tallylight/venv and the
    interpreter /usr/bin/python3, and the shipped unit needs none of this."""
    extra = [f"BindReadOnlyPaths={REPO}"]
    python_home = Path(sys.base_prefix).resolve()
    if python_home.parts[1:2] in (("root",), ("home",)):
        extra.append(f"BindReadOnlyPaths={python_home}")
    return extra


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("systemd-real")
    rig = SystemdRig(work)
    rig.add_user("tallylight", groups=["audio", "gpio"])
    fifo = work / "mic.fifo"
    mic = PacedMic(fifo)
    asound = work / "asound.conf"
    asound.write_text(f'pcm.testmic {{ type file slave.pcm "null" file "/dev/null" '
                      f'infile "{rig.inside(fifo)}" format "raw" }}\n')
    config = work / "tallylight.toml"
    config.write_text(
        '[audio]\ndevice = "testmic"\nsample_rate = 16000\nchannels = 1\n'
        '[indicator]\nkind = "terminal"\n'
        '[gpio]\npin_factory = "mock"\n'
        # A momentary button starting unmuted: the simulated pins have no one to press it.
        '[mute]\ncontrol = "button"\nat_start = "listening"\n'
        '[reply]\nenabled = false\n'
    )
    config.chmod(0o644)
    asound.chmod(0o644)
    log, results = work / "daemon.log", work / "results.log"
    rig.add_unit("tallylight.service", unit_under_test(rig, config, asound, log, results))
    rig.add_unit("netprobe.service", probe_unit(rig, work, hardened=True))
    rig.add_unit("netprobe-plain.service", probe_unit(rig, work, hardened=False))
    rig.boot()
    try:
        yield {"rig": rig, "mic": mic, "config": config, "log": log, "results": results, "work": work}
    finally:
        rig.close()
        mic.close()


def main_pid(rig: SystemdRig) -> int:
    return int(rig.show("tallylight.service", "MainPID")["MainPID"])


def wait_running(rig: SystemdRig, not_pid: int = 0, timeout: float = 120) -> dict[str, str]:
    props = ("ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "Result")
    return rig.wait("tallylight.service",
                    lambda p: p["ActiveState"] == "active" and p["MainPID"] not in ("0", str(not_pid)),
                    props, timeout)


def results(world) -> list[str]:
    f = world["results"]
    return f.read_text().splitlines() if f.exists() else []


def wait_results(world, n: int, timeout: float = 90) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(results(world)) < n and time.monotonic() < deadline:
        time.sleep(0.25)
    return results(world)


def ledger_entries(world) -> list[dict]:
    path = world["work"] / "var-lib" / "tallylight" / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def diagnostics(world) -> str:
    log = world["log"].read_text()[-3000:] if world["log"].exists() else "(no daemon log)"
    status = world["rig"].systemctl("status", "tallylight.service").stdout
    return f"\n--- systemctl status ---\n{status}\n--- daemon log (tail) ---\n{log}"


def test_starts_and_reports_ready(world):
    rig = world["rig"]
    r = rig.systemctl("start", "tallylight.service")  # Type=notify: returns once READY=1 arrived
    assert r.returncode == 0, r.stderr + diagnostics(world)
    p = wait_running(rig)
    assert (p["ActiveState"], p["SubState"], p["NRestarts"]) == ("active", "running", "0"), diagnostics(world)
    assert p["StatusText"].startswith("listening with microwakeword"), p
    # The daemon runs as the unit says: user tallylight with audio and gpio, no capabilities.
    status = rig.run("cat", f"/proc/{p['MainPID']}/status").stdout
    uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
    assert rig.run("getent", "passwd", uid).stdout.startswith("tallylight:")
    assert re.search(r"^CapEff:\s+0+$", status, re.M) and re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    assert re.search(r"^Seccomp:\s+2$", status, re.M)


def test_wake_engine_runs_under_memory_deny_write_execute(world, synth):
    # MemoryDenyWriteExecute=yes must not break the wake engine's TFLite library: say the wake word
    # into the paced mic and see the capture in the ledger.
    rig = world["rig"]
    p = wait_running(rig)
    assert p["ActiveState"] == "active", diagnostics(world)
    assert rig.show("tallylight.service", "MemoryDenyWriteExecute")["MemoryDenyWriteExecute"] == "yes"
    time.sleep(1.0)
    world["mic"].say(speech.pcm(synth("okay nabu", lead_s=0.5, tail_s=2.0)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(e.get("state") == "capturing" for e in ledger_entries(world)):
            break
        time.sleep(0.5)
    states = [e.get("state") for e in ledger_entries(world)]
    assert "capturing" in states, f"no capture after 'okay nabu': ledger states {states}" + diagnostics(world)


def test_a_stuck_loop_is_killed_by_the_watchdog_and_restarted(world):
    rig = world["rig"]
    before = wait_running(rig)
    n = len(results(world))
    # SIGSTOP freezes the whole daemon, audio loop included: the WATCHDOG=1 pings stop.
    # Sent by systemd to the unit's main process: a signal can never reach a process outside it.
    assert rig.systemctl("kill", "--kill-whom=main", "--signal=SIGSTOP", "tallylight.service").returncode == 0
    got = wait_results(world, n + 1, timeout=90)  # 10 s watchdog + up to 10 s abort timeout
    assert got[n:n + 1] and got[n].split()[0] == "watchdog", got
    after = wait_running(rig, not_pid=int(before["MainPID"]))
    assert after["ActiveState"] == "active" and after["MainPID"] != before["MainPID"], diagnostics(world)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1


def test_a_crash_is_restarted(world):
    rig = world["rig"]
    before = wait_running(rig)
    n = len(results(world))
    assert rig.systemctl("kill", "--kill-whom=main", "--signal=SIGSEGV", "tallylight.service").returncode == 0
    got = wait_results(world, n + 1)
    assert got[n:n + 1] and got[n].split()[0] in ("signal", "core-dump") and got[n].endswith("SEGV"), got
    after = wait_running(rig, not_pid=int(before["MainPID"]))
    assert after["ActiveState"] == "active" and after["MainPID"] != before["MainPID"], diagnostics(world)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1


PROBE = """
import json, socket
out = {}
for name in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"):
    try:
        socket.socket(getattr(socket, name), socket.SOCK_DGRAM if name != "AF_PACKET" else socket.SOCK_RAW).close()
        out[name] = "ok"
    except OSError as e:
        out[name] = e.errno
print(json.dumps(out), flush=True)
"""


def probe_unit(rig: SystemdRig, work: Path, hardened: bool) -> str:
    """The same hardened unit file with ExecStart replaced by a socket probe (or, as the negative
    control, a unit with none of the sandbox)."""
    name = "netprobe" if hardened else "netprobe-plain"
    script, out = work / f"{name}.py", work / f"{name}.out"
    script.write_text(PROBE)
    script.chmod(0o644)
    if not hardened:
        return (f"[Service]\nType=oneshot\nExecStart={VENV_BIN / 'python'} {rig.inside(script)}\n"
                f"StandardOutput=append:{rig.inside(out)}\n")
    text = (REPO / "systemd" / "tallylight.service").read_text()
    text = re.sub(r"^ExecStart=.*$", f"ExecStart={VENV_BIN / 'python'} {rig.inside(script)}", text, flags=re.M)
    text = text.replace("Type=notify", "Type=oneshot").replace("WatchdogSec=10s", "")
    text = text.replace("Restart=on-failure", "")
    extra = [f"StandardOutput=append:{rig.inside(out)}"]
    extra += _checkout_visible()
    text = text.replace("ProtectHome=yes", "ProtectHome=tmpfs")
    return text.replace("[Install]", "\n".join(extra) + "\n\n[Install]")


def test_the_daemon_cannot_open_an_inet_socket(world):
    rig, work = world["rig"], world["work"]
    for unit in ("netprobe.service", "netprobe-plain.service"):
        r = rig.systemctl("start", unit)
        assert r.returncode == 0, r.stderr + rig.systemctl("status", unit).stdout
    hardened = json.loads((work / "netprobe.out").read_text())
    plain = json.loads((work / "netprobe-plain.out").read_text())
    # Negative control: without the sandbox the same probe gets every socket it asks for.
    assert plain == {"AF_INET": "ok", "AF_INET6": "ok", "AF_NETLINK": "ok", "AF_PACKET": "ok", "AF_UNIX": "ok"}
    assert hardened == {"AF_INET": 97, "AF_INET6": 97, "AF_NETLINK": 97, "AF_PACKET": 97, "AF_UNIX": "ok"}
    # And the running daemon itself sits in a network namespace of its own with only a loopback.
    pid = main_pid(rig)
    links = rig.run("nsenter", "-t", str(pid), "-n", "ip", "-o", "link").stdout.splitlines()
    assert len(links) == 1 and ": lo:" in links[0], links
    daemon_net = rig.run("readlink", f"/proc/{pid}/ns/net").stdout
    assert daemon_net.startswith("net:") and daemon_net != rig.run("readlink", "/proc/1/ns/net").stdout


def test_sigterm_leaves_the_light_off_and_the_ledger_consistent(world):
    rig = world["rig"]
    wait_running(rig)
    n = len(results(world))
    log_before = world["log"].read_text() if world["log"].exists() else ""
    r = rig.systemctl("stop", "tallylight.service")  # SIGTERM (KillSignal=SIGTERM)
    assert r.returncode == 0, r.stderr
    assert results(world)[n:] == ["success exited 0"], results(world)
    p = rig.show("tallylight.service", "ActiveState", "Result")
    assert p == {"ActiveState": "inactive", "Result": "success"}
    # The ledger: hash chain intact across the watchdog kill and the crash, and a clean stop last.
    state_dir = world["work"] / "var-lib" / "tallylight"
    env = dict(os.environ, STATE_DIRECTORY=str(state_dir))
    v = subprocess.run([str(VENV_BIN / "tallylight"), "ledger", "--verify", "--config", str(world["config"])],
                       capture_output=True, text=True, env=env, timeout=60)
    assert v.returncode == 0 and "OK" in v.stdout, v.stdout + v.stderr
    entries = ledger_entries(world)
    assert entries[-1]["event"] == "stop" and entries[-1]["reason"] == "shutdown", entries[-1]
    starts = [e for e in entries if e["event"] == "start"]
    assert len(starts) == 3  # first start, after the watchdog kill, after the crash
    # Last, the light: the terminal light prints every change, and its last word must be OFF.
    shutdown_log = world["log"].read_text()[len(log_before):]
    lights = re.findall(r"\[tallylight\] light: (\S+)", shutdown_log)
    assert lights and lights[-1] == "OFF", f"last light states at shutdown: {lights}\n{shutdown_log}"
