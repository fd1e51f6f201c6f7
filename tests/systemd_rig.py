"""A real systemd as PID 1 in private namespaces, for testing units for real (root only).

    rig = SystemdRig(workdir)            # workdir is bound at /run/rig inside
    rig.add_unit("x.service", text)
    rig.add_user("tallylight", groups=["audio", "gpio"])   # in the rig's own /etc/passwd and /etc/group
    rig.boot()
    rig.systemctl("start", "x.service")
    rig.show("x.service", "ActiveState", "MainPID")  -> {"ActiveState": "active", ...}
    rig.close()                          # kills the whole namespace; safe to call twice

How (see ../shared/notes/testing-real-parts.md): `unshare --pid --fork --mount --uts --ipc --net
--cgroup --propagation private`, then inside: a fresh /proc, tmpfs on /run, cgroup2 on
/sys/fs/cgroup (a child cgroup of ours made for the rig, removed afterwards), the work folder bound on
/var/lib (so StateDirectory= lands in it and the host can read it), tmpfs on the rest of /var, and
copies of /etc/passwd and /etc/group bound over the real ones (so users and groups the unit needs
exist only inside). systemd reads units only from the work folder's units/ (SYSTEMD_UNIT_PATH), where
empty stand-ins for the standard targets are put, so nothing of the host's is started. There is no
journald: give test units StandardOutput=append:/run/rig/FILE.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

SYSTEMD = "/lib/systemd/systemd"
INSIDE = Path("/run/rig")
# Targets that services' default dependencies and our unit refer to; empty here on purpose.
_STUB_TARGETS = ("rig.target", "sysinit.target", "basic.target", "shutdown.target", "sound.target",
                 "multi-user.target", "network.target", "network-online.target")


def unavailable() -> str | None:
    """Why this machine cannot run the rig, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (CI runs as root)"
    for tool in ("unshare", "nsenter", "mount"):
        if not shutil.which(tool):
            return f"needs {tool} (apt-get install util-linux mount)"
    if not os.access(SYSTEMD, os.X_OK):
        return f"needs {SYSTEMD} (apt-get install systemd)"
    if _cgroup2_mount() is None:
        return "needs a cgroup2 (unified) hierarchy"
    return None


def _cgroup2_mount() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return Path(left.split()[4])
    return None


def _own_cgroup() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return "/"


