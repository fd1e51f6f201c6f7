"""The ledger: an append-only, hash-chained JSON-lines record of every state change (P7).

Each line is one JSON object: `seq` (0, 1, 2 ...), `time` (wall clock, ISO 8601 UTC), `event`
("start", "state", "capture", "upload", "debug_recording", "stop", ...), event fields, `prev` (the
`hash` of the line before, 64 zeros for the first) and `hash` (SHA-256 of the line's canonical JSON
without `hash`). It never holds audio, only times, states, durations and byte counts.

A chain alone cannot show that lines were cut off the end, so a small head file beside the ledger
(`ledger.head`) holds the last `seq` and `hash`; `verify` checks both. This makes edits, deletions and
truncations evident to the owner; it does not stop someone with root from rewriting both files.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

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


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _sha256(canonical.encode("utf-8")).hexdigest()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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
    def in_memory(cls) -> "Ledger":
        return cls(None)

    def _open(self) -> None:
        """Continue the chain on disk, or, when it cannot be continued, set it aside and start anew."""
        assert self.path is not None and self.head_path is not None
        self._seq, self._prev, self.last_entry = 0, GENESIS, None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            last = _last_entry(self.path)
            _check_head(self.head_path, last)
        except OSError as e:
            raise LedgerError(f"cannot open the ledger {self.path}: {e.strerror} (check daemon.state_dir and its permissions)") from None
        except ValueError as e:
            self._set_aside(str(e))
            return
        self.last_entry = last
        if last is not None:
            self._seq, self._prev = last["seq"] + 1, last["hash"]
        self._open_fd()

    def _set_aside(self, why: str) -> None:
        """Never append to a chain we cannot continue, and never destroy or hide it: move it (and its
        head) aside and start a new chain whose first entry says where the old one went and why. A
        ledger cut short keeps its head beside it, so `verify` on the kept file still says so."""
        assert self.path is not None and self.head_path is not None
        # ledger.broken-T.jsonl and ledger.broken-T.head: `verify` finds a kept file's own head.
        stamp, n = int(time.time()), 0
        while True:
            broken = self.path.with_name(f"{self.path.stem}.broken-{stamp}{f'-{n}' if n else ''}{self.path.suffix}")
            if not (broken.exists() or broken.with_suffix(".head").exists()):
                break
            n += 1
        try:
            if self.path.exists():
                os.replace(self.path, broken)
            if self.head_path.exists():
                os.replace(self.head_path, broken.with_suffix(".head"))
        except OSError as e:
            raise LedgerError(
                f"the ledger {self.path} is damaged ({why}) and cannot be set aside: {e.strerror} "
                "(check daemon.state_dir and its permissions)"
            ) from None
        _LOG.error("ledger %s is damaged (%s); kept it as %s and started a new one", self.path, why, broken)
        self.restarted = True
        self._open_fd()
        self.append("ledger_restarted", reason=why, previous=str(broken))

    def _open_fd(self) -> None:
        assert self.path is not None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise LedgerError(f"cannot open the ledger {self.path}: {e.strerror} (check daemon.state_dir and its permissions)") from None

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


def _write_head(head: Path | None, seq: int, digest: str) -> None:
    if head is None:
        return
    tmp = head.with_name(head.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"seq": seq, "hash": digest}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, head)


def _check_head(head: Path, last: dict[str, Any] | None) -> None:
    """ValueError unless the head file agrees with the ledger's last entry. It may lag by one entry
    (a crash or a failed write between the line's fsync and the head's), never more, never ahead."""
    if not head.exists():
        if last is None or last["seq"] == 0:
            return  # a new ledger, or a crash before its first head was written
        raise ValueError(f"its head file {head.name} is missing, so lines cut off its end could not be detected")
    try:
        recorded = json.loads(head.read_text(encoding="utf-8"))
        seq, digest = recorded["seq"], recorded["hash"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ValueError(f"its head file {head.name} is damaged") from None
    if last is None:
        raise ValueError(f"it is empty or gone, but its head file records entry {seq}: it was deleted or emptied")
    if (seq, digest) in ((last["seq"], last["hash"]), (last["seq"] - 1, last.get("prev"))):
        return
    raise ValueError(
        f"it ends at entry {last['seq']} but its head file records entry {seq}: it was cut short or edited"
    )


def _last_entry(path: Path) -> dict[str, Any] | None:
    """The last entry of an existing ledger, read from the end. ValueError when it is damaged."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read()
    if not tail.endswith(b"\n"):
        raise ValueError("its last line is incomplete")
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        entry = json.loads(last)
    except json.JSONDecodeError:
        raise ValueError("its last line is not JSON") from None
    if not isinstance(entry, dict) or entry.get("hash") != _digest(entry) or not isinstance(entry.get("seq"), int):
        raise ValueError("its last line does not match its hash")
    return entry


