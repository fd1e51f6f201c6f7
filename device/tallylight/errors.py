"""The exception tree.

Every error a user can cause (bad config, a missing device, an odd file, a bad key) is one of these,
carries a one-line message that names the fix, and is printed by the CLI without a traceback.
"""

import os


class TallylightError(Exception):
    """Base of every error tallylight raises on purpose. ``str(err)`` is the one line shown."""

    exit_code = 1


class ConfigError(TallylightError):
    """The config file is unreadable, has an unknown key or a bad value."""

    exit_code = os.EX_CONFIG  # 78


class AudioError(TallylightError):
    """Audio in could not be opened or read."""

    exit_code = 66  # EX_NOINPUT


class AudioDeviceError(AudioError):
    """A capture device is missing, cannot be opened, or was lost while reading."""


class AudioFileError(AudioError):
    """An audio file cannot be read or has a format we cannot convert."""


class HardwareError(TallylightError):
    """GPIO, SPI or another piece of hardware cannot be used."""

    exit_code = 69  # EX_UNAVAILABLE


class IndicatorError(HardwareError):
    """The light cannot be driven, or did not read back the state we set."""


class SwitchError(HardwareError):
    """The mute control cannot be read."""


class LedgerError(TallylightError):
    """The ledger cannot be written, or failed verification."""

    exit_code = 74  # EX_IOERR


class InstanceError(TallylightError):
    """Another `tallylight run` already holds the state directory (only one may write its ledger)."""

    exit_code = 75  # EX_TEMPFAIL: it can start once the other one has stopped


class EngineError(TallylightError):
    """A wake word, VAD or speech engine could not be loaded or failed."""

    exit_code = 69


class UnknownWordsError(EngineError):
    """A recognizer has no pronunciation for some words of the grammar (`words`)."""

    def __init__(self, message: str, words: frozenset[str]):
        super().__init__(message)
        self.words = words
