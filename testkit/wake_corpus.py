"""A wake word corpus made with espeak-ng (testkit/speech.py), plus the real recordings when present.

Used by tests/test_wake.py (a small slice), scripts/measure-wake (all of it) and anyone who wants
labelled wake / not-wake audio. Every clip is 16 kHz mono s16le.

The synthetic voices are split, before any measurement, into a DEV half (the one to look at while
choosing thresholds or other levers) and a HELDOUT half (only to report on). A lever chosen by
looking at HELDOUT numbers would be tuning on the test set.

Negatives are genuinely not the wake phrase: confusable phrases (sounds close, but a person would not
mean the wake word), ordinary sentences, other models' wake phrases, and real recordings.
"""

from __future__ import annotations

import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testkit import speech

if TYPE_CHECKING:
    import numpy as np

# The human phrase each builtin model wakes on (microWakeWord and openWakeWord share these names).
PHRASES: dict[str, str] = {
    "okay_nabu": "okay nabu",
    "hey_jarvis": "hey jarvis",
    "alexa": "alexa",
    "hey_mycroft": "hey mycroft",
    "hey_rhasspy": "hey rhasspy",
}

# espeak-ng English voices (language + variant), checked to exist with `espeak-ng --voices=en` and
# `--voices=variant`. Fixed split; do not move voices between halves after looking at results.
DEV_VOICES = ("en-us", "en-gb", "en-us+f3", "en+m3", "en-gb-x-rp", "en+f2")
HELDOUT_VOICES = ("en-us+m7", "en-gb-scotland", "en-029+f4", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd+m3")
SPEEDS = (130, 160, 190)
NOISES = (0.0, 0.05)  # clean, and pink noise at sox amplitude 0.05 (an audible hiss)

# Close in sound to a wake phrase but not it (a person saying these does not mean to wake the speaker).
CONFUSABLES: dict[str, tuple[str, ...]] = {
    "okay_nabu": (
        "okay, now who wants dessert",
        "hey now",
        "a canoe",
        "okay google",
        "okay, let's go",
        "bamboo",
        "okay, no boots",
    ),
    "hey_jarvis": ("hey, travis", "hey, service", "harvest", "hey, jars"),
    "alexa": ("a lexicon", "alex, sit down", "alexander", "elections"),
    "hey_mycroft": ("hey, microsoft", "my craft", "witchcraft", "hey, mike"),
    "hey_rhasspy": ("hey, raspberry", "raspy voice", "hey, rasp"),
}

SENTENCES = (
    "what time is it",
    "turn on the kitchen light",
    "set a timer for five minutes",
    "the weather will be cloudy tomorrow with some rain in the afternoon",
    "can you pass me the salt please",
    "i think we should leave at seven",
    "the cat is sleeping on the sofa again",
    "please call my mother when you get home",
    "how many apples are left in the bowl",
    "play some music in the living room",
    "we need more milk and bread",
    "nobody knows where the keys went",
)


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str  # what is said (a file name for recordings)
    kind: str  # "wake" | "confusable" | "sentence" | "other_wake" | "recording"
    split: str  # "dev" | "heldout" | "real"
    voice: str = ""
    speed: int = 0
    noise: float = 0.0

    def pcm(self) -> bytes:
        return read_pcm(self.path)

    @property
    def seconds(self) -> float:
        return speech.duration(self.path)


def read_pcm(path: Path) -> bytes:
    """s16le frames of a 16 kHz mono 16-bit WAV (the corpus and ../shared/speech are all that)."""
    with wave.open(str(path), "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
            raise ValueError(f"{path}: not 16 kHz mono 16-bit")
        return w.readframes(w.getnframes())


def _split(voice: str) -> str:
    return "dev" if voice in DEV_VOICES else "heldout"


def _make(specs: list[tuple[str, str, str, int, float]], workers: int = 2) -> list[Clip]:
    """specs: (text, kind, voice, speed, noise) -> Clips, synthesised (cached) two at a time."""

    def one(spec: tuple[str, str, str, int, float]) -> Clip:
        text, kind, voice, speed, noise = spec
        path = speech.synth(text, voice=voice, speed=speed, noise=noise)
        return Clip(path, text, kind, _split(voice), voice, speed, noise)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, specs))


def positives(
    model: str,
    voices: tuple[str, ...] = DEV_VOICES + HELDOUT_VOICES,
    speeds: tuple[int, ...] = SPEEDS,
    noises: tuple[float, ...] = NOISES,
) -> list[Clip]:
    """The model's wake phrase in every voice x speed x noise: each clip should wake it once."""
    text = PHRASES[model]
    return _make([(text, "wake", v, s, n) for v in voices for s in speeds for n in noises])


