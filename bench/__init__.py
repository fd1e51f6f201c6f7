"""tallylight's benchmark: speed and memory goals from issues 2 and 3, printed as tables.

Not a test: it asserts nothing and only prints. Each table names its goal and says PASS or MISS.
Ratios are measured side by side in one run, interleaved round by round, and medians are printed,
because the build machine is a shared, noisy 2-core box: CPU is counted with process_time (CPU
seconds, not wall time), over several rounds.

  scripts/bench                 all tables (about 13 minutes here)
  scripts/bench --quick         small sizes (the smoke test in tests/test_bench.py)
  scripts/bench --list          the tables, by number and name
  scripts/bench ledger 3        some tables, by name or number (8 is printed with 4)
  scripts/bench --only 1,3      the same, by number
  scripts/bench --profile       also profile the daemon loop (cProfile) under table 1

The package: one module per table (table_*.py, each registering itself with bench.common.register),
the helpers they share in bench/common.py (the registry, the printer, timing, child processes and
their RSS) and bench/inputs.py (speech, configs, models), the daemon runs tables 4 and 5 share in
bench/daemon_runs.py, and the programs run as child processes in bench/children/. It lives beside
tests/ in the checkout and is never installed (setuptools packages device/ only); its speech, mic rig
and vosk test model come from testkit/, which the tests use too.

Speech is made by testkit/speech.py into its cache under /tmp, and every other file (ledgers, configs,
WAVs) goes to a temporary folder that is removed at the end. The one thing kept in the checkout is the
English vosk test model (testkit/vosk_english.py, about 78 MB in .venv/test-models/, fetched on the
first full run; TALLYLIGHT_TEST_MODELS puts it elsewhere): vosk is measured with it beside
pocketsphinx, and only pocketsphinx is judged against the goals (users do not get that model).
"""
