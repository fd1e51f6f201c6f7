"""Intent accuracy through the real pipeline: `listen_file` with the shipped config and its
understander (gate, wake detector, pre-roll, VAD endpointing, pocketsphinx with the command grammar,
matcher). A compact floor: scripts/measure-intents has the full tables and the goals (97% right,
100% rejection). Generated speech varies with the espeak-ng version, so the floor sits below them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tallylight.config import load
from tallylight.listen import listen_file
from tallylight.speech.understand import make_understander

# One phrase per default command (two for the timer: both ends of its range and a two-word number).
COMMANDS = [
    ("turn on the light", "light_on", {}),
    ("turn off the light", "light_off", {}),
    ("what time is it", "time", {}),
    ("set a timer for twenty five minutes", "timer", {"minutes": 25}),
    ("set a timer for one minute", "timer", {"minutes": 1}),
    ("cancel the timer", "timer_cancel", {}),
    ("volume up", "volume_up", {}),
    ("volume down", "volume_down", {}),
    ("stop the alarm", "stop", {}),
    ("stop listening", "mute", {}),
]
VOICES = [("en-us", 0.03), ("en-gb", 0.03)]

# Not commands, each rejected in every voice and noise condition scripts/measure-intents tried.
NOT_COMMANDS = ["what is the weather like", "play some music", "cancel my meeting", "what time is the game on"]


@pytest.fixture(scope="module")
def pipeline(repo):
    """The shipped config and the understander users get."""
    cfg = load(repo / "config" / "tallylight.toml")
    consumer = make_understander(cfg)
    yield cfg, consumer
    consumer.close()


def intents(pipeline, path) -> tuple[int, list]:
    cfg, consumer = pipeline
    events = listen_file(cfg, path, consumer)
    return (sum(e.kind == "wake" for e in events),
            [(e.name, dict(e.slots)) for e in events if e.kind == "intent"])


def test_default_commands_after_the_wake_word(pipeline, synth):
    right, woken, misses = 0, 0, []
    for voice, noise in VOICES:
        for said, name, slots in COMMANDS:
            clip = synth(f"okay nabu, {said}", voice=voice, speed=160, noise=noise, lead_s=0.8, tail_s=1.5)
            wakes, got = intents(pipeline, clip)
            woken += wakes > 0
            if got == [(name, slots)]:
                right += 1
            else:
                misses.append((voice, said, got))
    # The wake detector hears these voices (scripts/measure-intents: no misses); without the wake
    # there is nothing for the recognizer to get right.
    assert woken >= 0.9 * len(VOICES) * len(COMMANDS), f"the wake word fired in only {woken} clips"
    assert right >= 0.9 * woken, f"{right}/{woken} right; misses: {misses}"


# Clips that the model's prior cepstral mean gets wrong ("thirteen" -> 30, "lights on" -> stop, "seven"
# -> 2, "turn off the lights" -> nothing) and the mean measured on the capture's pre-roll gets
# right: see speech/sphinx.py. (voice, speed, said, intent, slots)
MEAN_SENSITIVE = [
    ("en-gb", 140, "set a timer for thirteen minutes", "timer", {"minutes": 13}),
    ("en-gb", 140, "lights on", "light_on", {}),
    ("en-us", 180, "set a timer for seven minutes", "timer", {"minutes": 7}),
    ("en-gb", 180, "turn off the lights", "light_off", {}),
]


def test_decoding_starts_from_the_cepstral_mean_of_the_preroll(pipeline, synth):
    for voice, speed, said, name, slots in MEAN_SENSITIVE:
        clip = synth(f"okay nabu, {said}", voice=voice, speed=speed)
        assert intents(pipeline, clip) == (1, [(name, slots)]), (voice, speed, said)


# "stop" said alone, whose released P ends pocketsphinx's search inside "stop the [alarm]" ("Final
# result does not match the grammar"). (voice, speed, noise)
STOP_CUT_SHORT = [("en-us", 140, 0.0), ("en-gb", 140, 0.0), ("en-us+m3", 140, 0.03)]


def test_a_result_cut_short_falls_back_to_the_whole_phrase_it_begins_with(pipeline, synth):
    for voice, speed, noise in STOP_CUT_SHORT:
        clip = synth("okay nabu, stop", voice=voice, speed=speed, noise=noise, lead_s=0.8, tail_s=1.5)
        assert intents(pipeline, clip) == (1, [("stop", {})]), (voice, speed, noise)


@pytest.mark.parametrize("noise", [
    0.0,
    # A known miss, kept visible (strict: it fails the suite once it passes, so the mark comes off):
    # with the lowered second view of the wake word, the capture starts 40 ms earlier in this clip,
    # and pocketsphinx's grammar search then hears "stop the music" as "stop listening" with
    # confidence 0.98 (before, "start a two minute", rejected). Which way it falls hangs on tens of
    # milliseconds: the rejection of speech that is not a command is the work that fixes it.
    pytest.param(0.03, marks=pytest.mark.xfail(strict=True, reason="heard as 'stop listening': rejection work")),
])
def test_words_left_unexplained_reject_the_phrase_they_follow(pipeline, synth, noise):
    """... a result cut short falls back only when the words left out explain little: here "the
    music" is loud and left unexplained, so the coverage confidence rejects "stop"."""
    clip = synth("okay nabu, stop the music", voice="en-us", speed=160, noise=noise, lead_s=0.8, tail_s=1.5)
    assert intents(pipeline, clip) == (1, []), noise


