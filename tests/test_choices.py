"""The config's fixed choices (tallylight.choices): the words config/tallylight.toml documents, parsed
into members that read as plain strings wherever a value is shown or sent."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from tallylight import config
from tallylight.choices import ChannelMode, Choice, HomeAssistantMode, IndicatorKind
from tallylight.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "tallylight.toml"
# A quoted word in a comment, unless it is another key's value (`gpio.pin_factory = "mock"`).
_WORD = re.compile(r'(?<!= )"([a-z0-9_]+)"')


def choice_keys() -> list[tuple[str, str, type[Choice]]]:
    """(section, key, its Choice) for every config key that is one of a few words."""
    out = []
    for section in config.section_fields():
        for f in dataclasses.fields(type(getattr(config.Config(), section))):
            if f.metadata.get("parse") is not None:
                out.append((section, f.name, f.metadata["parse"]))
    return out


def documented_words(section: str, key: str) -> set[str]:
    """The quoted words in the comment lines right above `key` in [section] of the shipped config."""
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"[{section}]")
    at = next(n for n in range(start + 1, len(lines)) if re.match(rf"{key}\s*=", lines[n]))
    comment = []
    n = at - 1
    while n > start and lines[n].lstrip().startswith("#"):
        comment.append(lines[n])
        n -= 1
    return set(_WORD.findall("\n".join(comment)))


def test_every_fixed_choice_of_the_config_is_a_choice():
    assert {(s, k) for s, k, _ in choice_keys()} >= {
        ("audio", "channel_mode"), ("capture", "vad"), ("mute", "control"), ("mute", "at_start"), ("mute", "key"),
        ("indicator", "kind"), ("gpio", "pin_factory"), ("daemon", "log_level"), ("home_assistant", "mode")}


@pytest.mark.parametrize("section, key, kind", choice_keys(), ids=[f"{s}.{k}" for s, k, _ in choice_keys()])
def test_the_shipped_config_documents_exactly_the_words_of_each_choice(section, key, kind):
    assert documented_words(section, key) == set(kind.words()), f"{section}.{key}: the comment above it and {kind.__name__}"


def test_a_parsed_choice_is_its_member_and_reads_as_the_plain_word():
    cfg = config.from_dict({"audio": {"channel_mode": "loudest"}, "indicator": {"kind": "terminal"}})
    assert cfg.audio.channel_mode is ChannelMode.LOUDEST and config.Config().indicator.kind is IndicatorKind.AUTO
    assert cfg.indicator.kind == "terminal" and f"{cfg.indicator.kind!r}" == "'terminal'" and f"{cfg.indicator.kind}" == "terminal"
    assert json.dumps({"mode": HomeAssistantMode.AUDIO}) == '{"mode": "audio"}'
    assert type(str(HomeAssistantMode.AUDIO)) is str


def test_a_word_that_is_no_choice_is_refused_with_the_choices_listed():
    with pytest.raises(ConfigError, match=r"audio\.channel_mode must be one of 'mean', 'loudest', 'single', not 'mix'$"):
        config.from_dict({"audio": {"channel_mode": "mix"}})
