"""The fixed choices of the config: one `StrEnum` per key whose value is one of a few words.

`config.py` parses such a key into its member, and the code compares members, never free strings.
Imports nothing from tallylight, so any module can name a choice without importing the config.

A member is a `str` equal to its word: f-strings, `%s`, `", ".join(...)` and JSON show the word. Its
repr is the word's repr ('mean', not <ChannelMode.MEAN: 'mean'>), so a message that shows a value
with `!r` reads the same whether the value was parsed or written by hand. What crosses the uplink's
socket goes as `str(member)`: its messages accept exactly `str`, not a subclass.
"""

from __future__ import annotations

from enum import StrEnum


class Choice(StrEnum):
    """A config key's fixed words (the base of the choices below)."""

    def __repr__(self) -> str:
        return repr(self.value)

    @classmethod
    def words(cls) -> tuple[str, ...]:
        """The words in the order the config documents them (a plain `"x" in Enum` raises on Python 3.11)."""
        return tuple(m.value for m in cls)


class ChannelMode(Choice):
    """audio.channel_mode: how several input channels become one."""

    MEAN = "mean"
    LOUDEST = "loudest"
    SINGLE = "single"


class VadEngine(Choice):
    """capture.vad: the voice activity detector that ends a capture."""

    WEBRTCVAD = "webrtcvad"
    SILERO = "silero"


class MuteControlKind(Choice):
    """mute.control: the physical mute control (a key on the terminal for trying it on a laptop)."""

    SWITCH = "switch"
    BUTTON = "button"
    KEY = "key"


class AtStart(Choice):
    """mute.at_start: a button's state after a restart."""

    LAST = "last"
    MUTED = "muted"
    LISTENING = "listening"


class MuteKey(Choice):
    """mute.key: the terminal key that mutes and unmutes with mute.control = "key"."""

    SPACE = "space"
    M = "m"
    ENTER = "enter"


class IndicatorKind(Choice):
    """indicator.kind: the light."""

    AUTO = "auto"
    TERMINAL = "terminal"
    LED = "led"
    PWMLED = "pwmled"
    RGBLED = "rgbled"
    APA102 = "apa102"


class PinFactoryName(Choice):
    """gpio.pin_factory: the GPIO backend."""

    AUTO = "auto"
    LGPIO = "lgpio"
    MOCK = "mock"


class LogLevel(Choice):
    """daemon.log_level."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class HomeAssistantMode(Choice):
    """home_assistant.mode: only the words of a sentence go to Home Assistant, or the audio after the wake word."""

    TEXT = "text"
    AUDIO = "audio"


class GpioSet(Choice):
    """The gpio action's `set` option: what a voice command does to its pin."""

    ON = "on"
    OFF = "off"
    TOGGLE = "toggle"
    PULSE = "pulse"
