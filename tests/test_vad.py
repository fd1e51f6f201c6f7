"""Voice activity detection and the Endpointer, with the real webrtcvad and Silero engines on
espeak-ng speech (testkit/speech.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tallylight.config import CaptureConfig
from tallylight.errors import ConfigError, EngineError
from tallylight.vad import Endpointer, SileroVoiceDetector, WebRtcVoiceDetector, make_voice_detector
from testkit import speech, wake_corpus

ENGINES = ("webrtcvad", "silero")
BLOCK = 640  # 20 ms


def blocks(audio: bytes, size: int = BLOCK):
    for i in range(0, len(audio), size):
        yield audio[i : i + size]


def run(ep: Endpointer, audio: bytes) -> tuple[str | None, float | None]:
    for b in blocks(audio):
        r = ep.process(b)
        if r:
            return r, ep.elapsed_s
    return None, None


@pytest.fixture(params=ENGINES)
def vad(request):
    v = make_voice_detector(CaptureConfig(vad=request.param))
    yield v
    v.close()


def test_silence_is_not_speech(vad):
    out = [vad.process(b) for b in blocks(speech.pcm(speech.silence(2.0)))]
    assert all(f == 0.0 for f in out if f is not None)
    assert sum(f is not None for f in out) >= 2.0 / vad.frame_s - 2


def test_speech_is_speech(vad, synth):
    audio = speech.pcm(synth("the weather will be cloudy tomorrow", lead_s=0.0, tail_s=0.0))
    out = [f for f in (vad.process(b) for b in blocks(audio)) if f is not None]
    assert np.mean(out) > 0.6, out


def test_partial_frame_returns_none_and_reset_drops_it(vad):
    frame_bytes = vad.frame_samples * 2
    assert vad.process(b"\0" * (frame_bytes - 2)) is None  # no complete frame yet
    assert vad.process(b"\0" * 2) == 0.0  # now one
    vad.process(b"\0" * 100)
    vad.reset()
    # Had the 100 bytes been kept, this would complete a frame.
    assert vad.process(b"\0" * (frame_bytes - 100)) is None


def test_frame_decisions_do_not_depend_on_block_size(synth):
    audio = speech.pcm(synth("play some music in the living room", noise=0.02, tail_s=0.5))
    for cls in (WebRtcVoiceDetector, SileroVoiceDetector):
        ref = cls()
        fb = ref.frame_samples * 2
        audio = audio[: len(audio) - len(audio) % fb]
        per_frame = [ref.process(b) for b in blocks(audio, fb)]  # one frame per call: the reference
        ref.close()
        assert 0 < sum(per_frame) < len(per_frame)  # some speech, some not: the comparison means something
        for size in (BLOCK, 1056, 3 * fb + 11, 7):  # 20 ms, 33 ms, odd sizes
            v = cls()
            frames_seen = speech_frames = pending = 0
            for b in blocks(audio, size):
                pending += len(b)
                n, pending = divmod(pending, fb)
                f = v.process(b)
                if n:
                    frames_seen += n
                    speech_frames += round(f * n)
                else:
                    assert f is None
            v.close()
            assert frames_seen == len(per_frame)
            assert speech_frames == sum(per_frame)


def test_bad_aggressiveness_is_a_config_error():
    with pytest.raises(ConfigError, match="vad_aggressiveness"):
        WebRtcVoiceDetector(4)
    with pytest.raises(ConfigError, match="vad_aggressiveness"):
        SileroVoiceDetector(-1)


def test_closed_detector_says_so(vad):
    vad.close()
    vad.close()  # safe twice
    with pytest.raises(EngineError, match="after close"):
        vad.process(b"\0" * 640)


# ------------------------------------------------------------------------------------- Endpointer
UTTERANCES = [
    (("turn on the kitchen light",), "en-us", 0.0),
    (("set a timer for five minutes",), "en-gb", 0.02),
    (("what is the weather like tomorrow morning",), "en-us+f3", 0.05),
]


def endpointer(engine: str, **kw) -> Endpointer:
    args = dict(end_silence_s=0.6, no_speech_s=4.0, max_s=10.0, block_ms=20) | kw
    return Endpointer(make_voice_detector(CaptureConfig(vad=engine)), **args)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("parts,voice,noise", UTTERANCES)
def test_end_comes_soon_after_speech_ends(engine, parts, voice, noise, synth):
    audio, real_end = wake_corpus.utterance(parts, voice=voice, noise=noise, tail_s=3.0)
    ep = endpointer(engine)
    result, at = run(ep, audio)
    assert result == "end"
    assert ep.speech_started
    # Never before the speech is over; and within end_silence_s + a generous VAD lag after it.
    assert real_end + 0.6 - 0.05 <= at <= real_end + 0.6 + 0.8, (at, real_end)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_pauses_between_words_do_not_end_the_utterance(engine, noise, synth):
    # Pauses of 0.4 s (well under end_silence_s = 0.6 s, a normal hesitation) between phrases.
    parts = ("remind me to buy", "milk and bread", "tomorrow")
    audio, real_end = wake_corpus.utterance(parts, voice="en-gb", gap_s=0.4, noise=noise, tail_s=3.0)
    result, at = run(endpointer(engine), audio)
    assert result == "end" and at >= real_end + 0.5, (result, at, real_end)


@pytest.mark.parametrize("engine", ENGINES)
def test_silence_gives_no_speech_at_no_speech_s(engine):
    ep = Endpointer(make_voice_detector(CaptureConfig(vad=engine)), end_silence_s=0.6, no_speech_s=2.0, max_s=8.0, block_ms=20)
    result, at = run(ep, speech.pcm(speech.silence(5.0)))
    assert result == "no_speech" and abs(at - 2.0) < 0.03
    assert not ep.speech_started
    assert ep.process(b"\0" * 640) == "no_speech"  # stays until reset
    ep.reset()
    assert ep.process(b"\0" * 640) is None and ep.elapsed_s == pytest.approx(0.02)


@pytest.mark.parametrize("engine", ENGINES)
def test_long_speech_gives_max_length(engine, synth):
    text = "the weather will be cloudy tomorrow with some rain in the afternoon and a cold wind from the north"
    ep = Endpointer(make_voice_detector(CaptureConfig(vad=engine)), end_silence_s=0.6, no_speech_s=4.0, max_s=3.0, block_ms=20)
    result, at = run(ep, speech.pcm(synth(text, lead_s=0.2)))
    assert result == "max_length" and abs(at - 3.0) < 0.03 and ep.speech_started


def test_endpointer_checks_its_numbers():
    v = WebRtcVoiceDetector()
    with pytest.raises(ConfigError, match="end_silence_s"):
        Endpointer(v, end_silence_s=0, no_speech_s=4, max_s=8, block_ms=20)
    with pytest.raises(ConfigError, match="block_ms"):
        Endpointer(v, end_silence_s=0.6, no_speech_s=4, max_s=8, block_ms=0)
