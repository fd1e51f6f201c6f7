"""scripts/install.sh on the Raspberry Pi's architecture: a real install in a Debian arm64 root, emulated.

Raspberry Pi OS (64-bit) is Debian for arm64. Debian's qemu-user-static registers itself with
binfmt_misc, so the aarch64 programs of a `debootstrap --arch=arm64` root run here under emulation:
apt, pip (which picks aarch64 wheels, or builds with the root's gcc), and the installed daemon. One
root is built and installed once for the whole module; the tests then look at it. Emulation is slow
(correctness here, never timings); the figures printed are for the lead, not asserted.

Needs root (debootstrap, chroot, mounts), Debian's qemu-user-static, binfmt-support and debootstrap
(scripts/test installs them), and the right to mount binfmt_misc; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from test_install import freeze_checkout, steps

from debian_root import chroot_env, debian_root

pytestmark = [pytest.mark.slow, pytest.mark.heavy_root]

BINFMT = Path("/proc/sys/fs/binfmt_misc")
EM_AARCH64 = 183  # ELF e_machine of aarch64
# Compiled dependencies that must come as aarch64 wheels from the registry (no compiler needed).
AARCH64_WHEELS = ("pymicro-wakeword", "pocketsphinx", "vosk", "webrtcvad-wheels", "soxr", "numpy", "lgpio")


def aarch64_emulation_or_skip() -> None:
    """Make sure this machine runs aarch64 programs through qemu, or skip saying why."""
    if os.geteuid() != 0:
        pytest.skip("needs root for debootstrap, chroot and mounts (CI runs as root)")
    for tool in ("debootstrap", "update-binfmts", "qemu-aarch64-static"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing: apt-get install qemu-user-static binfmt-support debootstrap (scripts/test does)")
    if not (BINFMT / "register").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount binfmt_misc here (a container without the right?): {r.stderr.strip()}")
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        r = subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, text=True)
        if r.returncode != 0 or not entry.exists():
            pytest.skip(f"update-binfmts --enable qemu-aarch64 failed: {r.stderr.strip() or r.stdout.strip()}")
    flags = next((line.split(":", 1)[1].strip() for line in entry.read_text().splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        # Without F the kernel looks for qemu inside the chroot, which a plain Debian root lacks.
        pytest.skip(f"the qemu-aarch64 binfmt entry lacks the F (fix binary) flag (flags: {flags!r}); Debian's qemu-user-static sets it")


class Arm64Root:
    """A debootstrapped Debian arm64 root with /proc, /sys and /dev bound in; run() executes inside it."""

    def __init__(self, path: Path):
        self.path = path
        self.figures: dict[str, float] = {}

    def env(self) -> dict[str, str]:
        return chroot_env()

    def run(self, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["chroot", str(self.path), *cmd], capture_output=True, text=True, timeout=timeout,
                              env=self.env(), stdin=subprocess.DEVNULL)

    def run_timed_steps(self, *cmd: str, timeout: float) -> tuple[int, str, str, dict[str, float]]:
        """Run the installer, noting how long each step line took to appear (for the figures)."""
        with tempfile.TemporaryFile("w+") as err:
            p = subprocess.Popen(["chroot", str(self.path), *cmd], stdout=subprocess.PIPE, stderr=err,
                                 stdin=subprocess.DEVNULL, text=True, env=self.env())
            watchdog = threading.Timer(timeout, p.kill)
            watchdog.start()
            lines, took, last = [], {}, time.monotonic()
            try:
                for line in p.stdout:
                    now = time.monotonic()
                    lines.append(line)
                    took[line.split(":")[1].strip() if line.count(":") >= 2 else line.strip()] = now - last
                    last = now
                rc = p.wait()
            finally:
                watchdog.cancel()
            err.seek(0)
            return rc, "".join(lines), err.read(), took


@pytest.fixture(scope="module")
def arm64_root(tmp_path_factory):
    aarch64_emulation_or_skip()
    path = tmp_path_factory.mktemp("arm64") / "bookworm"
    root = Arm64Root(path)
    with debian_root(path, arch="arm64", timeout=2400) as took:
        root.figures["debootstrap"] = took
        try:
            yield root
        finally:
            print("\narm64 figures (emulated, this machine): " + ", ".join(f"{k} {v:.0f} s" for k, v in root.figures.items()))


@pytest.fixture(scope="module")
def installed(arm64_root):
    """The arm64 root after `scripts/install.sh --no-vosk` ran in it (pocketsphinx recognizes)."""
    root = arm64_root
    freeze_checkout(root.path / "root/tallylight")
    assert root.run("uname", "-m").stdout.strip() == "aarch64"
    t0 = time.monotonic()
    rc, out, err, took = root.run_timed_steps("bash", "/root/tallylight/scripts/install.sh", "--no-vosk", timeout=2400)
    root.figures["install"] = time.monotonic() - t0
    root.figures["install: apt"] = took.get("packages", 0.0)
    root.figures["install: venv"] = took.get("venv", 0.0)
    assert rc == 0, out + err[-3000:]
    return root, steps(out)


def site_packages(root: Path) -> Path:
    (found,) = (root / "opt/tallylight/venv/lib").glob("python3.*/site-packages")
    return found


def test_installer_installs_the_packages_arm64_needs(installed):
    root, s = installed
    assert s["packages"].startswith("apt-get install")
    assert "python3-venv" in s["packages"].split()
    # libvosk.so needs libatomic.so.1, which a minimal Debian arm64 system lacks.
    assert "libatomic1" in s["packages"].split()
    assert s["venv"] == "create /opt/tallylight/venv and install tallylight"
    assert s["start"].startswith("skipped (systemd is not running")
    q = root.run("dpkg-query", "-W", "-f=${Package}:${Architecture} ${Status}\n", "libatomic1", "libportaudio2")
    assert q.stdout.splitlines() == ["libatomic1:arm64 install ok installed", "libportaudio2:arm64 install ok installed"], q.stderr


def test_venv_holds_aarch64_wheels_and_aarch64_code_only(installed):
    root, _ = installed
    sp = site_packages(root.path)
    tags: dict[str, list[str]] = {}
    for wheel in sp.glob("*.dist-info/WHEEL"):
        name = wheel.parent.name.removesuffix(".dist-info").rsplit("-", 1)[0].lower().replace("_", "-")
        tags[name] = [line.split(":", 1)[1].strip() for line in wheel.read_text().splitlines() if line.startswith("Tag:")]
    for name in AARCH64_WHEELS:
        assert name in tags, f"{name} is not installed"
        assert all(t.endswith("aarch64") and "manylinux" in t for t in tags[name]), f"{name}: {tags[name]}"
    assert tags["gpiozero"] == ["py3-none-any"]
    # PyAudio has no aarch64 wheel: pip built it in the root against portaudio19-dev.
    assert len(tags["pyaudio"]) == 1 and tags["pyaudio"][0].endswith("-linux_aarch64"), tags["pyaudio"]
    # And no library of another architecture slipped in (an amd64 wheel from a local folder, say).
    heads = {p: p.open("rb").read(20) for p in sp.rglob("*.so*") if p.is_file()}
    libs = {p: h for p, h in heads.items() if h[:4] == b"\x7fELF"}
    assert len(libs) > 10
    wrong = [str(p.relative_to(sp)) for p, h in libs.items() if int.from_bytes(h[18:20], "little") != EM_AARCH64]
    assert wrong == []


def test_engines_load_their_native_libraries_under_emulation(installed):
    root, _ = installed
    code = (
        "import json, vosk, pocketsphinx, pymicro_wakeword, webrtcvad, soxr, numpy, pyaudio, lgpio, gpiozero\n"
        "vosk.SetLogLevel(-1)\n"  # a call into libvosk.so
        "maps = open('/proc/self/maps').read()\n"
        "print(json.dumps({'libvosk': 'libvosk.so' in maps, 'libatomic': 'libatomic.so.1' in maps,\n"
        "                  'vad': webrtcvad.Vad(2).is_speech(bytes(320), 16000),\n"
        "                  'soxr': len(soxr.resample(numpy.zeros(480, dtype=numpy.float32), 48000, 16000))}))\n"
    )
    r = root.run("/opt/tallylight/venv/bin/python", "-c", code, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"libvosk": True, "libatomic": True, "vad": False, "soxr": 160}


def test_installed_listen_hears_the_wake_word_and_the_command(installed, synth):
    root, _ = installed
    clip = synth("okay nabu. turn on the light", lead_s=1.0, tail_s=1.5)
    shutil.copy(clip, root.path / "root/command.wav")
    t0 = time.monotonic()
    r = root.run("/opt/tallylight/venv/bin/tallylight", "listen", "--json", "/root/command.wav",
                 "--config", "/etc/tallylight/tallylight.toml", timeout=600)
    root.figures["listen"] = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    events = [json.loads(line) for line in r.stdout.splitlines()]
    wakes = [e for e in events if e["event"] == "wake"]
    assert [w["word"] for w in wakes] == ["okay nabu"], r.stdout
    intents = [e for e in events if e["event"] == "intent"]
    assert [i["name"] for i in intents] == ["light_on"], r.stdout
    assert any(e["event"] == "capture" and e["handed_to"] == "pocketsphinx" for e in events), r.stdout


def test_installed_unit_verifies_in_the_arm64_root(installed):
    root, _ = installed
    v = root.run("systemd-analyze", "verify", "/etc/systemd/system/tallylight.service", timeout=300)
    assert (v.returncode, v.stdout, v.stderr) == (0, "", "")


def test_second_run_changes_nothing_on_arm64(installed):
    root, _ = installed
    r = root.run("bash", "/root/tallylight/scripts/install.sh", "--no-vosk", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for step, result in steps(r.stdout).items():
        assert result.startswith(("nothing to do", "skipped")), f"{step}: {result}"
