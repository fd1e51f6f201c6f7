"""SIGTERM and SIGINT reach the daemon's stop without running it inside a signal handler.

A Python signal handler runs on the main thread wherever it is; the daemon's main thread is mostly
inside `threading.Event.wait()`, and at moments holds that Event's lock. The old handler set Events
(`Daemon.request_stop`) and then waited for that lock for ever: Ctrl-C or `systemctl stop` hung the
daemon about one time in ten. Each test runs in a process of its own (signal handlers are
per-process, and a hang must fail the test, not the run).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

HOLDING = textwrap.dedent("""
    import os, signal, sys, threading, time
    {setup}
    # The main thread holds the lock the stop needs, as the daemon's loop does inside Event.wait(),
    # when the signal comes. A handler that takes that lock never returns.
    with {lock}:
        os.kill(os.getpid(), signal.{signal})
        time.sleep(0.3)  # Python runs its handler here, at the next bytecode
    print("main thread went on", flush=True)
    print("stopped" if {stopped}.wait(5) else "not stopped", flush=True)
""")


def _run(setup: str, lock: str, stopped: str, sig: str) -> list[str]:
    code = HOLDING.format(setup=textwrap.dedent(setup), lock=lock, stopped=stopped, signal=sig)
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("the process hung: the signal's handler waited for a lock its own thread held") from None
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return r.stdout.splitlines()


def test_call_on_signals_runs_the_callback_off_the_main_thread():
    setup = """
    from tallylight.signals import call_on_signals
    lock, stopped = threading.Lock(), threading.Event()
    def stop(signum):
        with lock:
            if threading.current_thread() is not threading.main_thread():
                stopped.set()
    call_on_signals(stop)
    """
    for sig in ("SIGTERM", "SIGINT"):
        assert _run(setup, "lock", "stopped", sig) == ["main thread went on", "stopped"]


def test_the_daemon_stops_on_a_signal_that_comes_while_its_main_thread_holds_an_events_lock(tmp_path):
    setup = f"""
    from tallylight.config import from_dict
    from tallylight.daemon import Daemon
    daemon = Daemon(from_dict({{"gpio": {{"pin_factory": "mock"}}, "daemon": {{"state_dir": {str(tmp_path)!r}}}}}))
    daemon.install_signal_handlers()
    """
    # Event._cond is the lock Event.wait() holds between its waits (CPython's threading.Event).
    for sig in ("SIGTERM", "SIGINT"):
        assert _run(setup, "daemon._stopping._cond", "daemon._stopping", sig) == ["main thread went on", "stopped"]