def negatives(
    model: str,
    voices: tuple[str, ...] = DEV_VOICES + HELDOUT_VOICES,
    speeds: tuple[int, ...] = (160,),
    noises: tuple[float, ...] = NOISES,
) -> list[Clip]:
    """Speech that must not wake `model`: its confusables, ordinary sentences, other wake phrases."""
    texts = [(t, "confusable") for t in CONFUSABLES.get(model, ())]
    texts += [(t, "sentence") for t in SENTENCES]
    # Other models' phrases, unless they are the same words (okay_nabu is okay_nabu in both engines).
    texts += [(p, "other_wake") for m, p in PHRASES.items() if p != PHRASES.get(model)]
    return _make([(t, k, v, s, n) for t, k in texts for v in voices for s in speeds for n in noises])


def real_positives(shared_speech: Path | None, model: str) -> list[Clip]:
    """../shared/speech/wake/<model>/*.wav (real voices saying the model's phrase once)."""
    if shared_speech is None:
        return []
    return [Clip(p, p.name, "recording", "real") for p in sorted((shared_speech / "wake" / model).glob("*.wav"))]


def real_negatives(shared_speech: Path | None, model: str) -> list[Clip]:
    """Real speech that holds no wake phrase of `model` (other models' wake clips count too)."""
    if shared_speech is None:
        return []
    s = shared_speech
    paths = sorted((s / "wake" / "not_wake").glob("*.wav"))
    paths += [s / "porcupine" / "multiple_keywords.wav", s / "vosk" / "test.wav"]
    paths += sorted((s / "pocketsphinx" / "librivox").glob("*.wav"))
    paths += sorted((s / "pocketsphinx" / "cards").glob("*.wav"))
    for other, phrase in PHRASES.items():
        if phrase != PHRASES.get(model):
            paths += sorted((s / "wake" / other).glob("*.wav"))
    return [Clip(p, str(p.relative_to(s)), "recording", "real") for p in paths if p.exists()]


def shared_speech_dir() -> Path | None:
    """../shared/speech when present (the same search as tests/conftest.py)."""
    import os

    here = Path(__file__).resolve().parents[1]
    env = os.environ.get("TALLYLIGHT_SHARED")
    for cand in ([Path(env)] if env else []) + [here.parent / "shared", here.parent.parent / "shared"]:
        if (cand / "speech" / "SOURCES.md").exists():
            return cand / "speech"
    return None


# ------------------------------------------------------------------------------ VAD utterances
def _trimmed(text: str, voice: str, speed: int) -> np.ndarray:
    """espeak-ng speech with its own leading/trailing silence cut (it adds ~0.4 s after each phrase)."""
    import numpy as np

    x = np.frombuffer(speech.pcm(speech.synth(text, voice=voice, speed=speed, lead_s=0.0, tail_s=0.0)), dtype="<i2")
    loud = np.nonzero(np.abs(x.astype(np.int32)) > 328)[0]
    return x[max(0, loud[0] - 160) : loud[-1] + 1] if len(loud) else x[:0]


def pink_noise(n: int, level: float, seed: int = 0) -> np.ndarray:
    """n samples of pink (1/f) noise (float, int16 range) as loud as sox's `synth pinknoise vol
    <level>` that testkit/speech.py mixes in: RMS about 0.112 x level of full scale."""
    import numpy as np

    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec))
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return x / (np.std(x) or 1.0) * 0.112 * level * 32767


def utterance(
    parts: tuple[str, ...], voice: str = "en-us", speed: int = 160, gap_s: float = 0.3,
    noise: float = 0.0, lead_s: float = 0.5, tail_s: float = 2.5, seed: int = 0,
) -> tuple[bytes, float]:
    """`parts` spoken with exactly `gap_s` of silence between them (espeak's own pauses trimmed),
    `lead_s` before and `tail_s` after, pink noise at level `noise` (as in speech.synth) over it all.
    Returns (16 kHz s16le audio, seconds from the start to the end of the speech)."""
    import numpy as np

    pieces = [np.zeros(int(lead_s * 16000))]
    for i, part in enumerate(parts):
        if i:
            pieces.append(np.zeros(int(gap_s * 16000)))
        pieces.append(_trimmed(part, voice, speed).astype(np.float64))
    end_s = sum(len(p) for p in pieces) / 16000
    pieces.append(np.zeros(int(tail_s * 16000)))
    x = np.concatenate(pieces)
    if noise > 0:
        x = x + pink_noise(len(x), noise, seed)
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes(), end_s
