"""P7: the ledger is append-only and hash-chained; --verify detects edits, deletions, truncation."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallylight import ledger as L
from tallylight.errors import LedgerError


def make(tmp_path, n=5):
    path = tmp_path / "ledger.jsonl"
    led = L.Ledger(path)
    for i in range(n):
        led.append("state", state=["muted", "listening", "capturing"][i % 3], reason=f"r{i}")
    led.close()
    return path


def test_intact_ledger_verifies(tmp_path):
    path = make(tmp_path)
    v = L.verify(path)
    assert v.ok and v.entries == 5, v.problems


def test_reopen_continues_the_chain(tmp_path):
    path = make(tmp_path, 3)
    led = L.Ledger(path)
    assert led.last_entry["seq"] == 2
    led.append("stop", reason="x")
    led.close()
    assert L.verify(path).ok
    assert [json.loads(x)["seq"] for x in path.read_text().splitlines()] == [0, 1, 2, 3]


def test_never_holds_audio_fields(tmp_path):
    path = make(tmp_path)
    for line in path.read_text().splitlines():
        assert set(json.loads(line)) <= {"seq", "time", "event", "state", "reason", "prev", "hash"}


@pytest.mark.parametrize("tamper, expect", [
    (lambda lines: lines.__setitem__(2, lines[2].replace("capturing", "listening")), "edited"),
    (lambda lines: lines.pop(1), "removed"),
    (lambda lines: lines.pop(), "truncated"),
    (lambda lines: lines.insert(2, lines[2]), "sequence"),
    (lambda lines: lines.reverse(), "does not follow"),
])
def test_verify_detects_tampering(tmp_path, tamper, expect):
    path = make(tmp_path)
    lines = path.read_text().splitlines()
    tamper(lines)
    path.write_text("\n".join(lines) + "\n")
    v = L.verify(path)
    assert not v.ok
    assert any(expect in p for p in v.problems), v.problems


def test_partial_last_line_and_missing_head(tmp_path):
    path = make(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    assert any("incomplete" in p for p in L.verify(path).problems)
    path.write_bytes(data)
    path.with_suffix(".head").unlink()
    assert any("head file" in p for p in L.verify(path).problems)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_single_byte_edit_is_detected(tmp_path_factory, data):
    path = make(tmp_path_factory.mktemp("l"), 4)
    raw = bytearray(path.read_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]))
    raw[i] = new
    path.write_bytes(bytes(raw))
    assert not L.verify(path).ok


def test_damaged_ledger_is_kept_aside_and_a_new_chain_starts(tmp_path):
    path = make(tmp_path)
    with open(path, "ab") as f:
        f.write(b'{"half a line')
    led = L.Ledger(path)
    led.append("start")
    led.close()
    kept = [p for p in tmp_path.iterdir() if ".broken-" in p.name and not p.name.endswith(".head")]
    assert len(kept) == 1 and b"half a line" in kept[0].read_bytes()
    first = json.loads(path.read_text().splitlines()[0])
    assert first["event"] == "ledger_restarted" and first["previous"] == str(kept[0])
    # The new chain is whole, but verify still says that the record has a damaged part, and where.
    v = L.verify(path)
    assert v.entries == 2 and len(v.problems) == 1, v.problems
    assert "line 1: a new chain starts here" in v.problems[0] and str(kept[0]) in v.problems[0]


def _kept(tmp_path):
    return [p for p in tmp_path.iterdir() if ".broken-" in p.name and not p.name.endswith(".head")]


def test_ledger_cut_short_is_not_hidden_by_the_next_start(tmp_path):
    """Cutting whole lines off the end and restarting the daemon must not give a ledger that verifies:
    the head file disagrees, so the cut ledger is kept aside with its head, and verify says so."""
    path = make(tmp_path, 5)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]))
    led = L.Ledger(path)
    led.append("start")
    led.close()
    v = L.verify(path)
    assert not v.ok and "cut short" in v.problems[0], v.problems
    (kept,) = _kept(tmp_path)
    assert kept.read_text() == "".join(lines[:3])
    assert any("truncated" in p for p in L.verify(kept).problems)  # its own head came with it


def test_ledger_deleted_but_head_left_is_not_a_fresh_start(tmp_path):
    path = make(tmp_path, 4)
    path.unlink()
    led = L.Ledger(path)
    led.append("start")
    led.close()
    v = L.verify(path)
    assert not v.ok and "deleted or emptied" in v.problems[0], v.problems
    assert list(tmp_path.glob("ledger.broken-*.head"))


def test_head_one_entry_behind_is_a_crash_not_an_edit(tmp_path):
    """A crash between a line's fsync and its head's leaves the head one entry behind: continue."""
    path = make(tmp_path, 4)
    head = path.with_suffix(".head")
    line2 = json.loads(path.read_text().splitlines()[2])
    head.write_text(json.dumps({"seq": 2, "hash": line2["hash"]}) + "\n")
    led = L.Ledger(path)
    assert led.last_entry["seq"] == 3
    led.append("start")
    led.close()
    assert L.verify(path).ok and not _kept(tmp_path)


def test_append_that_fails_after_writing_does_not_fork_the_chain(tmp_path):
    """The line reached the file but its head could not be written (the head's temporary file cannot
    be created): the next append must continue after that line, not reuse its sequence number."""
    path = tmp_path / "ledger.jsonl"
    led = L.Ledger(path)
    led.append("start")
    blocker = tmp_path / "ledger.head.tmp"
    blocker.mkdir()  # open() of the head's temporary file now fails, after the line was fsynced
    with pytest.raises(LedgerError, match="cannot write the ledger"):
        led.append("state", state="listening", reason="x")
    blocker.rmdir()
    led.append("state", state="muted", reason="y")
    led.close()
    seqs = [json.loads(x)["seq"] for x in path.read_text().splitlines()]
    assert seqs == [0, 1, 2]
    assert L.verify(path).ok, L.verify(path).problems


def test_append_after_close_raises(tmp_path):
    led = L.Ledger(tmp_path / "ledger.jsonl")
    led.close()
    led.close()
    with pytest.raises(LedgerError, match="closed"):
        led.append("start")


def test_write_failure_raises_ledger_error(tmp_path):
    led = L.Ledger(tmp_path / "ledger.jsonl")
    led.append("start")
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, led._fd)  # the disk is now full, for real, under the ledger's own file descriptor
    os.close(full)
    with pytest.raises(LedgerError, match="cannot write the ledger"):
        led.append("state", state="listening")
    led.close()


def test_unwritable_state_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LedgerError, match="cannot open the ledger"):
        L.Ledger(blocker / "sub" / "ledger.jsonl")


def test_cli_ledger_timeline_and_verify(tmp_path):
    path = make(tmp_path)
    env = {**os.environ}
    def run(*a):
        return subprocess.run([sys.executable, "-m", "tallylight", "ledger", "--file", str(path), *a],
                                        capture_output=True, text=True, env=env, timeout=60)
    r = run()
    assert r.returncode == 0 and "CAPTURING" in r.stdout and "MUTED" in r.stdout
    r = run("--verify")
    assert r.returncode == 0 and "OK, 5 entries" in r.stdout
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    r = run("--verify")
    assert r.returncode == 1 and "truncated" in r.stdout


def test_cli_ledger_bad_files_give_one_line(tmp_path):
    def run(*a):
        return subprocess.run([sys.executable, "-m", "tallylight", "ledger", *a],
                                        capture_output=True, text=True, timeout=60)
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    for args in (["--file", str(folder)], ["--verify", "--file", str(folder)]):
        r = run(*args)
        assert r.returncode == 1 and "not a ledger file" in r.stdout + r.stderr, r
        assert "Traceback" not in r.stderr
    odd = tmp_path / "odd.jsonl"  # hand-edited fields of the wrong type
    odd.write_text('{"event":"capture","duration_s":"abc"}\n{"event":"state","state":"muted","previous_s":"x","from":"l"}\n'
                   '{"event":"debug_recording","duration_s":null}\n')
    r = run("--file", str(odd))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "captured ? s" in r.stdout and "MUTED" in r.stdout


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare to mount a read-only disk")
def test_damaged_ledger_on_a_read_only_disk_is_one_line(tmp_path):
    """The damaged ledger cannot be set aside on a read-only state_dir: a LedgerError naming the fix,
    not an OSError traceback; and nothing is lost."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f'mount -t tmpfs none "{disk}" && printf \'{{"half a line\' > "{disk}/ledger.jsonl" && '
        f'mount -o remount,ro "{disk}" && "{sys.executable}" -c "$1"; echo "rc=$?"; cat "{disk}/ledger.jsonl"'
    )
    prog = (
        "from tallylight.ledger import Ledger\n"
        "from tallylight.errors import LedgerError\n"
        f"try:\n    Ledger('{disk}/ledger.jsonl')\nexcept LedgerError as e:\n    print('ERROR', e)\n"
    )
    r = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", prog], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if "mount:" in r.stderr and "rc=" not in r.stdout:
        pytest.skip(f"cannot mount here: {r.stderr.strip()}")
    assert "Traceback" not in r.stderr, r.stderr
    assert "ERROR the ledger" in r.stdout and "cannot be set aside: Read-only file system" in r.stdout, r.stdout
    assert r.stdout.rstrip().endswith('{"half a line')  # still there, untouched


