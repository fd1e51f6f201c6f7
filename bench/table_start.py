"""Table 5: time from start to listening (READY=1 on a real NOTIFY_SOCKET): the daemon runs of
bench.daemon_runs."""

from __future__ import annotations

import statistics
import subprocess
import sys

from bench.common import ROOT, Ctx, Table, register, verdict
from bench.daemon_runs import NO_A52, measure_processes


@register(5, "start", "Time from start to listening")
def table_start(ctx: Ctx) -> Table:
    t = Table(5, "Time from start to listening (issue 2)", "<= 1.5 s (median)",
              ["process", "runs", "median s", "min s", "max s", "result"])
    runs = measure_processes(ctx)
    if isinstance(runs, str):
        t.verdict = "SKIPPED"
        t.notes.append(runs)
        return t
    ok_all = True
    for name, rs in runs.items():
        ready = [r.ready_s for r in rs if r.ready_s is not None]
        if not ready:
            t.rows.append([name, 0, "-", "-", "-", "ERROR"])
            ok_all = False
            continue
        med = statistics.median(ready)
        judged = "vosk" not in name and name != NO_A52
        ok_all &= med <= 1.5 or not judged
        t.rows.append([name, len(ready), med, min(ready), max(ready), verdict(med <= 1.5) if judged else "(not judged)"])
    t.verdict = verdict(ok_all)
    t.notes.append("subprocess start -> READY=1 received on a unix datagram NOTIFY_SOCKET; the daemon sends it once "
                   "the first audio block came from the open mic (PulseAudio null sink, kept busy)")
    t.block += ctx.start_phases
    if not ok_all and not ctx.quick:
        t.block += [""] + import_breakdown()
    return t


def import_breakdown(top: int = 12) -> list[str]:
    """python -X importtime of what `tallylight run` imports before it listens."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "bench.children.run_imports"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    rows = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        name = name[1:]  # one space after the bar; more mean a nested import
        rows.append((int(cum_us), int(self_us), name))
    top_level = sorted((r for r in rows if not r[2].startswith(" ")), reverse=True)[:top]
    total = sum(r[0] for r in rows if not r[2].startswith(" ")) / 1e6
    lines = [f"Import time of what `run` imports (python -X importtime, top-level modules, cumulative; {total:.2f} s in all):"]
    lines += [f"  {cum / 1e6:6.3f} s  {name.strip()}" for cum, _, name in top_level]
    return lines
