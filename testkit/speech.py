"""Test speech made on the spot with espeak-ng and sox, cached across test sessions.

The core of the suite uses only this, so it passes on any fresh clone; tests that use the real
recordings in ../shared/speech take the `shared_speech` fixture from conftest.py instead.

Every clip is the same, byte for byte, on every run and every machine with the same espeak-ng and
sox: sox runs in its repeatable mode (`-R`), which seeds its noise generator and its dither with a
fixed number. Without it, the pink noise and the dither that sox adds when it resamples differ from
run to run, so a recognition test could pass on one machine and fail on the next. The cache key holds
both tools' versions, since another version may speak or resample differently; files are written
under a temporary name and renamed, so parallel test workers never see half a clip.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import uuid
import wave
from array import array
from pathlib import Path

RATE = 16000
_CACHE = Path(os.environ.get("TALLYLIGHT_SPEECH_CACHE", "/tmp/tallylight-test-speech"))


# Bumped when the way clips are made changes, so no clip made the old way is taken from the cache.
_RECIPE = 2


def have_tools() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


@functools.lru_cache(maxsize=1)
def tool_versions() -> str:
    """espeak-ng's and sox's own version lines: part of every cache key."""
    lines = []
    for argv in (["espeak-ng", "--version"], ["sox", "--version"]):
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        lines.append(out.splitlines()[0] if out else "")
    return " | ".join(lines)


def _sox(*args: str) -> None:
    # -R: repeatable (fixed seeds for noise and dither), so every run makes the same bytes.
    subprocess.run(["sox", "-R", *args], check=True)


def _key(*parts: object) -> str:
    return hashlib.sha256(repr((_RECIPE, tool_versions(), *parts)).encode()).hexdigest()[:20]


def _scratch(key: str, what: str) -> Path:
    """A file name no other process uses (test workers may make the same clip at once)."""
    return _CACHE / f"{key}.{what}.{os.getpid()}-{uuid.uuid4().hex[:8]}.wav"


def synth(
    text: str,
    voice: str = "en-us",
    speed: int = 150,
    noise: float = 0.0,
    lead_s: float = 0.5,
    tail_s: float = 1.0,
    rate: int = RATE,
    channels: int = 1,
) -> Path:
    """A WAV of `text` spoken by espeak-ng: `lead_s`/`tail_s` of silence around it, pink noise mixed
    in at amplitude `noise` (0 = clean, 0.05 = audible hiss), resampled to `rate` Hz with `channels`."""
    key = _key(text, voice, speed, noise, lead_s, tail_s, rate, channels)
    out = _CACHE / f"{key}.wav"
    if out.exists():
        return out
    _CACHE.mkdir(parents=True, exist_ok=True)
    scratch = []
    try:
        raw = _scratch(key, "espeak")
        scratch.append(raw)
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
        mono = _scratch(key, "mono")
        scratch.append(mono)
        _sox(str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(mono), "pad", str(lead_s), str(tail_s))
        if noise > 0:
            noisy = _scratch(key, "noise")
            mixed = _scratch(key, "mixed")
            scratch += [noisy, mixed]
            _sox("-r", str(RATE), "-c", "1", "-b", "16", "-n", str(noisy), "synth", f"{duration(mono):.3f}",
                 "pinknoise", "vol", str(noise))
            _sox("-m", str(mono), str(noisy), str(mixed))
            mono = mixed
        tmp = _scratch(key, "tmp")
        scratch.append(tmp)
        _sox(str(mono), "-r", str(rate), "-c", str(channels), "-b", "16", str(tmp))
        os.replace(tmp, out)
    finally:
        for f in scratch:
            f.unlink(missing_ok=True)
    return out


def concat(parts: list[Path], name: str) -> Path:
    """Join WAVs of the same format into one."""
    out = _CACHE / f"concat-{_key(name, [str(p) for p in parts])}.wav"
    if not out.exists():
        tmp = _scratch(out.stem, "tmp")
        _sox(*map(str, parts), str(tmp))
        os.replace(tmp, out)
    return out


def silence(seconds: float, rate: int = RATE, channels: int = 1) -> Path:
    out = _CACHE / f"silence-{seconds}-{rate}-{channels}.wav"
    if not out.exists():
        _CACHE.mkdir(parents=True, exist_ok=True)
        tmp = _scratch(out.stem, "tmp")
        _sox("-n", "-r", str(rate), "-c", str(channels), "-b", "16", str(tmp), "trim", "0", str(seconds))
        os.replace(tmp, out)
    return out


def duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def speech_end_s(pcm_bytes: bytes, rel: float = 0.02) -> float:
    """Where speech ends in a clean synthetic clip: the end of the last 10 ms frame whose RMS is above
    `rel` of the loudest frame's (-34 dB; espeak-ng's pauses and tails are digital silence). 0.0 for
    a silent clip."""
    x = array("h", pcm_bytes[: len(pcm_bytes) - len(pcm_bytes) % 2])
    frame = RATE // 100  # 10 ms
    power = [sum(v * v for v in x[i : i + frame]) for i in range(0, len(x) - frame + 1, frame)]
    loudest = max(power, default=0)
    if loudest == 0:
        return 0.0
    last = max(i for i, p in enumerate(power) if p > rel * rel * loudest)  # RMS ratio, squared
    return (last + 1) * frame / RATE


def pcm(path: Path) -> bytes:
    """The raw s16le frames of a WAV file."""
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())
