"""scripts/bench runs and prints every table, and is built as it says: one module per table, each
registering itself, helpers in real modules, child processes that are real modules, nothing taken
from tests/. The runs are smoke tests only: they never look at the numbers (speed goals are judged by
the bench itself, on a quiet machine, not by a timed test)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bench import cli
from bench.common import TABLES, Ctx, Table, register

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

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
    11: "Home Assistant uplink",
}


def bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """scripts/bench's own command (`python -B -m bench`, in the checkout) with this interpreter."""
    return subprocess.run([sys.executable, "-B", "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_quick_bench_prints_every_table():
    r = bench("--quick")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "## tallylight bench" in out and "cores" in out and "python" in out
    for n, heading in HEADINGS.items():
        assert re.search(rf"^### {n}\. {re.escape(heading)}", out, re.M), f"table {n} missing:\n{out}"
    # Every table states its goal and a verdict (or why it has none / was skipped), and none failed.
    assert out.count("\nGoal: ") == len(HEADINGS)
    assert "— **ERROR**" not in out, out
    assert "Traceback" not in out + r.stderr


@pytest.mark.slow
def test_only_picks_tables_and_rejects_bad_numbers():
    r = bench("--quick", "--only", "3")
    assert r.returncode == 0, r.stderr
    assert "### 3. " in r.stdout and "### 1. " not in r.stdout and "### 6. " not in r.stdout
    bad = bench("--only", "12", timeout=60)  # one past the last table
    assert bad.returncode != 0 and "1-11" in bad.stderr and "Traceback" not in bad.stderr


def test_one_table_by_name_or_number():
    r = bench("--quick", "ledger", timeout=300)  # table 10: a few seconds
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^### (\d+)\. ", r.stdout, re.M) == ["10"]
    assert cli.choose(cli.load_tables(), "", ["8", "wake"]) == [3, 4]  # 8 is printed within 4
    unknown = bench("nosuchtable", timeout=60)
    assert unknown.returncode != 0 and "scripts/bench --list" in unknown.stderr and "Traceback" not in unknown.stderr


def test_list_names_every_registered_table_and_its_module():
    r = bench("--list", timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(HEADINGS)
    for line, (n, heading) in zip(lines, sorted(HEADINGS.items())):
        assert line.split()[0] == str(n) and heading in line and "[bench/table_" in line


def test_each_table_module_registers_its_one_table():
    tables = cli.load_tables()
    assert {n: spec.heading for n, spec in tables.items()} == HEADINGS
    modules = sorted(p.stem for p in BENCH.glob("table_*.py"))
    by_module = {}
    for spec in tables.values():
        by_module.setdefault(spec.module, []).append(spec.number)
    assert sorted(by_module) == [f"bench.{m}" for m in modules], "every bench/table_*.py registers a table, and only they"
    assert all(len(numbers) == 1 for numbers in by_module.values()), by_module
    assert tables[4].also == (8,)


def test_a_table_number_or_name_taken_twice_is_refused():
    def measure(ctx: Ctx) -> Table:
        raise AssertionError("never run")

    for number, name in ((10, "another"), (11, "ledger"), (8, "eight")):
        with pytest.raises(ValueError, match="clashes with table"):
            register(number, name, "a clash")(measure)
    assert all(spec.measure is not measure for spec in TABLES.values())


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.append(node.module or "")
    return out


def test_nothing_comes_from_tests_or_from_python_in_strings():
    for path in [*BENCH.rglob("*.py"), *(ROOT / "testkit").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        uses_sys_path = any(isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name)
                            and n.value.id == "sys" for n in ast.walk(ast.parse(text)))
        assert not uses_sys_path, f"{rel} changes sys.path: import from the checkout's packages instead"
        assert not re.search(r'sys\.executable, "-c"|exec\(compile|textwrap\.dedent\(\s*"""\s*\n\s*(import|from|#)', text), \
            f"{rel} runs Python held in a string: make it a module of bench.children"
        assert not any(m.split(".")[0] in ("tests", "conftest") for m in _imports(path)), f"{rel} imports from tests/"


def test_child_processes_are_modules_that_load_nothing_of_the_bench():
    # What a child measures (RSS, start-up, imports) must be the measured program's, not the bench's.
    children = sorted((BENCH / "children").glob("*.py"))
    assert {p.stem for p in children} >= {"daemon_driver", "pa_init_probe", "start_phases_probe", "listen_memory",
                                          "run_imports"}
    for path in children:
        bench_imports = [m for m in _imports(path) if m.split(".")[0] in ("bench", "testkit", "numpy")]
        assert not bench_imports, f"{path.relative_to(ROOT)} imports {bench_imports}"
        if path.stem != "__init__":
            assert 'if __name__ == "__main__":' in path.read_text() or path.stem == "run_imports", path
    # and each is started with python -m by the module that uses it
    started = "\n".join(p.read_text() for p in BENCH.glob("*.py"))
    for path in children:
        if path.stem != "__init__":
            assert f'"bench.children.{path.stem}"' in started, f"nothing starts bench.children.{path.stem}"


def test_the_bench_and_testkit_stay_out_of_the_installed_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["where"] == ["device"]
    assert not (ROOT / "device" / "bench").exists() and not (ROOT / "device" / "testkit").exists()
    for path in (ROOT / "device" / "tallylight").rglob("*.py"):
        assert not any(m.split(".")[0] in ("bench", "testkit") for m in _imports(path)), path


@pytest.mark.parametrize("module", sorted(f"bench.{p.stem}" for p in BENCH.glob("*.py") if p.stem != "__main__"))
def test_each_bench_module_imports_alone(module):
    run = subprocess.run([sys.executable, "-B", "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, f"import {module} failed on its own:\n{run.stderr[-2000:]}"
    importlib.import_module(module)


def test_table_6_times_the_actions_of_every_run_in_one_process(tmp_path):
    """Table 6 runs the daemon once per recognizer in one process. Its timed ActionRunner must reach
    each run's Responder: it once reached only the first (the Responder holds the name it imported),
    and every later run reported no action at all."""
    from bench.inputs import base_config, command_clips
    from bench.table_action import action_run

    cfg = base_config(tmp_path / "state", reply={"enabled": False, "sounds": False})
    clips = command_clips(("en-us",), [("turn on the light", "light_on")])
    runs = [action_run(cfg, clips) for _ in range(2)]
    assert [(r["right"], r["missed"]) for r in runs] == [(1, []), (1, [])]
