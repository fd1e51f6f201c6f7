"""The real pocketsphinx engine on generated and recorded speech, with hand-written JSGF grammars."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from tallylight.errors import EngineError
from tallylight.speech.recognizer import Hypothesis
from tallylight.speech.sphinx import SEARCH_LEAD_S, SphinxRecognizer, jsgf_words, prune_alternates
from testkit import speech

COMMANDS_JSGF = """#JSGF V1.0;
grammar commands;
public <command> = <light_on> | <light_off> | <time> | <timer> | <timer_cancel> | <volume_up> | <volume_down> | <mute>;
<light_on> = turn on the light | lights on;
<light_off> = turn off the light | lights off;
<time> = what time is it;
<timer> = set a timer for <n> minutes;
<n> = <ones> | <teens> | <tens> [<ones>];
<ones> = one | two | three | four | five | six | seven | eight | nine;
<teens> = ten | eleven | twelve | thirteen | fourteen | fifteen | sixteen | seventeen | eighteen | nineteen;
<tens> = twenty | thirty | forty | fifty | sixty | seventy | eighty | ninety;
<timer_cancel> = cancel the timer;
<volume_up> = volume up;
<volume_down> = volume down;
<mute> = stop listening;
"""

BLOCK = 640  # 20 ms


@pytest.fixture(scope="module")
def rec():
    r = SphinxRecognizer(COMMANDS_JSGF)
    yield r
    r.close()


def decode(rec: SphinxRecognizer, pcm: bytes, block: int = BLOCK) -> tuple[list[Hypothesis], Hypothesis]:
    rec.reset()
    partials = [h for i in range(0, len(pcm), block) if (h := rec.process(pcm[i : i + block])) is not None]
    return partials, rec.finish()


def wav_pcm(path) -> bytes:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


@pytest.mark.parametrize("text", [
    "turn on the light", "turn off the light", "lights off", "what time is it",
    "set a timer for twenty three minutes", "cancel the timer", "volume up", "volume down", "stop listening",
])
@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_default_commands_on_generated_speech(rec, synth, text, noise):
    partials, final = decode(rec, speech.pcm(synth(text, noise=noise)))
    assert final.text == text
    assert final.final and final.complete
    assert final.confidence >= 0.5
    assert partials and all(not p.final for p in partials)
    assert partials[-1].text == text  # the partials grew into the final text


def test_block_size_does_not_change_the_result(rec, synth):
    pcm = speech.pcm(synth("set a timer for twenty three minutes"))
    # Odd block sizes split samples and 10 ms frames; the result must not depend on that.
    assert decode(rec, pcm, 333)[1] == decode(rec, pcm, 3200)[1]


def test_truncated_hypothesis_is_marked_incomplete(rec, synth):
    # A phrase cut short ends the FSG search in a state that is not the end of a phrase:
    # pocketsphinx says "Final result does not match the grammar" and returns it anyway.
    final = decode(rec, speech.pcm(synth("turn on the")))[1]
    assert final.text == "turn on the"
    assert final.complete is False
    assert decode(rec, speech.pcm(synth("turn on the light")))[1].complete is True


def test_recorded_speech_go_forward(shared_speech):
    jsgf = """#JSGF V1.0;