def test_generated_non_commands_give_no_intent(pipeline, synth):
    fired = []
    for text in NOT_COMMANDS:
        wakes, got = intents(pipeline, synth(f"okay nabu, {text}", voice="en-us", speed=160, lead_s=0.8, tail_s=1.5))
        assert wakes, f"the wake word did not fire before {text!r}: the test would mean nothing"
        if got:
            fired.append((text, got))
    assert fired == []


@pytest.mark.slow
def test_recorded_speech_gives_no_intent(pipeline, shared_speech, synth, tmp_path):
    """Read speech, digits and keywords, each after "okay nabu" the way a capture would see them."""
    wake = synth("okay nabu", lead_s=0.8, tail_s=0.2)
    recordings = sorted((shared_speech / "pocketsphinx" / "librivox").glob("*.wav"))
    recordings += [shared_speech / "vosk" / "test.wav", shared_speech / "porcupine" / "multiple_keywords.wav"]
    assert len(recordings) == 7
    fired = []
    for rec in recordings:
        joined = tmp_path / f"wake+{rec.name}"
        subprocess.run(["sox", "-R", str(wake), "-r", "16000", "-c", "1", "-b", "16", str(rec), str(joined)], check=True)
        wakes, got = intents(pipeline, joined)
        assert wakes, f"the wake word did not fire before {rec.name}: the test would mean nothing"
        if got:
            fired.append((rec.name, got))
    assert fired == []


def test_listen_json_gives_typed_slots(repo, synth):
    clip = synth("okay nabu, set a timer for twenty five minutes", speed=160, noise=0.03, lead_s=0.8, tail_s=1.5)
    r = subprocess.run([sys.executable, "-m", "tallylight", "listen", str(clip), "--json",
                        "--config", str(repo / "config" / "tallylight.toml")],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    found = [e for e in events if e["event"] == "intent"]
    assert [(e["name"], e["slots"]) for e in found] == [("timer", {"minutes": 25})]
    assert type(found[0]["slots"]["minutes"]) is int  # a JSON number, not "25"
    assert not any(e["event"] == "action" for e in events), "listen acts only with --act"


def test_listen_act_drives_the_light_through_the_configured_pin_factory(repo, synth, tmp_path):
    """--act uses gpio.pin_factory as the daemon does: with "mock" the light command works on a
    machine without GPIO, and gpiozero never falls back to a factory of its own choosing."""
    text = (repo / "config" / "tallylight.toml").read_text()
    assert 'pin_factory = "auto"' in text
    cfg = tmp_path / "tallylight.toml"
    cfg.write_text(text.replace('pin_factory = "auto"', 'pin_factory = "mock"'))
    clip = synth("okay nabu, turn on the light", speed=160, lead_s=0.8, tail_s=1.5)
    r = subprocess.run([sys.executable, "-m", "tallylight", "listen", str(clip), "--json", "--act", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    actions = [e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "action"]
    assert len(actions) == 1 and actions[0]["ok"], actions
    assert "PinFactoryFallback" not in r.stderr and "no GPIO" not in r.stderr
