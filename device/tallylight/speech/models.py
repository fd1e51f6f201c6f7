"""`tallylight models download NAME`: fetch a vosk model, check it, unpack it atomically;
`tallylight models list`: the known models and where each is installed.

The download streams to `DEST/NAME.zip.partial` with a one-line progress bar, and resumes a partial
file with an HTTP Range request (a server that ignores Range and answers 200 makes us start over).
The whole archive's SHA-256 must equal the pinned value before anything is unpacked. The zip is
unpacked into a temporary folder inside DEST and renamed into place in one step, so DEST never holds
a half-unpacked model: after any failure the model folder is either absent or complete.

Errors are one line (`ModelError`): a bad checksum removes the partial file (it can never become
good); a download cut short keeps it, so running the command again resumes.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from tallylight.errors import EngineError
from tallylight.speech.recognizers import RECOGNIZERS, default_vosk_model, is_vosk_model, model_folders


class ModelError(EngineError):
    """A model could not be downloaded, verified or unpacked."""


@dataclass(frozen=True)
class ModelInfo:
    name: str  # the folder the archive unpacks to
    url: str
    sha256: str
    size: int  # bytes of the archive
    about: str = ""
    licence: str = ""  # as the publisher states it


# The hash is of the archive as served by alphacephei.com; the same value is pinned by several
# unrelated projects' download scripts (41,205,931 bytes). Licence: alphacephei.com/vosk/models.
MODELS: dict[str, ModelInfo] = {
    "small-en-us": ModelInfo(
        name="vosk-model-small-en-us-0.15",
        url="https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip",
        sha256="30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498",
        size=41_205_931,
        about="US English, small (made for the Raspberry Pi)",
        licence="Apache-2.0",
    ),
}

# What a vosk model adds, for `check` and `models list`: the figures are the README's ("Measured").
VOSK_BRINGS = ('with a vosk model, recognizer.engine "auto" (or "both") runs vosk beside pocketsphinx: the fewest '
               "wrong commands (held-out voices, small English test model: 88% right against 78% with pocketsphinx "
               "alone), at about 234 MiB of memory instead of 72 MiB")


def vosk_package_problem() -> str | None:
    """Why the modules the vosk recognizer needs (its spec in speech.recognizers) cannot be used here,
    or None when they import."""
    for module in RECOGNIZERS["vosk"].needs:
        try:
            # Loads libvosk.so: a missing libatomic1 shows here, not at the first capture.
            importlib.import_module(module)
        except (ImportError, OSError) as e:
            return f"{type(e).__name__}: {e}"
    return None


def installed_copies(info: ModelInfo, state_dir: Path | None) -> list[Path]:
    """Every folder where model `info` is unpacked, in the order `auto` looks."""
    return [folder / info.name for folder in model_folders(state_dir) if is_vosk_model(folder / info.name)]


def models_report(state_dir: Path, vosk_model: str = "") -> list[str]:
    """`tallylight models list`: each known model, where it is installed, and which one the
    recognizer uses (`vosk_model` is recognizer.vosk_model as configured, "" = look in the folders)."""
    problem = vosk_package_problem()
    lines = [f"vosk package: {'installed' if problem is None else f'cannot be used ({problem})'}"]
    for key, info in MODELS.items():
        facts = ", ".join(x for x in (info.about, f"{info.size / 1e6:.0f} MB download",
                                      f"licence {info.licence}" if info.licence else "") if x)
        lines.append(f"{key}: {info.name} ({facts})")
        copies = installed_copies(info, state_dir)
        for path in copies:
            lines.append(f"  installed: {path}")
        if not copies:
            lines.append(f"  not installed: `tallylight models download {key}` puts it in {Path(state_dir) / 'models'}")
    used = Path(vosk_model).expanduser() if vosk_model else default_vosk_model(state_dir)
    if vosk_model:
        there = "present" if used is not None and is_vosk_model(used) else "NOT FOUND: fix the path or download it"
        lines.append(f"recognizer.vosk_model = {vosk_model!r}: {there}")
    elif used is not None:
        lines.append(f"recognizer.engine \"auto\" uses {used}")
    else:
        lines.append(f"no vosk model installed, so pocketsphinx alone recognizes commands; {VOSK_BRINGS}")
    return lines


def _by_hand(url: str, sha256: str, size: int | None, dest_dir: Path, name: str) -> str:
    """How to do the download's work by hand on a machine with a network, in one line."""
    dest = Path(os.path.abspath(dest_dir))
    size_text = f"{size:,} bytes, " if size else ""
    return (f"to copy it by hand, fetch {url} ({size_text}SHA-256 {sha256}) on a machine with a network, "
            f"check it with `sha256sum`, and unzip it in {dest} so that {dest / name}/am exists")

_CHUNK = 64 * 1024
_TIMEOUT_S = 30


