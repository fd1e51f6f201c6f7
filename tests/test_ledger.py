"""P7: the ledger is append-only and hash-chained; --verify detects edits, deletions, truncation."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

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
    assert L.verify(path).ok
    first = json.loads(path.read_text().splitlines()[0])
    assert first["event"] == "ledger_restarted" and first["previous"] == str(kept[0])


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
    run = lambda *a: subprocess.run([sys.executable, "-m", "tallylight", "ledger", "--file", str(path), *a],
                                    capture_output=True, text=True, env=env, timeout=60)
    r = run()
    assert r.returncode == 0 and "CAPTURING" in r.stdout and "MUTED" in r.stdout
    r = run("--verify")
    assert r.returncode == 0 and "OK, 5 entries" in r.stdout
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    r = run("--verify")
    assert r.returncode == 1 and "truncated" in r.stdout