@dataclass
class Verification:
    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)

    def summary(self, path: Path) -> str:
        if self.ok:
            return f"{path}: OK, {self.entries} entries, chain and head intact"
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


def verify(path: str | os.PathLike) -> Verification:
    """Check every line's hash, the chain, the sequence, and the head file."""
    path = Path(path)
    head_path = path.with_suffix(".head")
    if not path.exists():
        return Verification(False, 0, [f"no ledger at {path} (has the daemon run with this state_dir?)"])
    if not path.is_file():
        return Verification(False, 0, [f"{path} is not a ledger file (give the ledger.jsonl in daemon.state_dir)"])
    problems: list[str] = []
    prev, expected_seq, count, last_hash = GENESIS, 0, 0, None
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        problems.append("the last line is incomplete: the file was truncated or is being edited")
    for n, entry, line in read_entries(path):
        count += 1
        if entry is None:
            problems.append(f"line {n}: not a JSON object")
            prev, last_hash = None, None
            continue
        if entry.get("hash") != _digest(entry):
            problems.append(f"line {n}: its contents do not match its hash (edited)")
        if prev is not None and entry.get("prev") != prev:
            problems.append(f"line {n}: does not follow the line before it (a line was removed, inserted or edited)")
        if entry.get("seq") != expected_seq:
            problems.append(f"line {n}: sequence number {entry.get('seq')} where {expected_seq} was expected")
        if entry.get("event") == "ledger_restarted":
            # Not an edit itself, but the chain before it could not be continued: the owner must see
            # that, or cutting the ledger short and restarting the daemon would verify as intact.
            problems.append(
                f"line {n}: a new chain starts here because the ledger before it was damaged ({entry.get('reason')}); "
                f"that one is kept as {entry.get('previous')} (check it: tallylight ledger --verify --file PATH)"
            )
        expected_seq = entry.get("seq", expected_seq) + 1 if isinstance(entry.get("seq"), int) else expected_seq + 1
        prev = last_hash = entry.get("hash")
    if not head_path.exists():
        problems.append(f"the head file {head_path.name} is missing: lines cut off the end could not be detected")
    else:
        try:
            head = json.loads(head_path.read_text(encoding="utf-8"))
            if head.get("hash") != last_hash or head.get("seq") != expected_seq - 1:
                problems.append(
                    f"the ledger ends at entry {expected_seq - 1} but the head file records entry {head.get('seq')}: "
                    "entries were removed from the end (truncated) or the head was edited"
                )
        except (json.JSONDecodeError, AttributeError, OSError):
            problems.append(f"the head file {head_path.name} is damaged")
    return Verification(not problems, count, problems)


def timeline(path: str | os.PathLike) -> Iterator[str]:
    """Readable lines: when the mic was muted, listening, capturing or uploading, and for how long."""
    for _, entry, _ in read_entries(Path(path)):
        yield describe(entry)


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
                f"handed to {entry.get('handed_to', '?')} and wiped ({entry.get('end', '')})")
    if ev == "upload":
        return f"{when}  UPLOADED {entry.get('bytes')} bytes to {entry.get('destination')}"
    if ev == "debug_recording":
        return f"{when}  DEBUG RECORDING written to disk: {entry.get('file')} ({seconds('duration_s')} s)"
    if ev == "start":
        return f"{when}  daemon started (version {entry.get('version')}, pid {entry.get('pid')})"
    if ev == "stop":
        return f"{when}  daemon stopped ({entry.get('reason', '')})"
    extra = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("seq", "time", "event", "prev", "hash"))
    return f"{when}  {ev}: {extra}"