def download_model(name: str, dest_dir: Path, *, url: str | None = None, sha256: str | None = None,
                   progress: TextIO | None = sys.stderr,
                   opener: Callable = urllib.request.urlopen) -> Path:
    """Download, verify and unpack model `name` into `dest_dir`; returns the model's folder.

    `url` and `sha256` override the pinned values (for mirrors and tests). Already unpacked: returns
    at once. `opener` is `urllib.request.urlopen`'s signature (request, timeout=...).
    """
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    info = MODELS[name]
    url = url or info.url
    want = (sha256 or info.sha256).lower()
    dest_dir = Path(dest_dir).expanduser()
    target = dest_dir / info.name
    if target.is_dir():
        return target
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create {dest_dir}: {e.strerror} (choose another folder with --dest)") from None
    partial = dest_dir / f"{info.name}.zip.partial"
    size = info.size if url == info.url else None
    _fetch(url, partial, size, progress, opener, _by_hand(url, want, size, dest_dir, info.name))
    digest = _sha256(partial)
    if digest != want:
        partial.unlink(missing_ok=True)
        raise ModelError(f"{info.name}: checksum mismatch (got {digest[:16]}..., expected {want[:16]}...): "
                         "the download was corrupt or altered and was deleted; run the command again")
    _unpack(partial, dest_dir, info.name)
    partial.unlink(missing_ok=True)
    return target


def _fetch(url: str, partial: Path, expected_size: int | None, progress: TextIO | None,
           opener: Callable, by_hand: str) -> None:
    """Stream `url` into `partial`, resuming what is already there. `by_hand` ends the error when
    the host cannot be reached."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tallylight"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    host = urllib.parse.urlsplit(url).hostname or url
    try:
        response = opener(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Range not satisfiable: the partial file already holds the whole archive (or more).
            return
        raise ModelError(f"{url}: the server answered {e.code} {e.reason}; {by_hand}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ModelError(f"cannot reach {host}: {reason}; {by_hand}") from None
    with response:
        status = getattr(response, "status", 200)
        if have and status == 200:
            have = 0  # the server ignored Range and sends the whole file: start over
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        total = have + remaining if remaining is not None else expected_size
        bar = _ProgressBar(progress, total, partial.name)
        got = 0
        bar.update(have)
        with _open_partial(partial, append=bool(have)) as out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    bar.done()
                    raise ModelError(f"download of {url} was cut short at {have + got} bytes "
                                     f"({e.__class__.__name__}); run the command again to resume") from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:
                    bar.done()
                    raise ModelError(f"cannot write {partial}: {e.strerror} (free some space, or use --dest)") from None
                got += len(chunk)
                bar.update(have + got)
        bar.done()
    if remaining is not None and got != remaining:
        raise ModelError(f"download of {url} was cut short at {have + got} of {have + remaining} bytes; "
                         "run the command again to resume")


def _open_partial(partial: Path, append: bool) -> BinaryIO:
    try:
        return open(partial, "ab" if append else "wb")
    except OSError as e:
        raise ModelError(f"cannot write {partial}: {e.strerror} (choose another folder with --dest)") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unpack(archive: Path, dest_dir: Path, name: str) -> None:
    """Unpack into a temp folder in dest_dir, then rename the model folder into place in one step."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.unpacking-", dir=dest_dir))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    # No absolute paths or '..': an archive must not write outside its folder.
                    parts = Path(member.filename).parts
                    if member.filename.startswith("/") or ".." in parts:
                        raise ModelError(f"{archive.name}: unsafe path {member.filename!r} in the archive")
                zf.extractall(tmp)
        except zipfile.BadZipFile as e:
            archive.unlink(missing_ok=True)
            raise ModelError(f"{archive.name} is not a valid zip ({e}); it was deleted, run the command again") from None
        # The archive holds one top folder named like the model; accept a flat archive too.
        inner = tmp / name
        if not inner.is_dir():
            entries = list(tmp.iterdir())
            inner = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        if not (inner / "am").is_dir() and not (inner / "conf").is_dir():
            raise ModelError(f"{archive.name} does not hold a vosk model (no am/ or conf/ folder)")
        if inner == tmp:
            os.replace(tmp, dest_dir / name)
        else:
            os.replace(inner, dest_dir / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class _ProgressBar:
    """One updating line: bytes, total and percent; at most ~10 redraws a second."""

    def __init__(self, out: TextIO | None, total: int | None, label: str) -> None:
        self.out, self.total, self.label = out, total, label
        self._last = 0.0
        self._shown = False

    def update(self, done: int) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done != self.total:
            return
        self._last = now
        if self.total:
            pct = min(100.0, 100.0 * done / self.total)
            filled = int(pct / 100 * 30)
            line = f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:.1f}/{self.total / 1e6:.1f} MB {pct:5.1f}%"
        else:
            line = f"\r{self.label} {done / 1e6:.1f} MB"
        self.out.write(line)
        self.out.flush()
        self._shown = True

    def done(self) -> None:
        if self.out is not None and self._shown:
            self.out.write("\n")
            self.out.flush()
            self._shown = False