# ---- a deletion of both files, a replaced ledger, an edit in the middle (issue 13) -----------------


def _daemon_runs(path, states=("listening", "muted")):
    """What the daemon does to its ledger in one run: start and its witness, some states, stop and its witness."""
    led = L.Ledger(path)
    led.append("start", version="t", pid=1)
    led.write_witness()
    for s in states:
        led.append("state", state=s, reason="x")
    led.append("stop", reason="shutdown", state_before=states[-1])
    led.write_witness()
    led.close()
    return led


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "tallylight", *args], capture_output=True, text=True, timeout=timeout)


def test_the_witness_is_outside_the_state_dir_and_in_the_log(tmp_path, caplog):
    path = tmp_path / "state" / "ledger.jsonl"
    with caplog.at_level("INFO", logger="tallylight.ledger"):
        _daemon_runs(path)
    # The same head goes to the log at start and at stop: the journal, under systemd.
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["ledger head: entry 0", "ledger head: entry 3"]
    witness = tmp_path / "state-witness" / "ledger.witness"
    assert L.witness_path(path) == witness
    recorded = json.loads(witness.read_text())
    last = json.loads(path.read_text().splitlines()[-1])
    assert (recorded["seq"], recorded["hash"]) == (last["seq"], last["hash"]) == (3, L.verify(path).last_entry["hash"])
    v = L.verify(path)
    assert v.ok and v.witness == witness and "chain, head and witness intact" in v.summary(path)


