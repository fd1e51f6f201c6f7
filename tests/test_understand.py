"""From a recognizer's final hypothesis to an intent or no_match (speech/understand.py), with the real
default commands' grammar: what the pre-roll's wake phrase may leave at the start of a result."""

from __future__ import annotations

import pytest

from tallylight.events import IntentMatched, Transcript
from tallylight.speech.commands import default_commands
from tallylight.speech.grammar import Grammar
from tallylight.speech.recognizer import Hypothesis
from tallylight.speech.recognizers import pairing
from tallylight.speech.understand import Understander, lead_decides, weigh


@pytest.fixture(scope="module")
def understander():
    # interpret() uses only the grammar; the recognizer is what process() and finish() feed from.
    return Understander(None, Grammar(default_commands()), min_confidence=0.5, wake_words=("okay", "nabu"))


def outcome(understander, text: str, confidence: float = 0.9, complete: bool = False):
    events = understander.interpret(Hypothesis(text, confidence, final=True, complete=complete), 1.0)
    intents = [(e.name, dict(e.slots)) for e in events if e.kind == "intent"]
    return intents[0] if intents else None


@pytest.mark.parametrize("text", [
    "turn on the light",
    "okay nabu turn on the light",  # the whole wake phrase (vosk and pocketsphinx grammars have it)
    "nabu turn on the light",  # its end: the pre-roll began inside it
    "[unk] turn on the light",  # vosk: a model without "nabu"
    "okay [unk] turn on the light",
    "[unk] [unk] turn on the light",
    "[unk] nabu turn on the light",
    "okay turn on the light",  # vosk: a model with neither "nabu" nor [unk] drops it from its lines
    "[unk] okay nabu turn on the light",  # a sound just before the wake phrase
])
def test_the_wake_phrase_at_the_start_is_dropped(understander, text):
    assert outcome(understander, text) == ("light_on", {})


@pytest.mark.parametrize("text", ["[unk] stop", "nabu stop", "okay [unk] stop", "okay nabu stop", "stop"])
def test_a_phrase_that_begins_a_longer_one_is_itself_after_the_wake_phrase(understander, text):
    # Not a vosk phrase as heard ("[unk] stop"), but exactly the phrase "stop" once the wake phrase goes.
    assert outcome(understander, text, complete=False) == ("stop", {})


@pytest.mark.parametrize("text", [
    "[unk] [unk] [unk] turn on the light",  # more than the wake phrase before the command
    "nabu [unk] turn on the light",  # an unknown word after the wake phrase
    "okay nabu [unk] turn on the light",
    "okay okay turn on the light",
    "turn on [unk] light",
    "turn on the light [unk]",
    "[unk]",
    "okay nabu",
    "",
])
def test_any_other_unknown_speech_is_no_command(understander, text):
    assert outcome(understander, text) is None


def test_low_confidence_is_no_command(understander):
    assert outcome(understander, "okay nabu set a timer for five minutes", 0.49) is None
    assert outcome(understander, "okay nabu set a timer for five minutes", 0.5) == ("timer", {"minutes": 5})


def test_without_wake_words_one_leading_unknown_word_goes():
    bare = Understander(None, Grammar(default_commands()), min_confidence=0.5, wake_words=())
    assert outcome(bare, "[unk] volume up") == ("volume_up", {})
    assert outcome(bare, "[unk] [unk] volume up") is None


# -- weighing two recognizers (recognizer.engine = "both") -------------------------------------------

def _result(text: str, confidence: float, intent: str | None, slots: dict | None = None):
    return Transcript(0.0, text, confidence), (IntentMatched(0.0, intent, slots or {}) if intent else None)


@pytest.mark.parametrize("vosk,sphinx,chosen", [
    # the same command: it
    (("lights on", 0.6, "light_on"), ("lights on", 1.0, "light_on"), "vosk"),
    # the same command with other slot values: vosk's numbers, whatever its confidence
    (("set a timer for thirteen minutes", 1.0, "timer", {"minutes": 13}),
     ("set a timer for thirty minutes", 1.0, "timer", {"minutes": 30}), "vosk"),
    (("set a timer for ninety nine minutes", 0.55, "timer", {"minutes": 99}),
     ("set the timer for twenty nine minutes", 1.0, "timer", {"minutes": 29}), "vosk"),
    # different commands: vosk's when it is confident, else pocketsphinx's
    (("lights off", 0.75, "light_off"), ("lights on", 1.0, "light_on"), "sphinx"),
    (("lights off", 0.8, "light_off"), ("lights on", 1.0, "light_on"), "vosk"),
    # a command from one only: with enough confidence
    (("volume up", 0.85, "volume_up"), ("turn the light", 0.0, None), "vosk"),
    (("volume up", 0.7, "volume_up"), ("turn the light", 0.0, None), None),
    (("turn off lights", 1.0, None), ("turn off the lights", 0.95, "light_off"), "sphinx"),
    (("turn off lights", 1.0, None), ("turn off the lights", 0.85, "light_off"), None),
    # neither
    (("play music", 0.9, None), ("lights", 0.0, None), None),
])
def test_weigh_two_recognizers(vosk, sphinx, chosen):
    lead, pair = pairing()
    assert (lead, pair.partner) == ("vosk", "pocketsphinx")
    v, s = _result(*vosk), _result(*sphinx)
    got = weigh(v, s, pair)
    if lead_decides(v, pair):
        # PairedUnderstander then skips pocketsphinx's end of utterance: it must not matter.
        assert got == v
    if chosen is None:
        assert got == (v[0], None), "no command: vosk's transcript and no intent"
    else:
        assert got == {"vosk": v, "sphinx": s}[chosen]


