"""Lint is part of the suite: `ruff check` with the rules in pyproject.toml finds nothing."""

from __future__ import annotations

import subprocess
import sys


def test_ruff_finds_nothing(repo):
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", str(repo)],
                       capture_output=True, text=True, cwd=repo, timeout=300)
    assert r.returncode == 0, f"ruff check found problems (ruff check --fix mends many):\n{r.stdout}{r.stderr}"