def test_deleting_both_ledger_files_is_evident(tmp_path):
    """rm ledger.jsonl ledger.head: --verify says the history is gone (not "no ledger yet"), and the next
    start does not begin a chain that verifies as a first start."""
    state = tmp_path / "state"
    path = state / "ledger.jsonl"
    _daemon_runs(path)
    path.unlink()
    path.with_suffix(".head").unlink()
    v = L.verify(path)
    assert not v.ok and len(v.problems) == 1 and "history is gone" in v.problems[0], v.problems
    assert "records 4 entries" in v.problems[0]
    r = _cli("ledger", "--verify", "--file", str(path))
    assert r.returncode == 1 and "history is gone" in r.stdout and "Traceback" not in r.stderr, r
    r = _cli("ledger", "--file", str(path))
    assert r.returncode == 1 and "history is gone" in r.stderr and "yet" not in r.stderr, r
    _daemon_runs(path)  # the next start
    v = L.verify(path)
    assert not v.ok and len(v.problems) == 1, v.problems
    assert "line 1: a new chain starts here" in v.problems[0] and "history is gone" in v.problems[0]
    assert "nothing of that one was left to keep" in v.problems[0]
    first = json.loads(path.read_text().splitlines()[0])
    assert first["event"] == "ledger_restarted" and first["previous"] is None
    assert sorted(p.name for p in state.iterdir()) == ["ledger.head", "ledger.jsonl"]  # nothing was set aside


