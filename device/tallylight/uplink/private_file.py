"""Reading a secret the uplink holds (the Noise key, Home Assistant's token): a file that only this user
can read. Each check names the fix, in one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tallylight.errors import TallylightError


class PrivateFileError(TallylightError):
    """A secret's file is missing, not a plain file, someone else's, or readable by others."""

    exit_code = 78  # EX_CONFIG


def read_private(path: Path, what: str, missing_fix: str, max_chars: int = 4096) -> str:
    """The text of `path` (stripped), refused unless it is a regular file of this user with mode 0600 or less.

    O_NOFOLLOW: a symlink put in place of the file (to a world-readable one) is refused, not followed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise PrivateFileError(f"no {what} at {path}: {missing_fix}") from None
    except OSError as e:
        raise PrivateFileError(f"cannot open the {what} {path}: {e.strerror}") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PrivateFileError(f"{path} is not a file")
        if st.st_uid != os.geteuid():
            raise PrivateFileError(f"{path} belongs to uid {st.st_uid}, not to the uplink's user "
                                   f"(uid {os.geteuid()}): chown it")
        if st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise PrivateFileError(f"{path} can be read by others (mode {mode:04o}): chmod 600 {path}")
        return f.read(max_chars).strip()
