"""The generated test speech is the same, byte for byte, on every run and machine (testkit/speech.py)."""

from __future__ import annotations

import hashlib

from testkit import speech

# (text, noise, rate, channels) -> SHA-256 of the WAV that espeak-ng 1.51 and SoX 14.4.2 make on
# Debian 12 for x86_64 (this project's CI). Another such machine must make exactly these bytes; other
# versions or machines are held to making the same bytes twice.
_PINNED_FOR = ("eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/x86_64-linux-gnu/espeak-ng-data"
               " | sox:      SoX v14.4.2")
_CLIPS = {
    ("okay nabu, stop the music", 0.03, 16000, 1): "307bbbc5b264271e7cae319df20e27e3e245519e06aec4e72506a2dd1dd5e416",
    ("okay nabu", 0.0, 48000, 2): "45f653a598d1452152c7d02fb43184d9977068851f5bb2c13b4bdceb74e965c7",
}


def _made_in(cache, monkeypatch, text, noise, rate, channels):
    monkeypatch.setattr(speech, "_CACHE", cache)
    return speech.synth(text, noise=noise, rate=rate, channels=channels).read_bytes()


def test_two_runs_make_the_same_bytes(synth, tmp_path, monkeypatch):
    """Noise and dither are seeded: two caches made from nothing hold identical clips, so a
    recognition test says the same thing on every machine."""
    for text, noise, rate, channels in _CLIPS:
        first = _made_in(tmp_path / "a", monkeypatch, text, noise, rate, channels)
        second = _made_in(tmp_path / "b", monkeypatch, text, noise, rate, channels)
        assert first == second, f"{text!r} (noise {noise}, {rate} Hz x {channels}) differs between two runs"
        assert len(first) > 44
        if speech.tool_versions() == _PINNED_FOR:
            digest = hashlib.sha256(first).hexdigest()
            assert digest == _CLIPS[(text, noise, rate, channels)], f"{text!r} differs from the bytes CI's tools make"


def test_noise_is_really_mixed_in(synth, tmp_path, monkeypatch):
    """The seed fixes the noise; it does not remove it."""
    clean = _made_in(tmp_path / "a", monkeypatch, "okay nabu", 0.0, 16000, 1)
    noisy = _made_in(tmp_path / "b", monkeypatch, "okay nabu", 0.03, 16000, 1)
    assert abs(len(clean) - len(noisy)) < 16 and clean[44:20044] != noisy[44:20044]


def test_the_cache_key_holds_the_tool_versions(synth):
    versions = speech.tool_versions()
    assert "eSpeak NG" in versions and "SoX" in versions


def test_speech_end_is_where_the_words_stop(synth):
    """The measurements time endpointing from speech_end_s: silence added after the words does not
    move it, cutting the last word moves it back, and a silent clip has no speech at all."""
    short = speech.pcm(synth("turn on the light", lead_s=0.5, tail_s=0.0))
    long = speech.pcm(synth("turn on the light", lead_s=0.5, tail_s=1.5))
    end = speech.speech_end_s(long)
    assert 0.5 + 0.5 < end == speech.speech_end_s(short) < len(short) / 32000
    assert speech.speech_end_s(long[: int((end - 0.2) * 32000)]) <= end - 0.2
    assert speech.speech_end_s(bytes(32000)) == 0.0