def test_both_recognizers_without_a_vosk_model_is_one_line_naming_the_fix(repo, tmp_path):
    import dataclasses

    from tallylight.config import load
    from tallylight.errors import EngineError
    from tallylight.speech.understand import make_understander

    cfg = load(repo / "config" / "tallylight.toml")
    cfg = dataclasses.replace(cfg, recognizer=dataclasses.replace(cfg.recognizer, engine="both", vosk_model=str(tmp_path / "none")))
    with pytest.raises(EngineError) as e:
        make_understander(cfg)
    assert "tallylight models download small-en-us" in str(e.value) and "\n" not in str(e.value)


def _recognizer_cfg(repo, **recognizer):
    import dataclasses

    from tallylight.config import load

    cfg = load(repo / "config" / "tallylight.toml")
    return dataclasses.replace(cfg, recognizer=dataclasses.replace(cfg.recognizer, **recognizer))


def test_auto_with_a_vosk_model_path_that_is_not_there_is_an_error_not_pocketsphinx(repo, tmp_path):
    """A typo in recognizer.vosk_model must not quietly give the weaker recognizer."""
    from tallylight.errors import EngineError
    from tallylight.speech.understand import make_understander

    with pytest.raises(EngineError) as e:
        make_understander(_recognizer_cfg(repo, engine="auto", vosk_model=str(tmp_path / "vosk-modl")))
    assert "recognizer.vosk_model" in str(e.value) and "no such folder" in str(e.value) and "\n" not in str(e.value)


def test_a_command_word_pocketsphinx_lacks_fails_once_and_is_not_blamed_on_the_wake_phrase(repo, caplog):
    """Only a wake word without a pronunciation makes the grammar go without the wake-phrase prefix;
    any other unknown word is the error itself, said once (no second model load)."""
    import dataclasses

    from tallylight.errors import UnknownWordsError
    from tallylight.speech.understand import make_understander

    cfg = _recognizer_cfg(repo, engine="pocketsphinx")
    commands = {**cfg.commands, "odd": {"phrases": ["frobnicate the widget"], "action": "stop"}}
    cfg = dataclasses.replace(cfg, commands=commands)
    with caplog.at_level("INFO"), pytest.raises(UnknownWordsError) as e:
        make_understander(cfg)
    assert e.value.words == {"frobnicate"}
    assert not [r for r in caplog.records if "without the wake phrase prefix" in r.getMessage()]


def test_a_folder_that_is_not_a_vosk_model_gives_one_line_on_stderr(repo, tmp_path):
    """Kaldi's own ERROR lines are silenced for the load; the user sees tallylight's one line."""
    import subprocess
    import sys
    import wave

    empty = tmp_path / "model"
    empty.mkdir()
    text = (repo / "config" / "tallylight.toml").read_text()
    text = text.replace('engine = "auto"', 'engine = "vosk"').replace('vosk_model = ""', f'vosk_model = "{empty}"')
    assert f'vosk_model = "{empty}"' in text
    cfg = tmp_path / "t.toml"
    cfg.write_text(text)
    wav = tmp_path / "quiet.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(bytes(32000))
    r = subprocess.run([sys.executable, "-m", "tallylight", "listen", "--config", str(cfg), str(wav)],
                       capture_output=True, text=True, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 69 and len(lines) == 1, r.stderr
    assert "not a complete vosk model" in lines[0]


def test_a_word_pocketsphinx_lacks_can_be_given_its_pronunciation_in_the_config(repo, tmp_path, synth):
    """The error names the key that fixes it, and the key does: with [recognizer] pronunciations the
    word is in the grammar and a command with it is heard."""
    from tallylight import config
    from tallylight.errors import UnknownWordsError
    from tallylight.listen import listen_file
    from tallylight.speech.understand import make_understander

    text = (repo / "config" / "tallylight.toml").read_text().replace('engine = "auto"', 'engine = "pocketsphinx"')
    text += '\n[commands.zorbo]\nphrases = ["wake up zorbo"]\naction = "stop"\n'
    conf = tmp_path / "t.toml"
    conf.write_text(text)
    with pytest.raises(UnknownWordsError) as e:
        make_understander(config.load(conf))
    assert "[recognizer] pronunciations" in str(e.value) and "docs/commands.md" in str(e.value)
    conf.write_text(text.replace("pronunciations = {}", 'pronunciations = { zorbo = "Z AO R B OW" }'))
    cfg = config.load(conf)
    consumer = make_understander(cfg)
    try:
        clip = synth("okay nabu, wake up zorbo", lead_s=0.8, tail_s=1.5)
        intents = [e.name for e in listen_file(cfg, clip, consumer) if e.kind == "intent"]
    finally:
        consumer.close()
    assert intents == ["zorbo"]


@pytest.mark.parametrize("table", ['{ Zorbo = "Z AO R B OW" }', '{ zorbo = "Z AO R B Q" }', '{ zorbo = "" }', '{ zorbo = 3 }'])
def test_a_pronunciation_that_is_not_arpabet_is_a_config_error(tmp_path, table):
    from tallylight import config
    from tallylight.errors import ConfigError

    conf = tmp_path / "t.toml"
    conf.write_text(f"[recognizer]\npronunciations = {table}\n")
    with pytest.raises(ConfigError, match="recognizer.pronunciations must be a table of words and their ARPABET phones"):
        config.load(conf)
