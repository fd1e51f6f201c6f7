"""Test speech made on the spot with espeak-ng and sox, cached per test session.

The core of the suite uses only this, so it passes on any fresh clone; tests that use the real
recordings in ../shared/speech take the `shared_speech` fixture from conftest.py instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import wave
from pathlib import Path

RATE = 16000
_CACHE = Path(os.environ.get("TALLYLIGHT_SPEECH_CACHE", "/tmp/tallylight-test-speech"))


def have_tools() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


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
    key = hashlib.sha256(repr((text, voice, speed, noise, lead_s, tail_s, rate, channels)).encode()).hexdigest()[:20]
    out = _CACHE / f"{key}.wav"
    if out.exists():
        return out
    _CACHE.mkdir(parents=True, exist_ok=True)
    raw = _CACHE / f"{key}.espeak.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    mono = _CACHE / f"{key}.mono.wav"
    subprocess.run(
        ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(mono), "pad", str(lead_s), str(tail_s)],
        check=True,
    )
    if noise > 0:
        dur = duration(mono)
        noisy = _CACHE / f"{key}.noise.wav"
        subprocess.run(
            ["sox", "-r", str(RATE), "-c", "1", "-b", "16", "-n", str(noisy), "synth", f"{dur:.3f}", "pinknoise", "vol", str(noise)],
            check=True,
        )
        mixed = _CACHE / f"{key}.mixed.wav"
        subprocess.run(["sox", "-m", str(mono), str(noisy), str(mixed)], check=True)
        mono = mixed
    tmp = _CACHE / f"{key}.tmp.wav"
    subprocess.run(["sox", str(mono), "-r", str(rate), "-c", str(channels), "-b", "16", str(tmp)], check=True)
    tmp.rename(out)
    return out


def concat(parts: list[Path], name: str) -> Path:
    """Join WAVs of the same format into one."""
    out = _CACHE / f"concat-{hashlib.sha256((name + repr(parts)).encode()).hexdigest()[:20]}.wav"
    if not out.exists():
        subprocess.run(["sox", *map(str, parts), str(out)], check=True)
    return out


def silence(seconds: float, rate: int = RATE, channels: int = 1) -> Path:
    out = _CACHE / f"silence-{seconds}-{rate}-{channels}.wav"
    if not out.exists():
        _CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["sox", "-n", "-r", str(rate), "-c", str(channels), "-b", "16", str(out), "trim", "0", str(seconds)], check=True)
    return out


def duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def pcm(path: Path) -> bytes:
    """The raw s16le frames of a WAV file."""
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())