def test_removing_the_whole_state_dir_is_evident(tmp_path):
    state = tmp_path / "state"
    _daemon_runs(state / "ledger.jsonl")
    shutil.rmtree(state)
    assert "history is gone" in L.verify(state / "ledger.jsonl").problems[0]


def test_a_ledger_replaced_by_a_shorter_consistent_pair_is_set_aside(tmp_path):
    """Both files swapped for a fresh, self-consistent chain (what the daemon would make after a plain
    deletion): the witness records an entry it lacks. It is kept aside, never continued."""
    path = tmp_path / "state" / "ledger.jsonl"
    _daemon_runs(path, states=("listening", "capturing", "listening", "muted"))
    other = tmp_path / "other" / "ledger.jsonl"
    led = L.Ledger(other)
    led.append("start")
    led.close()
    shutil.copy(other, path)
    shutil.copy(other.with_suffix(".head"), path.with_suffix(".head"))
    v = L.verify(path)
    assert not v.ok and "records entry 5, which this ledger does not have" in v.problems[0], v.problems
    led = L.Ledger(path)
    led.close()
    assert led.restarted
    (kept,) = _kept(path.parent)
    assert kept.read_bytes() == other.read_bytes()
    # The witness now points into the new chain: the restart itself is the news, said once.
    v = L.verify(path)
    assert len(v.problems) == 1 and "does not have" in v.problems[0] and str(kept) in v.problems[0]


def test_a_damaged_witness_is_reported_and_the_ledger_kept(tmp_path):
    path = tmp_path / "state" / "ledger.jsonl"
    _daemon_runs(path)
    L.witness_path(path).write_text("scribbled over\n")
    assert "witness" in L.verify(path).problems[0] and "damaged" in L.verify(path).problems[0]
    before = path.read_bytes()
    _daemon_runs(path)
    (kept,) = _kept(path.parent)
    assert kept.read_bytes() == before and L.verify(kept).ok


def test_a_witness_that_cannot_be_written_is_logged_and_check_says_so(tmp_path, caplog):
    from tallylight import config as C
    from tallylight.check import _check_state_dir
    from tallylight.errors import TallylightError

    state = tmp_path / "state"
    (tmp_path / "state-witness").write_text("a file where the witness folder should be\n")
    with caplog.at_level("ERROR", logger="tallylight.ledger"):
        _daemon_runs(state / "ledger.jsonl")
    assert "cannot write the ledger's witness" in caplog.text
    assert "deleting the ledger would go unnoticed" in caplog.text
    assert L.verify(state / "ledger.jsonl").ok  # the ledger itself is whole
    cfg_file = tmp_path / "t.toml"
    cfg_file.write_text(f'[daemon]\nstate_dir = "{state}"\n')
    with pytest.raises(TallylightError, match="no witness .* so deleting it would go unnoticed"):
        _check_state_dir(C.load(cfg_file))
    (tmp_path / "state-witness").unlink()
    _daemon_runs(state / "ledger.jsonl")
    assert "ledger intact (8 entries)" in _check_state_dir(C.load(cfg_file))
    shutil.rmtree(state)
    with pytest.raises(TallylightError, match="history is gone"):
        _check_state_dir(C.load(cfg_file))


