"""A real Debian bookworm root for install tests: debootstrap, this machine's network settings, and
/proc, /sys and /dev bound in; taken down so that nothing of the host can be deleted through it.

Used by test_install.py (amd64, this machine's own architecture) and test_install_arm64.py (arm64
under qemu emulation). Needs root and debootstrap; the callers skip with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# python3 (Raspberry Pi OS Lite has it) and systemd (to verify the unit); the installer itself must
# bring python3-venv, the compiler and the libraries.
INCLUDE = "python3,systemd,ca-certificates"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (CI may only reach the registries through it)."""
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in f.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines() if line.split()[1].startswith(prefix)]


def chroot_env() -> dict[str, str]:
    """A clean environment for programs in the root, with this machine's pip settings (certificate,
    index, timeouts) but not its local wheel folder (which is not in the root)."""
    env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_") and k != "PIP_FIND_LINKS"})
    return env


@contextmanager
def debian_root(path: Path, arch: str | None = None, timeout: float = 1500) -> Iterator[float]:
    """Debootstrap bookworm (minbase) at `path` and bind /proc, /sys and /dev into it; yields the
    seconds debootstrap took. On the way out the mounts go, and the root is deleted only when
    nothing is mounted beneath it any more (else rmtree would reach the host's /dev or /sys)."""
    t0 = time.monotonic()
    r = subprocess.run(["debootstrap", *([f"--arch={arch}"] if arch else []), "--variant=minbase", f"--include={INCLUDE}",
                        "bookworm", str(path), debian_mirror()], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"debootstrap failed ({r.returncode}): {r.stdout[-3000:]}{r.stderr[-3000:]}")
    took = time.monotonic() - t0
    shutil.copy("/etc/resolv.conf", path / "etc/resolv.conf")
    # This machine may reach the registries through a TLS proxy whose CA only its own bundle holds,
    # and its pip configuration names the index and the constraints.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", path / "etc/ssl/certs/ca-certificates.crt")
    if Path("/etc/pip.conf").exists():
        shutil.copy("/etc/pip.conf", path / "etc/pip.conf")
    if Path("/etc/xdg/pip").is_dir():
        shutil.copytree("/etc/xdg/pip", path / "etc/xdg/pip", dirs_exist_ok=True)
    try:
        for src in ("/proc", "/sys", "/dev"):
            dst = path / src.lstrip("/")
            subprocess.run(["mount", "--rbind", src, str(dst)], check=True)
            subprocess.run(["mount", "--make-rslave", str(dst)], check=True)
        yield took
    finally:
        for m in ("dev", "sys", "proc"):
            subprocess.run(["umount", "-R", "-l", str(path / m)], capture_output=True, check=False)
        if not mounts_under(path):
            shutil.rmtree(path, ignore_errors=True)
