"""What every table of the bench shares: the registry of tables, the context they share, the table
printer and its number formatting, timing, and the measurement of child processes (start to READY=1,
RSS and its breakdown by mapping, a child module's JSON answer).

A table is one module `bench/table_*.py` whose measuring function is decorated with `@register(...)`:
`bench.cli` imports every such module, so a new table is that one module.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the checkout


# ------------------------------------------------------------------------------------ the registry


@dataclass
class Ctx:
    tmp: Path
    quick: bool
    profile: bool
    process_runs: Any = None
    process_work: Path | None = None
    hold_s: float = 2.0
    pa_init: dict | None = None
    start_phases: list[str] = field(default_factory=list)
    vosk_en: tuple[Path | None, str] | None = None


@dataclass(frozen=True)
class TableSpec:
    number: int
    name: str  # `scripts/bench NAME` runs this table alone
    heading: str  # how the printed title begins ("### N. heading...")
    measure: Callable[[Ctx], Table]
    also: tuple[int, ...] = ()  # other table numbers printed as part of this one (8 is in 4)

    @property
    def module(self) -> str:
        return self.measure.__module__


TABLES: dict[int, TableSpec] = {}


def register(number: int, name: str, heading: str,
             also: tuple[int, ...] = ()) -> Callable[[Callable[[Ctx], Table]], Callable[[Ctx], Table]]:
    """Registers the decorated function as table `number`; a number or name taken twice is refused."""

    def add(measure: Callable[[Ctx], Table]) -> Callable[[Ctx], Table]:
        taken = [s for s in TABLES.values() if s.measure is not measure and
                 (s.number == number or s.name == name or number in s.also or s.number in also)]
        if taken:
            raise ValueError(f"table {number} ({name}) clashes with table {taken[0].number} ({taken[0].name}) "
                             f"of {taken[0].module}")
        TABLES[number] = TableSpec(number, name, heading, measure, also)
        return measure

    return add


# ------------------------------------------------------------------------------------ printing


@dataclass
class Table:
    number: int
    title: str
    goal: str
    columns: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    verdict: str = ""  # "PASS" / "MISS" / "" (no goal) / "SKIPPED"
    notes: list[str] = field(default_factory=list)
    block: list[str] = field(default_factory=list)  # preformatted lines (a profile), printed last

    def print(self, out=sys.stdout) -> None:
        out.write(f"\n### {self.number}. {self.title}\n\n")
        out.write(f"Goal: {self.goal}" + (f" — **{self.verdict}**" if self.verdict else "") + "\n\n")
        if self.rows:
            cells = [[_cell(c) for c in row] for row in self.rows]
            widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(self.columns)]
            out.write("| " + " | ".join(h.ljust(w) for h, w in zip(self.columns, widths)) + " |\n")
            out.write("|" + "|".join("-" * (w + 2) for w in widths) + "|\n")
            for r in cells:
                out.write("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |\n")
            out.write("\n")
        for note in self.notes:
            out.write(f"- {note}\n")
        if self.block:
            out.write("\n```\n" + "\n".join(self.block) + "\n```\n")
        out.flush()


def _cell(v: Any) -> str:
    if isinstance(v, float):
        a = abs(v)
        return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3g}"
    return str(v)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def pct(values: Sequence[float], p: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), p)) if len(values) else float("nan")


def header() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"## tallylight bench ({now})\n\n"
            f"- machine: {cpu}, {os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}\n"
            f"- python {platform.python_version()}; commit {commit or '?'}; load average at start {load}\n")


# ------------------------------------------------------------------------------------ timing


@contextlib.contextmanager
def timed_methods(targets: Sequence[tuple[type, str]]):
    """Time methods in place (CPU, inclusive) for one diagnostic run; yields {name: [seconds, calls]}.
    Instrumentation for the report only: the measured rounds above run the code untouched."""
    acc: dict[str, list[float]] = {}
    saved = []
    for cls, name in targets:
        orig = cls.__dict__[name]
        key = f"{cls.__name__}.{name}"
        acc[key] = [0.0, 0]

        def timed(self, *a, _orig=orig, _slot=acc[key], **k):
            c0 = time.process_time()
            try:
                return _orig(self, *a, **k)
            finally:
                _slot[0] += time.process_time() - c0
                _slot[1] += 1

        saved.append((cls, name, orig))
        setattr(cls, name, timed)
    try:
        yield acc
    finally:
        for cls, name, orig in saved:
            setattr(cls, name, orig)


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# ------------------------------------------------------------------------------------ child processes


@dataclass
class StartRun:
    ready_s: float | None
    rss_mb: float | None
    hwm_mb: float | None
    error: str = ""
    mappings: dict[str, float] = field(default_factory=dict)


def rss_by_mapping(pid: int) -> dict[str, float]:
    """Resident MiB per mapped file (anonymous memory as [anon], [heap], [stack]) from /proc/PID/smaps."""
    out: dict[str, float] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(None, 1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            parts = line.split(None, 5)
            name = parts[5].strip() if len(parts) > 5 else "[anon]"
        elif first == "Rss:":
            out[name] = out.get(name, 0.0) + int(line.split()[1]) / 1024
    return out


def proc_status(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def start_and_measure(cmd: list[str], env: dict[str, str], sock_dir: Path, hold_s: float,
                      ready_timeout: float = 60) -> StartRun:
    """Start `cmd` with a NOTIFY_SOCKET, time it to READY=1, let it listen `hold_s`, read its RSS, stop it."""
    path = sock_dir / "notify"
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    err_path = sock_dir / "stderr.txt"
    try:
        with open(err_path, "w") as err:
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, env=dict(env, NOTIFY_SOCKET=str(path)), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=err)
        try:
            ready = None
            deadline = t0 + ready_timeout
            while ready is None and time.monotonic() < deadline and proc.poll() is None:
                sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
                try:
                    msg = sock.recv(4096).decode(errors="replace")
                except TimeoutError:
                    continue
                if "READY=1" in msg.split("\n"):
                    ready = time.monotonic() - t0
            if ready is None:
                how = f"exited {proc.returncode}" if proc.poll() is not None else "timeout"
                return StartRun(None, None, None, f"no READY=1 ({how}): "
                                f"{err_path.read_text()[-400:].strip()}")
            time.sleep(hold_s)  # listening to the hiss on the mic
            if proc.poll() is not None:
                return StartRun(ready, None, None, f"exited {proc.returncode}: {err_path.read_text()[-400:].strip()}")
            st = proc_status(proc.pid)
            return StartRun(ready, st.get("VmRSS"), st.get("VmHWM"), mappings=rss_by_mapping(proc.pid))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def rss_breakdown(name: str, mappings: dict[str, float], top: int = 10) -> list[str]:
    """The largest resident parts of one process, grouped by package (site-packages/NAME) or library."""
    groups: dict[str, float] = {}
    for path, mib in mappings.items():
        if "site-packages/" in path:
            key = "site-packages/" + path.split("site-packages/", 1)[1].split("/", 1)[0]
        elif path.startswith("/"):
            key = Path(path).name
        else:
            key = path
        groups[key] = groups.get(key, 0.0) + mib
    total = sum(groups.values())
    lines = [f"{name}: resident {total:.1f} MiB by mapping (/proc/PID/smaps), largest first:"]
    lines += [f"  {mib:6.1f} MiB  {key}" for key, mib in sorted(groups.items(), key=lambda kv: -kv[1])[:top]]
    return lines + [""]



def run_child_json(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 3600,
                   options: Sequence[str] = ()) -> Any:
    """Runs `python [options] -m MODULE ARGS...` in the checkout (a module of bench.children) and returns
    the JSON of the last line it printed; RuntimeError with its exit status and stderr's end if none."""
    r = subprocess.run([sys.executable, *options, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"the child process failed (exit {r.returncode}): {r.stderr.strip()[-400:]}") from None
