"""The ledger: an append-only, hash-chained JSON-lines record of every state change (P7).

Each line is one JSON object: `seq` (0, 1, 2 ...), `time` (wall clock, ISO 8601 UTC), `event`
("start", "state", "capture", "upload", "debug_recording", "stop", ...), event fields, `prev` (the
`hash` of the line before, 64 zeros for the first) and `hash` (SHA-256 of the line's canonical JSON
without `hash`). It never holds audio, only times, states, durations and byte counts.

A chain alone cannot show that lines were cut off the end, so a small head file beside the ledger
(`ledger.head`) holds the last `seq` and `hash`; `verify` checks both. Nor can the two files show that
both were deleted: the daemon then begins a new chain that looks like a first start. So at each start
and stop it also writes a witness outside the state directory, in the folder beside it whose name ends
in `-witness` (`/var/lib/tallylight-witness/ledger.witness` for the service: a second
`StateDirectory=`), and logs the same head to the journal. A ledger that lacks the entry its witness
records has lost its history. This makes edits, deletions and truncations evident to the owner; it
does not stop someone with root from rewriting every witness too.

The daemon checks the whole chain, head and witness at start with the very code of `verify`
(`check`), and never continues a ledger that fails it: it sets it aside and starts a new chain.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tallylight.errors import LedgerError

try:  # CPython's own SHA-256: hashlib would load OpenSSL's libcrypto (~3 MB resident) just for this
    from _sha256 import sha256 as _sha256  # Python 3.11
except ImportError:
    try:
        from _sha2 import sha256 as _sha256  # Python 3.12+
    except ImportError:
        from hashlib import sha256 as _sha256

_LOG = logging.getLogger(__name__)
GENESIS = "0" * 64
# The witness folder is the state directory's name with this after it (see witness_path).
WITNESS_SUFFIX = "-witness"


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _sha256(canonical.encode("utf-8")).hexdigest()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Ledger:
    """Appends hash-chained entries to `path` (or keeps them in memory when `path` is None, for
    `tallylight listen`, which reads files rather than the microphone and must not touch the
    device's ledger)."""

    def __init__(self, path: str | os.PathLike | None, *, clock=_now_iso):
        self.path = Path(path) if path is not None else None
        self.head_path = self.path.with_suffix(".head") if self.path else None
        self._clock = clock
        self.entries: list[dict[str, Any]] = []  # only in memory mode
        self._seq = 0
        self._prev = GENESIS
        self._fd: int | None = None
        self._closed = False
        self.restarted = False  # True once a damaged ledger was set aside and a new chain begun
        self.last_entry: dict[str, Any] | None = None  # the newest entry found when opening
        if self.path is not None:
            self._open()

    @classmethod
    def in_memory(cls) -> Ledger:
        return cls(None)

    def _open(self) -> None:
        """Continue the chain on disk, or, when it cannot be continued, set it aside and start anew."""
        assert self.path is not None and self.head_path is not None
        self._seq, self._prev, self.last_entry = 0, GENESIS, None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            found = check(self.path)  # the whole chain, its head and its witness: `verify`'s own check
        except OSError as e:
            raise LedgerError(f"cannot open the ledger {self.path}: {e.strerror} "
                              "(check daemon.state_dir and its permissions)") from None
        if found.damage:
            self._set_aside(found.damage[0])
            return
        self.last_entry = found.last_entry
        if found.last_entry is not None:
            self._seq, self._prev = found.last_entry["seq"] + 1, found.last_entry["hash"]
        self._open_fd()

    def _set_aside(self, why: str) -> None:
        """Never append to a chain we cannot continue, and never destroy or hide it: move it (and its
        head) aside and start a new chain whose first entry says where the old one went and why. A
        ledger cut short keeps its head beside it, so `verify` on the kept file still says so. When
        both files are gone (the witness said so) there is nothing to move, and the entry says that."""
        assert self.path is not None and self.head_path is not None
        # ledger.broken-T.jsonl and ledger.broken-T.head: `verify` finds a kept file's own head.
        stamp, n = int(time.time()), 0
        while True:
            broken = self.path.with_name(f"{self.path.stem}.broken-{stamp}{f'-{n}' if n else ''}{self.path.suffix}")
            if not (broken.exists() or broken.with_suffix(".head").exists()):
                break
            n += 1
        kept = None
        try:
            if self.path.exists():
                os.replace(self.path, broken)
                kept = broken
            if self.head_path.exists():
                os.replace(self.head_path, broken.with_suffix(".head"))
                kept = kept or broken.with_suffix(".head")
        except OSError as e:
            raise LedgerError(
                f"the ledger {self.path} is damaged ({why}) and cannot be set aside: {e.strerror} "
                "(check daemon.state_dir and its permissions)"
            ) from None
        _LOG.error("ledger %s is damaged (%s); %s and started a new one", self.path, why,
                   f"kept it as {broken}" if kept else "nothing of it was left to keep")
        self.restarted = True
        self._open_fd()
        self.append("ledger_restarted", reason=why, previous=str(broken) if kept else None)
        # At once, not at the next start: the old witness points into the chain just set aside.
        self.write_witness()

    def _open_fd(self) -> None:
        assert self.path is not None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise LedgerError(f"cannot open the ledger {self.path}: {e.strerror} "
                              "(check daemon.state_dir and its permissions)") from None

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one entry and make it durable (fsync) before returning. Raises LedgerError."""
        entry = {"seq": self._seq, "time": self._clock(), "event": event, **fields, "prev": self._prev}
        entry["hash"] = _digest(entry)
        line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
        if self.path is None:
            self.entries.append(entry)
        else:
            if self._closed:
                raise LedgerError(f"the ledger {self.path} is closed")
            if self._fd is None:
                # The last append failed part way (the line may be in the file, or half of it, and the
                # head may lag): read back what is really there before adding to it, or the chain
                # would fork with two entries of one sequence number.
                self._open()
                return self.append(event, **fields)
            try:
                data = line.encode("utf-8")
                if os.write(self._fd, data) != len(data):
                    raise OSError(28, "short write")
                os.fsync(self._fd)
                _write_head(self.head_path, self._seq, entry["hash"])
            except OSError as e:
                self._close_fd()
                raise LedgerError(
                    f"cannot write the ledger {self.path}: {e.strerror or e} (is the disk full or read-only?)"
                ) from None
        self._seq += 1
        self._prev = entry["hash"]
        return entry

    def close(self) -> None:
        """Safe to call twice; an append after it raises LedgerError."""
        self._closed = True
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass  # nothing was buffered: every append already fsynced or failed
            finally:
                self._fd = None


    def write_witness(self) -> None:
        """Record the newest entry where deleting the ledger's two files leaves it: the witness file
        (see the module's doc) and the log, which under systemd is the journal. The daemon calls this
        at each start and stop. A witness that cannot be written is logged, not raised: the ledger
        itself still works, and `tallylight check` reports the missing witness."""
        if self.path is None or self._seq == 0:
            return
        seq, digest = self._seq - 1, self._prev
        where = witness_path(self.path)
        _LOG.info("ledger head: entry %d, hash %s, in %s (witness %s)", seq, digest, self.path, where)
        try:
            where.parent.mkdir(mode=0o700, exist_ok=True)
            _write_small(where, {"seq": seq, "hash": digest, "time": self._clock(), "ledger": str(self.path)})
        except OSError as e:
            _LOG.error("cannot write the ledger's witness %s: %s; deleting the ledger would go unnoticed "
                       "(let the daemon's user write %s; the service gets it from StateDirectory=)",
                       where, e.strerror or e, where.parent)

def _write_small(path: Path, record: dict[str, Any]) -> None:
    """Replace a small JSON file atomically: a reader sees the old record or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_head(head: Path | None, seq: int, digest: str) -> None:
    if head is not None:
        _write_small(head, {"seq": seq, "hash": digest})


def witness_path(ledger: str | os.PathLike) -> Path:
    """Where the witness of a ledger is kept: `<state_dir>-witness/<name>.witness`, a folder beside the
    state directory, so that removing the ledger's files, or the whole state directory, leaves it."""
    ledger = Path(os.path.abspath(ledger))
    state_dir = ledger.parent
    return state_dir.with_name(state_dir.name + WITNESS_SUFFIX) / (ledger.stem + ".witness")


def _read_record(path: Path) -> tuple[dict[str, Any] | None, bool]:
    """(a head or witness record, whether the file exists). A damaged one is {} (it exists, says nothing)."""
    try:
        record = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file where its folder should be
        return None, False
    except (ValueError, IsADirectoryError):  # not JSON, not UTF-8, or a folder where the file should be
        return {}, True
    if not (isinstance(record, dict) and isinstance(record.get("seq"), int) and isinstance(record.get("hash"), str)):
        return {}, True
    return record, True


_HASH_MEMBER = b'"hash":"'
_scan_value = json.JSONDecoder().scan_once


def _parse_line(raw: bytes) -> Any:
    """json.loads of one line, or None when it is not JSON. The decoder's own scanner goes first: it
    skips json.loads's encoding sniffing and whitespace matching, a quarter of the cost of a line;
    whatever it does not take as one whole value is left to json.loads, so the result is the same."""
    try:
        text = raw.decode("utf-8")
        value, end = _scan_value(text, 0)
        if end == len(text) - 1 and text[end] == "\n":
            return value
    except (ValueError, StopIteration):  # StopIteration: no JSON value at the start of the line
        pass
    try:
        return json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        return None


def _hash_matches(raw: bytes, entry: dict[str, Any]) -> bool:
    """Whether a line's `hash` is the SHA-256 of the rest of it: `_digest`, without re-encoding the
    line. `append` writes canonical JSON, so cutting the `"hash":"..."` member out of the line as
    written gives exactly the bytes `_digest` hashes; any other line takes the slow way. This is most
    of the cost of checking a ledger, at every start (scripts/bench, table 10)."""
    digest = entry.get("hash")
    if not isinstance(digest, str):
        return False
    at = raw.find(_HASH_MEMBER)
    end = at + len(_HASH_MEMBER) + 64
    if (at > 0 and raw.count(_HASH_MEMBER) == 1 and raw[end:end + 2] == b'",'
            and raw[at + len(_HASH_MEMBER):end] == digest.encode()):
        rest = raw[end + 2:-1] if raw.endswith(b"\n") else raw[end + 2:]
        if _sha256(raw[:at] + rest).hexdigest() == digest:
            return True
    return digest == _digest(entry)


@dataclass
class Verification:
    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)
    # The problems that mean the chain cannot be continued: all but the notes of an earlier restart.
    damage: list[str] = field(default_factory=list)
    last_entry: dict[str, Any] | None = None
    witness: Path | None = None  # the witness the ledger was compared with; None when there is none

    def summary(self, path: Path) -> str:
        if self.ok and self.witness is not None:
            return f"{path}: OK, {self.entries} entries, chain, head and witness intact"
        if self.ok:
            return (f"{path}: OK, {self.entries} entries, chain and head intact (no witness in "
                    f"{witness_path(path).parent}, so a deletion of both ledger files could not be told)")
        return f"{path}: FAILED verification ({len(self.problems)} problem(s)):\n  " + "\n  ".join(self.problems)


def parse_line(line: str) -> dict[str, Any] | None:
    """One ledger line as an entry, or None when it is not a JSON object."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None


def read_entries(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, parsed entry or None, raw line) for every line of the ledger."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            yield n, parse_line(line), line


_GONE = ("the ledger's history is gone: if you did not delete it, someone with access to this device did "
         "(restore it from a backup if you have one; the next start begins a new chain that says so)")


def check(path: Path) -> Verification:
    """Every line's hash, the chain, the sequence, the head file and the witness, in one pass over the
    file (a missing file is an empty ledger). The daemon runs this at start, `verify` for the owner.

    The witness and the head are read before the file: a daemon running beside us only adds entries
    after them, so a head that lags the file's end is fine as long as the file has the entry it names
    (after a crash it lags by one). Raises OSError when the file cannot be read."""
    head_path = path.with_suffix(".head")
    w_path = witness_path(path)
    witness, witness_exists = _read_record(w_path)
    head, head_exists = _read_record(head_path)
    problems: list[str] = []
    damage: list[str] = []

    def damaged(text: str) -> None:
        problems.append(text)
        damage.append(text)

    prev, expected_seq, count, last, raw = GENESIS, 0, 0, None, b"\n"
    head_seen = witness_seen = False
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:  # no file: an empty ledger
        for n, raw in enumerate(f, 1):
            count = n
            entry = _parse_line(raw)
            if not isinstance(entry, dict):
                damaged(f"line {n}: not a JSON object")
                prev = last = None
                continue
            digest, seq = entry.get("hash"), entry.get("seq")
            if not _hash_matches(raw, entry):
                damaged(f"line {n}: its contents do not match its hash (edited)")
            if prev is not None and entry.get("prev") != prev:
                damaged(f"line {n}: does not follow the line before it (a line was removed, inserted or edited)")
            if seq != expected_seq:
                damaged(f"line {n}: sequence number {seq} where {expected_seq} was expected")
            if entry.get("event") == "ledger_restarted":
                # Not an edit itself, but the chain before it could not be continued: the owner must
                # see that, or cutting the ledger short and restarting would verify as intact.
                kept = entry.get("previous")
                problems.append(
                    f"line {n}: a new chain starts here because the ledger before it could not be continued "
                    f"({entry.get('reason')}); " + (
                        f"that one is kept as {kept} (check it: tallylight ledger --verify --file PATH)" if kept
                        else "nothing of that one was left to keep"))
            if head and seq == head["seq"]:
                head_seen = head_seen or digest == head["hash"]
            if witness and seq == witness["seq"]:
                witness_seen = witness_seen or digest == witness["hash"]
            expected_seq = seq + 1 if isinstance(seq, int) else expected_seq + 1
            prev, last = digest, entry
    if not raw.endswith(b"\n"):
        damaged_first = "the last line is incomplete: the file was truncated or is being edited"
        problems.insert(0, damaged_first)
        damage.insert(0, damaged_first)
    if head == {}:
        damaged(f"the head file {head_path.name} is damaged")
    elif head is None and count > 1:  # one entry and no head: a crash before its head was written
        damaged(f"the head file {head_path.name} is missing, so lines cut off the end could not be detected")
    elif head is not None and not head_seen:
        if count == 0:
            damaged(f"the ledger is empty or gone, but its head file records entry {head['seq']}: "
                    "it was deleted or emptied")
        elif head["seq"] >= expected_seq:
            damaged(f"the ledger ends at entry {expected_seq - 1} but its head file records entry {head['seq']}: "
                    "it was truncated (cut short) or the head was edited")
        else:
            damaged(f"the head file records entry {head['seq']} with another hash than that entry has: "
                    "the ledger or its head was edited")
    if witness == {}:
        damaged(f"the witness {w_path} is damaged (edited, or the disk is failing)")
    elif witness is not None and not witness_seen:
        when = f", written {witness['time']}," if isinstance(witness.get("time"), str) else ""
        if count == 0 and not head_exists:
            damaged(f"the ledger and its head file are gone, but the witness {w_path}{when} records "
                    f"{witness['seq'] + 1} entries: {_GONE}")
        else:
            damaged(f"the witness {w_path}{when} records entry {witness['seq']}, which this ledger does not have: "
                    f"it was deleted or replaced, and {_GONE}")
    return Verification(not problems, count, problems, damage, last if not damage else None,
                        w_path if witness_exists else None)


def verify(path: str | os.PathLike) -> Verification:
    """`tallylight ledger --verify`: `check`, with a line for a ledger that is not there."""
    path = Path(path)
    if path.exists() and not path.is_file():
        return Verification(False, 0, [f"{path} is not a ledger file (give the ledger.jsonl in daemon.state_dir)"])
    try:
        result = check(path)
    except OSError as e:
        return Verification(False, 0, [f"cannot read {e.filename or path}: {e.strerror} (check its permissions)"])
    if result.ok and not path.exists():
        return Verification(False, 0, [f"no ledger at {path} (has the daemon run with this state_dir?)"])
    return result


def timeline(path: str | os.PathLike) -> Iterator[str]:
    """Readable lines: when the mic was muted, listening, capturing or uploading, and for how long."""
    for _, entry, _ in read_entries(Path(path)):
        yield describe(entry)


# How a capture or an upload ended, in the owner's words (the ledger keeps the code: events.CaptureEnded,
# uplink_port's audio ends). A code not listed here is shown as it is.
END_WORDS = {
    "end": "speech ended", "early": "command recognized", "no_speech": "no speech heard",
    "max_length": "length limit (capture.max_s)", "mute": "muted", "muted": "muted",
    "vad_end": "Home Assistant heard the end", "stopped": "Home Assistant stopped it",
    "dropped": "the link to Home Assistant dropped",
}


def end_words(code: Any) -> str:
    return END_WORDS.get(str(code), str(code)) if code else ""


def describe(entry: dict[str, Any] | None) -> str:
    """One entry as a readable line (`tallylight ledger`, `--follow`)."""
    if entry is None:
        return "(unreadable line)"

    def seconds(key: str) -> str:
        value = entry.get(key)
        return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"

    when = str(entry.get("time", "?")).replace("T", " ")[:23]
    ev = entry.get("event")
    if ev == "state":
        took = seconds("previous_s")
        was = f" after {took} s {entry.get('from')}" if took != "?" and entry.get("from") else ""
        return f"{when}  {str(entry.get('state')).upper():<10} ({entry.get('reason', '')}){was}"
    if ev == "capture":
        return (f"{when}  captured {seconds('duration_s')} s of audio in RAM, "
                f"handed to {entry.get('handed_to', '?')} and wiped ({end_words(entry.get('end'))})")
    if ev == "upload":
        audio = f" ({seconds('duration_s')} s of audio)" if "duration_s" in entry else ""
        end = f", {end_words(entry['end'])}" if entry.get("end") else ""
        return f"{when}  UPLOADED {entry.get('bytes')} bytes{audio} to {entry.get('destination')}{end}"
    if ev == "debug_recording":
        return f"{when}  DEBUG RECORDING written to disk: {entry.get('file')} ({seconds('duration_s')} s)"
    if ev == "start":
        return f"{when}  daemon started (version {entry.get('version')}, pid {entry.get('pid')})"
    if ev == "stop":
        return f"{when}  daemon stopped ({entry.get('reason', '')})"
    extra = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("seq", "time", "event", "prev", "hash"))
    return f"{when}  {ev}: {extra}"