def test_an_edit_in_the_middle_is_set_aside_at_start_not_continued(tmp_path):
    """The last line and the head are fine; line 2 was edited (and its hash recomputed, as a forger
    would). The start must check the whole chain and keep the edited ledger aside."""
    path = make(tmp_path, 6)
    lines = path.read_text().splitlines(keepends=True)
    entry = json.loads(lines[1])
    entry["state"] = "muted"
    entry["hash"] = L._digest(entry)
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(lines))
    edited = path.read_bytes()
    led = L.Ledger(path)
    led.append("start")
    led.close()
    assert led.restarted
    (kept,) = _kept(tmp_path)
    assert kept.read_bytes() == edited
    assert any("line 3: does not follow" in p for p in L.verify(kept).problems)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["event"] == "ledger_restarted" and "line 3" in first["reason"]


def test_a_line_rewritten_with_other_spacing_still_verifies(tmp_path):
    """The hash is over the entry's canonical JSON, not over its spacing: a line re-serialised with
    spaces (and its hash kept) is the same entry. This takes the slow way through _hash_matches."""
    path = make(tmp_path, 4)
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = json.dumps(json.loads(lines[2])) + "\n"  # ", " and ": ", keys unsorted
    path.write_text("".join(lines))
    assert L.verify(path).ok, L.verify(path).problems
    lines[2] = lines[2].replace('"r2"', '"r9"')
    path.write_text("".join(lines))
    assert any("line 3: its contents do not match its hash" in p for p in L.verify(path).problems)


def test_verify_accepts_a_head_that_lags_as_beside_a_running_daemon(tmp_path):
    """verify reads the head before the file: entries appended after it (a daemon running beside the
    owner's `--verify`) are not a false alarm, and a head one behind after a crash is not one either."""
    path = make(tmp_path, 5)
    head = path.with_suffix(".head")
    line1 = json.loads(path.read_text().splitlines()[1])
    head.write_text(json.dumps({"seq": 1, "hash": line1["hash"]}) + "\n")
    assert L.verify(path).ok
    head.write_text(json.dumps({"seq": 1, "hash": "f" * 64}) + "\n")
    assert "another hash" in L.verify(path).problems[0]


def test_verify_of_an_unreadable_ledger_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = make(tmp_path)
    path.chmod(0)
    r = _cli("ledger", "--verify", "--file", str(path))
    assert r.returncode == 1 and "cannot read" in r.stdout and "Traceback" not in r.stderr, r


# ---- one daemon per state directory ------------------------------------------------------------------

HOLDER = """
import sys
from tallylight.statedir import StateDirLock
lock = StateDirLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin, or kills us
"""


def test_the_state_dir_lock_refuses_a_second_holder_and_the_kernel_frees_it(tmp_path):
    from tallylight.errors import InstanceError
    from tallylight.statedir import StateDirLock

    state = tmp_path / "state"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(state)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        lock = StateDirLock(state)
        with pytest.raises(InstanceError, match=rf"another `tallylight run` \(pid {holder.pid}\) is already using"):
            lock.acquire()
        assert not lock.held
        holder.kill()  # a crash: nothing cleans up, the kernel drops the lock
        holder.wait(timeout=30)
        lock.acquire()
        assert lock.held
        lock.release()
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)


def test_the_state_dir_lock_gives_one_line_errors(tmp_path):
    from tallylight.statedir import StateDirLock

    (tmp_path / "file").write_text("")
    with pytest.raises(LedgerError, match="is a file, not a folder"):
        StateDirLock(tmp_path / "file").acquire()
    (tmp_path / "state" / "ledger.lock").mkdir(parents=True)
    with pytest.raises(LedgerError, match="cannot open the lock file .*ledger.lock: Is a directory"):
        StateDirLock(tmp_path / "state").acquire()