grammar robot;
public <move> = go (forward | back) <n> meters | turn (left | right) | stop;
<n> = one | two | three | four | five | six | seven | eight | nine | ten;
"""
    raw = (shared_speech / "pocketsphinx" / "goforward.raw").read_bytes()
    with SphinxRecognizer(jsgf) as r:
        final = decode(r, raw)[1]
    assert final.text == "go forward ten meters"
    assert final.complete and final.confidence >= 0.5


@pytest.mark.parametrize("name", ["librivox", "digits", "keywords"])
def test_non_command_speech_gets_low_confidence(rec, shared_speech, name):
    """Read speech, spoken digits and a list of keywords: the search forces them onto some command,
    but most of their loud frames stay unexplained, so the confidence is below the 0.5 default."""
    if name == "librivox":
        paths = sorted((shared_speech / "pocketsphinx" / "librivox").glob("*.wav"))
    elif name == "digits":
        paths = [shared_speech / "vosk" / "test.wav"]
    else:
        paths = [shared_speech / "porcupine" / "multiple_keywords.wav"]
    for path in paths:
        final = decode(rec, wav_pcm(path), 3200)[1]
        assert final.confidence < 0.5, (path.name, final)


def test_reset_mid_utterance_forgets_it(rec, synth):
    rec.reset()
    half = speech.pcm(synth("volume down"))
    rec.process(half[: len(half) // 2])
    rec.reset()
    assert decode(rec, speech.pcm(synth("cancel the timer")))[1].text == "cancel the timer"


def test_finish_without_audio_is_empty(rec):
    rec.reset()
    assert rec.finish() == Hypothesis("", 0.0, final=True, complete=False)


def test_silence_recognizes_nothing(rec):
    final = decode(rec, speech.pcm(speech.silence(1.5)))[1]
    assert final.confidence < 0.5


def test_missing_words_name_the_fix():
    jsgf = "#JSGF V1.0;\ngrammar g;\npublic <a> = okay nabu | frobnicate the zorblax;\n"
    with pytest.raises(EngineError, match="no pronunciation for: frobnicate, zorblax"):
        SphinxRecognizer(jsgf)
    # The same grammar loads once the words are given pronunciations ("nabu" ships with us).
    extra = {"frobnicate": "F R AA B N IH K EY T", "zorblax": "Z AO R B L AE K S"}
    with SphinxRecognizer(jsgf, extra) as r:
        assert r.missing_words() == set()
        assert r.words == {"okay", "nabu", "frobnicate", "the", "zorblax"}


def test_alternates_that_sound_like_another_words_prefix_are_dropped():
    prons = {"thirty": ["TH ER D IY", "TH ER T IY"], "thirteen": ["TH ER T IY N"],
             "seven": ["S EH V AH N"], "seventy": ["S EH V AH N T IY", "S EH V AH N IY"],
             "on": ["AA N", "AO N"], "off": ["AO F"], "the": ["DH AH", "DH IY"]}
    assert prune_alternates(prons) == {**prons, "thirty": ["TH ER D IY"], "seventy": ["S EH V AH N T IY"]}
    # Alone in a grammar, a word keeps every pronunciation; a primary is never dropped.
    assert prune_alternates({"thirty": ["TH ER D IY", "TH ER T IY"]}) == {"thirty": ["TH ER D IY", "TH ER T IY"]}
    assert prune_alternates({"a": ["AH"], "ab": ["AH B"]}) == {"a": ["AH"], "ab": ["AH B"]}


def test_the_decoder_knows_only_the_grammar_words_with_their_kept_pronunciations():
    jsgf = "#JSGF V1.0;\ngrammar g;\npublic <a> = set a timer for (thirteen | thirty) minutes | lights on;\n"
    with SphinxRecognizer(jsgf) as r:
        d = r._decoder
        assert d.lookup_word("thirty") == "TH ER D IY"
        assert d.lookup_word("thirty(2)") is None  # TH ER T IY: "thirteen" without its N
        assert d.lookup_word("on(2)") == "AO N"  # an alternate that collides with nothing stays
        assert d.lookup_word("radio") is None  # not in the grammar: not in the decoder's dictionary
    with SphinxRecognizer("#JSGF V1.0;\ngrammar g;\npublic <a> = thirty minutes;\n") as r:
        assert r._decoder.lookup_word("thirty(2)") == "TH ER T IY"


def test_bad_pronunciation_and_bad_grammar_are_engine_errors():
    with pytest.raises(EngineError, match="ARPABET"):
        SphinxRecognizer("#JSGF V1.0;\ngrammar g;\npublic <a> = zorblax;\n", {"zorblax": "QQ XX"})
    with pytest.raises(EngineError, match="no public rule"):
        SphinxRecognizer("#JSGF V1.0;\ngrammar g;\n<a> = lights on;\n")
    with pytest.raises(EngineError, match="could not load the command grammar"):
        SphinxRecognizer("#JSGF V1.0;\ngrammar g;\npublic <a> = (lights on;\n")


def test_close_twice_and_use_after_close():
    r = SphinxRecognizer("#JSGF V1.0;\ngrammar g;\npublic <a> = lights on;\n")
    r.close()
    r.close()
    r.reset()  # harmless
    with pytest.raises(EngineError, match="closed"):
        r.process(b"\0\0" * 160)


def test_jsgf_words():
    assert jsgf_words(COMMANDS_JSGF) >= {"turn", "on", "the", "light", "ninety", "listening"}
    assert not {w for w in jsgf_words(COMMANDS_JSGF) if not w.isalpha()}


def test_keeps_no_copy_of_the_utterance(rec, synth):
    """P4: once an utterance is decoded the recognizer holds no audio of it."""
    pcm = speech.pcm(synth("turn on the light"))
    partials, final = decode(rec, pcm)
    assert final.text == "turn on the light"
    held = {k: len(v) for k, v in vars(rec).items()
            if isinstance(v, (bytes, bytearray, memoryview, np.ndarray)) and len(v) > 64 and any(v)}
    assert held == {}, f"audio left in the recognizer: {held}"


def test_first_samples_are_zeroed_once_decoded_or_dropped(rec, synth):
    """P4: the first prime_s of audio wait in the recognizer, in one buffer allocated once, until the
    cepstral mean is measured; they are overwritten with zeros when decoded or dropped."""
    pcm = speech.pcm(synth("volume up"))
    buffer = rec._priming
    rec.reset()
    assert rec.process(pcm[:3200]) is None  # 0.1 s: still gathering, nothing decoded yet
    assert rec._primed == 3200 and any(buffer[:3200])
    rec.reset()
    assert rec._primed == 0 and not any(buffer)
    for i in range(0, len(pcm), BLOCK):
        rec.process(pcm[i:i + BLOCK])
    assert len(pcm) > len(buffer)  # so the gathered samples were decoded before the end
    assert rec._priming is buffer and rec._primed == 0 and not any(buffer)
    assert rec.finish().text == "volume up"


def test_a_very_short_utterance_is_decoded_from_the_prior_mean(synth):
    # Under MIN_PRIME_S of audio, the model's prior mean is used; the result is still a hypothesis.
    with SphinxRecognizer(COMMANDS_JSGF) as r:
        r.process(speech.pcm(synth("stop", lead_s=0.0, tail_s=0.0))[:4000])  # 0.125 s
        final = r.finish()
        assert final.final and final.confidence < 0.5


def test_utterance_shorter_than_the_priming_window_is_decoded(synth):
    pcm = speech.pcm(synth("volume down", lead_s=0.1, tail_s=0.1))
    with SphinxRecognizer(COMMANDS_JSGF, prime_s=len(pcm) / 32000 + 1.0) as r:
        partials, final = decode(r, pcm)
        assert partials == []  # all of it was still being gathered when the utterance ended
        assert final.text == "volume down" and final.complete


def test_search_starts_shortly_before_the_first_loud_frame():
    quiet = np.zeros(16000, dtype="<i2")  # 1 s
    t = np.arange(8000) / 16000
    loud = (8000 * np.sin(2 * np.pi * 300 * t)).astype("<i2")
    assert SphinxRecognizer._search_start(np.concatenate([quiet, loud])) == (100 - round(SEARCH_LEAD_S * 100)) * 160
    # Loud from the first frame (then quiet): nothing is left out.
    assert SphinxRecognizer._search_start(np.concatenate([loud, quiet])) == 0
    assert SphinxRecognizer._search_start(np.zeros(100, dtype="<i2")) == 0


def test_energy_track_lines_up_with_the_decoder_frames(rec, synth):
    """The coverage confidence maps the decoder's word frames onto the energy track: both must count
    from the same sample, also when the quiet lead of the first samples is left out of the search."""
    pcm = speech.pcm(synth("volume up", lead_s=0.9))
    rec.reset()
    for i in range(0, len(pcm), BLOCK):
        rec.process(pcm[i:i + BLOCK])
    frames = rec._decoder.n_frames()
    assert len(pcm) // 320 - frames > 50  # the lead was left out
    assert abs(len(rec._energy) - frames) <= 5  # the front end holds back a few frames mid-utterance
    assert rec.finish().text == "volume up"


def test_the_cepstral_mean_is_measured_on_the_configured_preroll(repo, synth):
    """With a pre-roll shorter than PRIME_S, partial results (and so the early end) must not wait
    for PRIME_S of audio: the priming window is the configured pre-roll (at least MIN_PRIME_S)."""
    import dataclasses

    from tallylight.config import load
    from tallylight.speech.sphinx import MIN_PRIME_S, PRIME_S, prime_window
    from tallylight.speech.understand import make_understander

    cfg = load(repo / "config" / "tallylight.toml")
    cfg = dataclasses.replace(cfg, recognizer=dataclasses.replace(cfg.recognizer, engine="pocketsphinx"))
    pcm = speech.pcm(synth("okay nabu, turn on the light", lead_s=0.3, tail_s=0.3))
    for preroll_s, window in ((0.6, 0.6), (2.0, 2.0), (0.0, MIN_PRIME_S)):
        assert prime_window(preroll_s) == window
        capture = dataclasses.replace(cfg.capture, preroll_s=preroll_s, ring_s=max(cfg.capture.ring_s, preroll_s))
        understander = make_understander(dataclasses.replace(cfg, capture=capture))
        rec = understander.recognizer
        try:
            assert rec.prime_s == window and len(rec._priming) == int(window * 16000) * 2
            if window < PRIME_S:
                # The first partial result comes as soon as the window is full, not after PRIME_S.
                first = next(i for i in range(0, len(pcm), BLOCK) if rec.process(pcm[i:i + BLOCK]) is not None)
                assert first / 32000 < PRIME_S - 0.2, f"first partial after {first / 32000:.2f} s"
        finally:
            understander.close()


def test_a_cut_short_result_falls_back_only_to_a_whole_phrase_of_its_own_words():
    from types import SimpleNamespace

    jsgf = "#JSGF V1.0;\ngrammar g;\npublic <g> = [ okay ] ( stop | stop the alarm | turn on the light );\n"
    with SphinxRecognizer(jsgf) as r:
        def segs(*words):
            return [SimpleNamespace(word=w, start_frame=10 * i, end_frame=10 * i + 9) for i, w in enumerate(words)]

        kept = segs("okay", "stop", "the")
        assert r._complete_prefix("okay stop the", kept) == ("okay stop", kept[:2])
        assert r._complete_prefix("stop the", segs("stop", "the(2)"))[0] == "stop"  # an alternate pronunciation
        assert r._complete_prefix("turn on the", segs("turn", "on", "the")) == ("", [])  # no whole phrase in it
        # Segments that are not the text's words (cannot tell which is which): no fallback.
        assert r._complete_prefix("stop the", segs("the", "stop")) == ("", [])
        assert r._complete_prefix("stop the", segs("stop")) == ("", [])


def test_silence_is_the_only_filler(rec):
    """The model's [NOISE] and [SPEECH] fillers slow the end-of-utterance lattice and changed no
    result (speech/sphinx.py): the decoder is built without them."""
    assert rec._decoder.lookup_word("<sil>") is not None
    assert rec._decoder.lookup_word("[NOISE]") is None and rec._decoder.lookup_word("[SPEECH]") is None