class SystemdRig:
    """systemd as PID 1 of its own pid/mount/net/ipc/uts/cgroup namespaces."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.units = self.workdir / "units"
        self.var_lib = self.workdir / "var-lib"
        for d in (self.units, self.var_lib):
            d.mkdir(parents=True, exist_ok=True)
        # Services running as an unprivileged user read their files through /run/rig.
        for d in (self.workdir, self.var_lib):
            d.chmod(0o755)
        for t in _STUB_TARGETS:
            (self.units / t).write_text(f"[Unit]\nDescription=rig stand-in for {t}\n")
        shutil.copy("/etc/passwd", self.workdir / "passwd")
        shutil.copy("/etc/group", self.workdir / "group")
        self.pid: int | None = None  # systemd's pid as the host sees it
        self._outer: subprocess.Popen | None = None
        self._cgroup: Path | None = None
        self._log = None

    def inside(self, host_path: Path | str) -> str:
        """The path under which the rig's services see a file in the work folder."""
        return str(INSIDE / Path(host_path).relative_to(self.workdir))

    def add_unit(self, name: str, text: str) -> None:
        (self.units / name).write_text(text)
        if self.pid is not None:
            self.systemctl("daemon-reload", check=True)

    def add_user(self, name: str, groups: tuple[str, ...] | list[str] = (), uid: int = 61234) -> None:
        """A system user (and its group) that exists only inside the rig; missing groups are made."""
        passwd, group = self.workdir / "passwd", self.workdir / "group"
        with passwd.open("a") as f:
            f.write(f"{name}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n")
        lines = group.read_text().splitlines()
        lines.append(f"{name}:x:{uid}:")
        next_gid = uid + 1
        for g in groups:
            for i, line in enumerate(lines):
                fields = line.split(":")
                if fields[0] == g:
                    members = [m for m in fields[3].split(",") if m] + [name]
                    lines[i] = ":".join(fields[:3] + [",".join(members)])
                    break
            else:
                lines.append(f"{g}:x:{next_gid}:{name}")
                next_gid += 1
        group.write_text("\n".join(lines) + "\n")

    def boot(self, timeout: float = 30) -> None:
        """Start systemd and wait until it answers `is-system-running`."""
        why = unavailable()
        if why:
            raise RuntimeError(f"cannot boot the systemd rig: {why}")
        root = _cgroup2_mount()
        self._cgroup = root / _own_cgroup().lstrip("/") / f"tallylight-rig-{os.getpid()}-{id(self)}"
        self._cgroup.mkdir()
        w = shlex.quote(str(self.workdir))
        boot = f"""set -e
mount -t proc proc /proc
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p {INSIDE}
mount --bind {w} {INSIDE}
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount --bind {w}/var-lib /var/lib
for d in /var/log /var/cache /var/tmp; do mount -t tmpfs tmpfs "$d"; done
mount --bind {w}/passwd /etc/passwd
mount --bind {w}/group /etc/group
export SYSTEMD_UNIT_PATH={INSIDE}/units
exec {SYSTEMD} --system --unit=rig.target --log-target=console --log-level=info
"""
        (self.workdir / "boot.sh").write_text(boot)
        self._log = open(self.workdir / "systemd.log", "ab")  # noqa: SIM115 (systemd writes it until close())
        # Join the rig's cgroup first, so the cgroup namespace (and systemd's tree) is rooted there.
        cmd = ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && exec unshare --pid --fork --mount --uts --ipc '
               '--net --cgroup --propagation private sh "$2"', "rig", str(self._cgroup),
               str(self.workdir / "boot.sh")]
        self._outer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._outer.poll() is not None:
                raise RuntimeError(f"the systemd rig exited at once; see {self.workdir / 'systemd.log'}")
            if self.pid is None:
                self.pid = self._find_systemd()
            if self.pid is not None:
                state = self.run("systemctl", "is-system-running").stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"systemd did not come up within {timeout:g} s; see {self.workdir / 'systemd.log'}")

    def _find_systemd(self) -> int | None:
        try:
            children = Path(f"/proc/{self._outer.pid}/task/{self._outer.pid}/children").read_text().split()
        except OSError:
            return None
        for c in children:
            try:
                if Path(f"/proc/{c}/exe").resolve() == Path(SYSTEMD).resolve():
                    return int(c)
            except OSError:
                pass
        return None

    def run(self, *cmd: str, check: bool = False, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command inside all of the rig's namespaces."""
        return subprocess.run(["nsenter", "-t", str(self.pid), "-a", *cmd], capture_output=True, text=True,
                              check=check, timeout=timeout, env=env)

    def systemctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *[f"--property={p}" for p in props], check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait(self, unit: str, until: Callable[[dict[str, str]], bool], props: tuple[str, ...],
             timeout: float = 60) -> dict[str, str]:
        """Poll `systemctl show` until `until(props)` holds; returns the last reading either way."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.show(unit, *props)
            if until(got) or time.monotonic() > deadline:
                return got
            time.sleep(0.25)

    def close(self) -> None:
        """Kill systemd (and so its whole pid namespace) and remove the rig's cgroups."""
        if self._outer is not None:
            if self.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            try:
                self._outer.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._outer.kill()
                self._outer.wait()
            self._outer = None
        if self._cgroup is not None and self._cgroup.exists():
            deadline = time.monotonic() + 10
            while True:
                try:
                    for d in sorted(self._cgroup.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                        if d.is_dir():
                            d.rmdir()
                    self._cgroup.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # a process is still dying; the empty cgroup is harmless
                    time.sleep(0.2)
            self._cgroup = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.pid = None
