"""Table 10: the ledger check at start, the whole chain of 100,000 entries, against the checks before it."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, Ctx, Table, register, verdict

# The ledger module before the daemon checked the whole chain at start (issue 13): its start read only
# the last line and the head. Taken from git, so the old and new checks run side by side on one file.
LEDGER_BEFORE = "212e95f"


def _ledger_before(folder: Path) -> Any:
    """ledger.py as it was at LEDGER_BEFORE, written into `folder` and imported from there as the module
    `ledger_before`; None without git or that commit (a shallow clone, an export)."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{LEDGER_BEFORE}:device/tallylight/ledger.py"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    path = folder / "ledger_before.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("ledger_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module.__name__] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_big_ledger(path: Path, n: int) -> None:
    """n entries as `Ledger.append` writes them (the same canonical JSON, chain and head), made without
    n fsyncs and n head files: a daemon's states, captures and hand-overs, as in a day of use."""
    from tallylight import ledger as L

    kinds = [("state", {"state": "listening", "reason": "mute control", "previous_s": 12.345, "from": "muted"}),
             ("state", {"state": "capturing", "reason": "wake word", "previous_s": 3.21, "from": "listening"}),
             ("capture", {"duration_s": 2.34, "handed_to": "pocketsphinx", "end": "silence"}),
             ("state", {"state": "listening", "reason": "capture ended", "previous_s": 2.4, "from": "capturing"})]
    prev = L.GENESIS
    with open(path, "w", encoding="utf-8") as f:
        for seq in range(n):
            event, fields = kinds[seq % len(kinds)]
            entry = {"seq": seq, "time": "2026-12-03T12:00:00.000+00:00", "event": event, **fields, "prev": prev}
            entry["hash"] = prev = L._digest(entry)
            f.write(json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n")
    path.with_suffix(".head").write_text(json.dumps({"seq": n - 1, "hash": prev}) + "\n")


@register(10, "ledger", "Ledger check at start")
def table_ledger(ctx: Ctx) -> Table:
    from tallylight import ledger as L

    n = 20_000 if ctx.quick else 100_000
    rounds = 1 if ctx.quick else 3
    t = Table(10, f"Ledger check at start, {n:,} entries (issue 13)",
              "the whole chain checked at start in <= 1.5 s for 100,000 entries (years of use), "
              "no slower than the old `--verify`", ["check", "reads", "median s", "µs per entry", "vs old --verify"])
    path = ctx.tmp / "ledger-bench" / "ledger.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_big_ledger(path, n)
    if not L.verify(path).ok:
        raise RuntimeError(f"the bench's ledger does not verify: {L.verify(path).problems[:2]}")
    before = _ledger_before(ctx.tmp)

    def opened(module: Any) -> Callable[[], None]:
        return lambda: module.Ledger(path).close()

    def verified(module: Any) -> Callable[[], None]:
        return lambda: module.verify(path)

    checks: list[tuple[str, str, Callable[[], None]]] = []
    if before is not None:
        checks += [("start, before", "last line + head", opened(before)),
                   ("--verify, before", "whole file into memory, each line re-encoded", verified(before))]
    checks += [("start, now", "whole chain + head + witness, streamed", opened(L)),
               ("--verify, now", "the same check", verified(L))]
    times: dict[str, list[float]] = {name: [] for name, _, _ in checks}
    for _ in range(rounds):  # interleaved: the shared machine's load falls on all of them alike
        for name, _, fn in checks:
            t0 = time.process_time()
            fn()
            times[name].append(time.process_time() - t0)
    old_verify = statistics.median(times["--verify, before"]) if before is not None else None
    for name, reads, _ in checks:
        med = statistics.median(times[name])
        t.rows.append([name, reads, med, med / n * 1e6, f"{med / old_verify:.2f}x" if old_verify else "-"])
    start_now = statistics.median(times["start, now"]) * 100_000 / n
    ok = start_now <= 1.5 and (old_verify is None or statistics.median(times["start, now"]) <= old_verify)
    t.verdict = verdict(ok)
    t.notes.append(f"CPU seconds (process_time), median of {rounds} interleaved round(s); "
                   f"{path.stat().st_size / 1e6:.1f} MB of ledger; the old checks are ledger.py at {LEDGER_BEFORE} "
                   "(from git)" + ("" if before is not None else ": not available here (no git history), not measured"))
    if ctx.quick:
        t.notes.append(f"--quick: {n:,} entries, judged as {start_now:.2f} s per 100,000")
    t.notes.append("most of what is left is json.loads and CPython's own SHA-256 of every line "
                   "(hashlib's OpenSSL one is faster, but would load libcrypto into the daemon for good)")
    return t
