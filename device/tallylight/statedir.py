"""One daemon per state directory: `tallylight run` holds a lock on `ledger.lock` there for its life.

Two daemons on one state_dir would both append to the ledger, each continuing the chain from where it
found it, and the ledger would then fail `--verify` with a false alarm of tampering. So the daemon
takes an exclusive flock(2) before it opens anything; a second one is refused at once. The kernel
drops the lock when the holder exits or crashes (also on SIGKILL or a power cut, where nothing is
left behind to clean up), so there is no stale-pid logic. The file is opened close-on-exec: a reply
or an action started by the daemon must not keep the lock after the daemon is gone.

Readers (`tallylight ledger`, `listen`, `check`) never take it: they only read, and the ledger's
head and witness are written so that a reader beside a running daemon sees a consistent chain.
`check` asks whether a daemon holds it (`running_pid`) without taking it.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from tallylight.errors import InstanceError, LedgerError

_LOG = logging.getLogger(__name__)
LOCK_FILE = "ledger.lock"


class StateDirLock:
    """`acquire()` or InstanceError; `release()` is safe to call twice, and before `acquire()`."""

    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fix = "(check daemon.state_dir and its permissions)"
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise LedgerError(f"the state directory {self.state_dir} is a file, not a folder "
                              "(set daemon.state_dir to a folder)") from None
        except OSError as e:
            raise LedgerError(f"cannot create the state directory {self.state_dir}: {e.strerror} {fix}") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise LedgerError(f"cannot open the lock file {self.path}: {e.strerror} {fix}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise InstanceError(
                f"another `tallylight run`{f' (pid {holder})' if holder else ''} is already using {self.state_dir}: "
                "stop it first (sudo systemctl stop tallylight, or Ctrl-C where it runs); "
                "`tallylight ledger` and `tallylight listen` work beside it") from None
        except OSError as e:
            os.close(fd)
            raise LedgerError(f"cannot lock {self.path}: {e.strerror} {fix}") from None
        try:
            # Who holds it, for the line a second daemon prints; it decides nothing (the lock does).
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            _LOG.debug("cannot write the pid into %s: %s", self.path, e)
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor of the lock drops it


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def running_pid(state_dir: str | os.PathLike) -> str | None:
    """The pid of the `tallylight run` that holds `state_dir`'s lock now, or None when none does. For
    `tallylight check`, which must not take the lock even for an instant (a daemon starting then would
    be refused): it asks the kernel's list of held locks (/proc/locks) for the pid the lock file names,
    holding a flock on that file. None too when that cannot be read."""
    path = Path(state_dir) / LOCK_FILE
    try:
        pid = path.read_text(encoding="ascii", errors="replace").strip()
        inode = path.stat().st_ino
        held = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    if not pid.isdigit():
        return None
    for line in held.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 6526 fe:00:2155693 0 EOF"; a waiter's line starts "1: -> FLOCK".
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[4] == pid and fields[5].rsplit(":", 1)[-1] == str(inode):
            return pid
    return None
