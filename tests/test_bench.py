"""scripts/bench runs and prints every table. A smoke test only: it never looks at the numbers
(speed goals are judged by the bench itself, on a quiet machine, not by a timed test)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

HEADINGS = {
    1: "CPU seconds per audio second while listening",
    2: "Mute latency",
    3: "Wake latency after the end of the wake word",
    4: "RSS while listening",
    5: "Time from start to listening",
    6: "End of speech to action",
    7: "Recognizer CPU per audio second",
    9: "Memory over many commands",
    10: "Ledger check at start",
}


def test_quick_bench_prints_every_table(repo):
    r = subprocess.run([sys.executable, str(repo / "scripts" / "bench.py"), "--quick"], cwd=repo,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "## tallylight bench" in out and "cores" in out and "python" in out
    for n, heading in HEADINGS.items():
        assert re.search(rf"^### {n}\. {re.escape(heading)}", out, re.M), f"table {n} missing:\n{out}"
    # Every table states its goal and a verdict (or why it has none / was skipped), and none failed.
    assert out.count("\nGoal: ") == len(HEADINGS)
    assert "— **ERROR**" not in out, out
    assert "Traceback" not in out + r.stderr


def test_only_picks_tables_and_rejects_bad_numbers(repo):
    r = subprocess.run([sys.executable, str(repo / "scripts" / "bench.py"), "--quick", "--only", "3"], cwd=repo,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "### 3. " in r.stdout and "### 1. " not in r.stdout and "### 6. " not in r.stdout
    bad = subprocess.run([sys.executable, str(repo / "scripts" / "bench.py"), "--only", "11"], cwd=repo,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "1-10" in bad.stderr and "Traceback" not in bad.stderr
