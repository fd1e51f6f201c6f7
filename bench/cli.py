"""scripts/bench's command line: finds the tables (every bench/table_*.py registers one), runs the
ones asked for in one process, side by side, and prints them."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import bench
from bench.common import TABLES, Ctx, Table, TableSpec, header
from testkit import speech


def load_tables() -> dict[int, TableSpec]:
    """Imports every table module (bench/table_*.py); each registers its table as it is imported."""
    for found in pkgutil.iter_modules(bench.__path__):
        if found.name.startswith("table_"):
            importlib.import_module(f"{bench.__name__}.{found.name}")
    return dict(sorted(TABLES.items()))


def choose(tables: dict[int, TableSpec], only: str, names: Sequence[str]) -> list[int]:
    """The table numbers asked for, by --only (numbers, comma-separated) and by number or name; a number
    printed within another table (8 within 4) picks that table. All tables when none is asked for."""
    owner = {n: spec.number for spec in tables.values() for n in (spec.number, *spec.also)}
    by_name = {spec.name: spec.number for spec in tables.values()}
    span = f"{min(owner)}-{max(owner)}"
    wanted: set[int] = set()
    if only:
        try:
            numbers = {int(x) for x in only.split(",") if x.strip()}
        except ValueError:
            raise SystemExit(f"scripts/bench: --only takes table numbers such as 1,3 ({span}), not {only!r}") from None
        if not numbers or numbers - set(owner):
            raise SystemExit(f"scripts/bench: --only takes table numbers {span}, not {only!r}")
        wanted |= {owner[n] for n in numbers}
    for name in names:
        if name.isdigit() and int(name) in owner:
            wanted.add(owner[int(name)])
        elif name in by_name:
            wanted.add(by_name[name])
        else:
            raise SystemExit(f"scripts/bench: no table {name!r}: give a number {span} or one of "
                             f"{', '.join(by_name)} (scripts/bench --list)")
    return sorted(wanted) if wanted else sorted(tables)


def listing(tables: dict[int, TableSpec]) -> str:
    width = max(len(spec.name) for spec in tables.values())
    return "\n".join(f"{spec.number:>2}  {spec.name:<{width}}  {spec.heading}"
                     + (f" (also table {', '.join(map(str, spec.also))})" if spec.also else "")
                     + f"  [{spec.module.replace('.', '/')}.py]" for spec in tables.values())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=bench.__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="*", metavar="TABLE", help="table numbers or names (scripts/bench --list); all when none")
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    ap.add_argument("--only", default="", help="comma-separated table numbers, e.g. 1,3 (8 is part of 4)")
    ap.add_argument("--profile", action="store_true", help="profile the daemon loop under table 1")
    ap.add_argument("--list", action="store_true", help="list the tables and exit")
    args = ap.parse_args(argv)
    tables = load_tables()
    if args.list:
        print(listing(tables))
        return 0
    chosen = choose(tables, args.only, args.tables)
    if not speech.have_tools():
        print("scripts/bench: espeak-ng and sox are needed to make test speech: run scripts/bench through "
              "scripts/setup.sh (it installs them), or apt-get install espeak-ng sox", file=sys.stderr)
        return 69
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # the daemons and probes it starts: no __pycache__ in the checkout
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    print(header())
    t_all = time.monotonic()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as tmp:
        ctx = Ctx(Path(tmp), args.quick, args.profile)
        try:
            for n in chosen:
                spec = tables[n]
                t0 = time.monotonic()
                try:
                    table = spec.measure(ctx)
                except Exception as e:  # one broken measurement must not hide the other tables
                    failed += 1
                    table = Table(n, spec.heading, "-", [], verdict="ERROR", notes=[f"{type(e).__name__}: {e}"])
                table.notes.append(f"(measured in {time.monotonic() - t0:.0f} s; load average after: "
                                   f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")
                table.print()
        finally:
            if ctx.process_work is not None:
                shutil.rmtree(ctx.process_work, ignore_errors=True)
    print(f"\nbench finished in {time.monotonic() - t_all:.0f} s")
    return 1 if failed else 0
