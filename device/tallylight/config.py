"""The TOML config: one frozen dataclass per section, every key with a default and a check.

`load(path)` reads the file and returns a `Config`. An unknown section or key, a value of the wrong
type or out of range raises `ConfigError` with one line naming the file, the key and what was
expected; the CLI turns that into exit code 78 (EX_CONFIG). `config/tallylight.toml` documents every
key; `tests/test_config.py` checks that the two agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tallylight.choices import (
    AtStart,
    ChannelMode,
    Choice,
    HomeAssistantMode,
    IndicatorKind,
    LogLevel,
    MuteControlKind,
    MuteKey,
    PinFactoryName,
    VadEngine,
)
from tallylight.errors import ConfigError
from tallylight.speech.recognizers import RECOGNIZERS, engine_choices
from tallylight.wake_engines import WAKE_ENGINES

# Where `scripts/run` and `tallylight` look when --config is not given, first match wins.
SYSTEM_CONFIG = Path("/etc/tallylight/tallylight.toml")


def _choice(*options: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in options else "one of " + ", ".join(repr(o) for o in options)

    return check


def _one_of(default: Choice) -> Any:
    """A key whose value is one word of `default`'s Choice (tallylight.choices): checked like `_choice`
    (the message lists the words as before), then parsed into that Choice's member."""
    kind = type(default)
    return field(default=default, metadata={"check": _choice(*kind.words()), "types": (str,), "parse": kind})


def _registered(choices: Callable[[], Any]) -> Callable[[Any], str | None]:
    """Like _choice, with the choices read from a registry when the value is checked (so an engine
    registered after this module was imported is a choice too)."""
    def check(value: Any) -> str | None:
        options = tuple(choices())
        return None if value in options else "one of " + ", ".join(repr(o) for o in options)

    return check


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if lo <= value <= hi else f"a number from {lo:g} to {hi:g}"

    return check


def _pin(value: Any) -> str | None:
    # -1 means "not wired". BCM numbers on the 40-pin header run 0..27.
    return None if value == -1 or 0 <= value <= 27 else "a BCM GPIO number 0-27, or -1 for none"


def _block_ms(value: Any) -> str | None:
    # A mute edge ends a waiting read at once, but a block already read is processed to its end (wake
    # word, VAD, recognizer) before the loop closes the mic. Processing keeps up with real time, so
    # that is under one block: 20 ms blocks keep the README's "closed within 20 ms of the edge" true.
    if 10 <= value <= 20:
        return None
    return "10 to 20 (a mute waits for the block in hand: longer blocks break the 20 ms promise)"


def _lowered_view(value: Any) -> str | None:
    # Below 0.5 the words are stretched past what the model tolerates; at 1 it is the plain view again.
    return None if value == 0 or 0.5 <= value <= 0.95 else "0 (off) or a speed factor from 0.5 to 0.95"


# ARPABET as cmudict writes it: 39 phones, vowels with an optional stress digit 0-2.
_ARPABET = {"AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
            "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH"}


def _pronunciations(value: Any) -> str | None:
    fix = ('a table of words and their ARPABET phones, like { nabu = "N AA B UW" } '
           "(the phones cmudict uses: docs/commands.md, \"Words the recognizer does not know\")")
    if len(value) > 200:
        return fix
    for word, phones in value.items():
        if not (isinstance(word, str) and word.replace("'", "").isalpha() and word == word.lower()
                and isinstance(phones, str) and phones.split()
                and all(p.rstrip("012") in _ARPABET for p in phones.upper().split())):
            return fix
    return None


def _key(default: Any, check: Callable[[Any], str | None] | None = None, types: tuple = ()) -> Any:
    """A config key: its default, an optional value check, and the accepted TOML types."""
    return field(default=default, metadata={"check": check, "types": types or (type(default),)})


@dataclass(frozen=True)
class HardwareConfig:
    profile: str = _key("")


@dataclass(frozen=True)
class AudioConfig:
    device: str | int = _key("", types=(str, int))
    sample_rate: int = _key(0, _range(0, 192000))
    channels: int = _key(0, _range(0, 32))
    channel_mode: ChannelMode = _one_of(ChannelMode.MEAN)
    channel: int = _key(0, _range(0, 31))
    block_ms: int = _key(20, _block_ms)


@dataclass(frozen=True)
class WakeConfig:
    engine: str = _key("microwakeword", _registered(lambda: WAKE_ENGINES))
    model: str = _key("okay_nabu")
    sensitivity: float = _key(0.5, _range(0.0, 1.0), (float, int))
    refractory_s: float = _key(2.0, _range(0.0, 30.0), (float, int))
    porcupine_access_key_file: str = _key("")
    # microWakeWord only: a second run of the model on the same audio played slower (wake.py).
    lowered_view: float = _key(0.82, _lowered_view, (float, int))


@dataclass(frozen=True)
class FrontendConfig:
    high_pass_hz: float = _key(0.0, _range(0.0, 300.0), (float, int))
    noise_suppression: int = _key(2, _range(0, 4))
    auto_gain_dbfs: int = _key(0, _range(0, 31))
    echo_cancel: bool = _key(False)
    echo_delay_ms: int = _key(-1, _range(-1, 500))
    echo_tail_ms: int = _key(150, _range(50, 500))


@dataclass(frozen=True)
class CaptureConfig:
    vad: VadEngine = _one_of(VadEngine.SILERO)
    vad_aggressiveness: int = _key(3, _range(0, 3))
    ring_s: float = _key(1.5, _range(0.1, 2.0), (float, int))
    preroll_s: float = _key(1.5, _range(0.0, 2.0), (float, int))
    end_silence_s: float = _key(0.6, _range(0.1, 5.0), (float, int))
    early_end_s: float = _key(0.1, _range(0.05, 5.0), (float, int))
    no_speech_s: float = _key(4.0, _range(0.5, 30.0), (float, int))
    max_s: float = _key(8.0, _range(1.0, 60.0), (float, int))


@dataclass(frozen=True)
class MuteConfig:
    control: MuteControlKind = _one_of(MuteControlKind.SWITCH)
    pin: int = _key(17, _pin)
    pull_up: bool = _key(True)
    debounce_ms: int = _key(30, _range(0, 1000))
    at_start: AtStart = _one_of(AtStart.LAST)
    key: MuteKey = _one_of(MuteKey.SPACE)


@dataclass(frozen=True)
class IndicatorConfig:
    kind: IndicatorKind = _one_of(IndicatorKind.AUTO)
    pin: int = _key(27, _pin)
    red_pin: int = _key(-1, _pin)
    green_pin: int = _key(-1, _pin)
    blue_pin: int = _key(-1, _pin)
    active_high: bool = _key(True)
    listening_glow: float = _key(0.0, _range(0.0, 1.0), (float, int))
    brightness: float = _key(1.0, _range(0.05, 1.0), (float, int))
    led_count: int = _key(3, _range(1, 255))
    spi_bus: int = _key(0, _range(0, 6))
    spi_device: int = _key(0, _range(0, 3))
    power_pin: int = _key(-1, _pin)


@dataclass(frozen=True)
class GpioConfig:
    pin_factory: PinFactoryName = _one_of(PinFactoryName.AUTO)


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: str = _key("")
    log_level: LogLevel = _one_of(LogLevel.INFO)
    retry_max_s: float = _key(30.0, _range(1.0, 3600.0), (float, int))


@dataclass(frozen=True)
class DebugConfig:
    record_dir: str = _key("")


@dataclass(frozen=True)
class RecognizerConfig:
    engine: str = _key("auto", _registered(engine_choices))
    vosk_model: str = _key("")
    min_confidence: float = _key(0.5, _range(0.0, 1.0), (float, int))
    # (word, ARPABET phones) pairs, from a TOML table: pocketsphinx's words for what cmudict lacks.
    pronunciations: tuple = _key((), lambda v: _pronunciations(v), (dict,))


@dataclass(frozen=True)
class ReplyConfig:
    enabled: bool = _key(True)
    voice: str = _key("en-us")
    speed: int = _key(160, _range(80, 450))
    output_device: str = _key("")
    sounds: bool = _key(True)


@dataclass(frozen=True)
class ActionsConfig:
    run_timeout_s: float = _key(10.0, _range(0.1, 600.0), (float, int))
    mixer_control: str = _key("Master")
    mixer_device: str = _key("")
    volume_step: int = _key(10, _range(1, 50))


def _names(value: Any) -> str | None:
    # Names of the owner's Home Assistant entities and areas, for the local grammar (ha_grammar checks
    # each one's words when it builds the grammar); here only their shape.
    if len(value) > 500 or not all(isinstance(v, str) and 0 < len(v) <= 100 for v in value):
        return "a list of at most 500 names of 1-100 characters, like [\"kitchen light\"]"
    return None


# A unix socket's path is at most 107 bytes (sun_path, less its NUL).
MAX_SOCKET_PATH_BYTES = 107


def _socket_path(value: Any) -> str | None:
    # The one path both processes use: the daemon listens on it, `tallylight uplink` connects to it.
    if not value.strip() or value.endswith("/") or "\0" in value or value != value.strip():
        return "the path of a socket file, like \"/run/tallylight/uplink.sock\""
    if len(value.encode()) > MAX_SOCKET_PATH_BYTES:
        return f"a path of at most {MAX_SOCKET_PATH_BYTES} bytes (a unix socket's limit), like \"/run/tallylight/uplink.sock\""
    return None


def _uplink_user(value: Any) -> str | None:
    # A user name (resolved when the daemon starts, so a config can be checked on another machine) or a uid.
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}|[0-9]{1,10}", value):
        return "a user name like \"tallylight-uplink\", or a numeric uid"
    return None


@dataclass(frozen=True)
class HomeAssistantConfig:
    # The daemon's side: off means no socket and no Home Assistant grammar, exactly as without an uplink.
    enabled: bool = _key(False)
    # "text": only the words of what is not a local command go out. "audio": after the local wake word the
    # utterance streams to Home Assistant's Assist pipeline, with the upload light on. Only this file sets it.
    mode: HomeAssistantMode = _one_of(HomeAssistantMode.TEXT)
    socket: str = _key("/run/tallylight/uplink.sock", _socket_path)
    uplink_user: str = _key("tallylight-uplink", _uplink_user)
    ledger_text: bool = _key(False)
    announce_while_muted: bool = _key(False)
    timer_ring_max_s: float = _key(60.0, _range(5.0, 600.0), (float, int))
    reply_audio_max_s: float = _key(30.0, _range(1.0, 120.0), (float, int))
    url: str = _key("")
    token_file: str = _key("/var/lib/tallylight-uplink/ha.token")
    device_id: str = _key("")
    pipeline: str = _key("")
    timeout_s: float = _key(15.0, _range(1.0, 120.0), (float, int))
    names: tuple = _key((), _names, (list,))
    areas: tuple = _key((), _names, (list,))


_SECTIONS: dict[str, type] = {
    "hardware": HardwareConfig,
    "audio": AudioConfig,
    "wake": WakeConfig,
    "frontend": FrontendConfig,
    "capture": CaptureConfig,
    "mute": MuteConfig,
    "indicator": IndicatorConfig,
    "gpio": GpioConfig,
    "daemon": DaemonConfig,
    "debug": DebugConfig,
    "recognizer": RecognizerConfig,
    "reply": ReplyConfig,
    "actions": ActionsConfig,
    "home_assistant": HomeAssistantConfig,
}


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    hardware: HardwareConfig = HardwareConfig()
    audio: AudioConfig = AudioConfig()
    wake: WakeConfig = WakeConfig()
    frontend: FrontendConfig = FrontendConfig()
    capture: CaptureConfig = CaptureConfig()
    mute: MuteConfig = MuteConfig()
    indicator: IndicatorConfig = IndicatorConfig()
    gpio: GpioConfig = GpioConfig()
    daemon: DaemonConfig = DaemonConfig()
    debug: DebugConfig = DebugConfig()
    recognizer: RecognizerConfig = RecognizerConfig()
    reply: ReplyConfig = ReplyConfig()
    actions: ActionsConfig = ActionsConfig()
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()
    # Voice commands, parsed by tallylight.speech.commands (kept raw here: that module owns the format).
    commands: Mapping[str, Any] = field(default_factory=dict)
    # Path keys given relative, as (key, as written, the full path used): logged and shown by `check`.
    relative_paths: tuple[tuple[str, str, str], ...] = ()
    # The same commands as `from_dict` parsed them, so that nothing parses them again. Not an init
    # field, so dataclasses.replace(cfg, commands=...) leaves it None rather than out of date.
    parsed_commands: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def state_dir(self) -> Path:
        """Where the ledger lives: config, else systemd's $STATE_DIRECTORY, else a per-user folder."""
        if self.daemon.state_dir:
            return Path(self.daemon.state_dir).expanduser()
        if os.environ.get("STATE_DIRECTORY"):
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "tallylight"


def _type_name(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_value(where: str, key: str, value: Any, f: dataclasses.Field) -> Any:
    types = f.metadata["types"]
    # bool is a subclass of int in Python, but `pin = true` is a mistake, not pin 1.
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise ConfigError(f"{where}: {key} must be {_type_name(types)}, not {value!r}")
    if float in types and isinstance(value, int):
        value = float(value)
    if isinstance(value, str) and value.startswith("~"):
        try:  # a path: "~nosuchuser/..." (or "~" without a HOME) cannot be expanded later either
            Path(value).expanduser()
        except RuntimeError:
            user = value.split("/", 1)[0]
            raise ConfigError(f"{where}: {key}: cannot expand {user!r} (no such user or no HOME; give a full path)") from None
    check = f.metadata["check"]
    expected = check(value) if check else None
    if expected:
        raise ConfigError(f"{where}: {key} must be {expected}, not {value!r}")
    if f.metadata.get("parse") is not None:  # one of a Choice's words: its member
        return f.metadata["parse"](value)
    if isinstance(value, dict):  # the sections are frozen: a table becomes sorted (key, value) pairs
        return tuple(sorted(value.items()))
    return tuple(value) if isinstance(value, list) else value  # the sections are frozen: no lists in them


def _build_section(where: str, name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [{name}] must be a table of keys, not {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            misplaced = _misplaced(name, key, value)
            if misplaced:
                raise ConfigError(f"{where}: {misplaced}")
            known = ", ".join(fields)
            raise ConfigError(f"{where}: unknown key {name}.{key} (known keys in [{name}]: {known})")
        values[key] = _check_value(where, f"{name}.{key}", value, fields[key])
    return cls(**values)


def _misplaced(table: str | None, key: str, value: Any) -> str | None:
    """What to say when `key` (found in [table], which has no such key; None: above the first table
    line) belongs to another table.

    In TOML a key belongs to the last [table] line above it, so a line added at the end of the file
    lands in the last table (often a [commands.NAME]), and `indicator.kind = ...` written under
    [audio] means audio.indicator.kind. Both are keys of another table, which is what the owner needs
    to hear, not the keys [table] does have."""
    if table is not None and key in _SECTIONS and isinstance(value, dict) and value:
        inner, setting = next(iter(value.items()))
        shown = json.dumps(setting) if isinstance(setting, (str, int, float, bool)) else "..."
        return (f"`{key}.{inner}` is not a key of [{table}] (a dotted key belongs to the table above it): "
                f"write `{inner} = {shown}` under [{key}]")
    homes = [name for name, cls in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if not homes:
        return None
    here = f"is not a key of [{table}]" if table is not None else "is above the first [table] line, in no table"
    if len(homes) == 1:
        return f"`{key}` {here}; it is a key of [{homes[0]}]: move it under [{homes[0]}]"
    tables = " and ".join(f"[{h}]" for h in homes)
    return f"`{key}` {here}; it is a key of {tables}: move it under the one you meant"


def _misplaced_in_commands(commands: Mapping[str, Any]) -> str | None:
    """A key under [commands.NAME] that neither a command nor its action has, but a config table does."""
    from tallylight.actions import ACTIONS
    from tallylight.speech.commands import COMMAND_KEYS

    for name, body in commands.items():
        if not isinstance(body, dict) or body.get("action") not in ACTIONS:
            continue  # parse_commands says what is wrong with those
        own = {*COMMAND_KEYS, *ACTIONS[body["action"]].options}
        for key, value in body.items():
            if key not in own and (problem := _misplaced(f"commands.{name}", key, value)):
                return problem
    return None


def from_dict(raw: Mapping[str, Any], where: str = "<config>", path: Path | None = None) -> Config:
    """Build and validate a Config from parsed TOML. `where` names the source in error messages."""
    raw = _with_profile(raw, where)
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "commands":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [commands] must be a table of named commands")
            continue
        if name not in _SECTIONS:
            home = _misplaced(None, name, value) if not isinstance(value, dict) else None
            if home:
                raise ConfigError(f"{where}: {home}")
            known = ", ".join([*_SECTIONS, "commands"])
            raise ConfigError(f"{where}: unknown section [{name}] (known sections: {known})")
        sections[name] = _build_section(where, name, _SECTIONS[name], value)
    cfg = _with_full_paths(where, Config(path=path, commands=dict(raw.get("commands", {})), **sections))
    _check_across(where, cfg)
    return cfg


# Keys that name a file or folder. A relative one is taken from the config file's folder, as a
# hobbyist who keeps `state_dir = "state"` beside the file expects, never from wherever tallylight
# happens to be started (systemd starts it in /).
PATH_KEYS = (("daemon", "state_dir"), ("debug", "record_dir"), ("recognizer", "vosk_model"),
             ("wake", "model"), ("wake", "porcupine_access_key_file"), ("home_assistant", "token_file"),
             ("home_assistant", "socket"))
# wake.model is a builtin name ("okay_nabu") unless it holds a "/" or ends like a model file (wake.py).
_WAKE_MODEL_FILES = (".json", ".tflite", ".ppn")


def _with_full_paths(where: str, cfg: Config) -> Config:
    """`cfg` with every relative path key made absolute against the config file's folder."""
    resolved = []
    for section, key in PATH_KEYS:
        value = getattr(getattr(cfg, section), key)
        if not value or (key == "model" and "/" not in value and not value.endswith(_WAKE_MODEL_FILES)):
            continue
        if Path(value).expanduser().is_absolute():
            continue
        if cfg.path is None:
            raise ConfigError(f"{where}: {section}.{key} = {value!r} is a relative path but there is no config "
                              "file to take it from: give a full path")
        full = os.path.normpath(cfg.path.absolute().parent / value)
        resolved.append((f"{section}.{key}", value, full))
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{key: full})})
    return dataclasses.replace(cfg, relative_paths=tuple(resolved)) if resolved else cfg


def _with_profile(raw: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """Lay the keys of the chosen hardware profile (config/profiles/NAME.toml) over the file's own."""
    hw = raw.get("hardware")
    name = hw.get("profile") if isinstance(hw, dict) else None
    if not name or not isinstance(name, str):
        return raw
    from tallylight.hardware.profiles import load_profile, merge, profile_names

    try:
        overlay = load_profile(name)
    except ConfigError as e:
        raise ConfigError(f"{where}: hardware.profile: {e}") from None
    except Exception as e:
        raise ConfigError(f"{where}: hardware.profile = {name!r} cannot be loaded ({e}); "
                          f"profiles: {', '.join(profile_names())}") from None
    return merge(raw, overlay)


def _check_across(where: str, cfg: Config) -> None:
    """Checks that involve more than one key."""
    # The chosen engines' own checks (wake_engines, speech.recognizers): a message that starts with the key.
    wake_check = WAKE_ENGINES[cfg.wake.engine].check
    if wake_check is not None and (problem := wake_check(cfg.wake)):
        raise ConfigError(f"{where}: {problem}")
    spec = RECOGNIZERS.get(cfg.recognizer.engine)  # None for the modes "auto" and "both"
    if spec is not None and spec.check is not None and (problem := spec.check(cfg.recognizer)):
        raise ConfigError(f"{where}: {problem}")
    if len(cfg.home_assistant.socket.encode()) > MAX_SOCKET_PATH_BYTES:  # a relative one, made full
        raise ConfigError(f"{where}: home_assistant.socket = {cfg.home_assistant.socket!r} is longer than a unix "
                          f"socket's {MAX_SOCKET_PATH_BYTES} bytes: give a shorter full path, like "
                          "\"/run/tallylight/uplink.sock\"")
    if cfg.capture.preroll_s > cfg.capture.ring_s:
        raise ConfigError(
            f"{where}: capture.preroll_s ({cfg.capture.preroll_s:g}) must not exceed capture.ring_s "
            f"({cfg.capture.ring_s:g}): the pre-roll is taken from that ring"
        )
    if cfg.mute.control == MuteControlKind.KEY and cfg.gpio.pin_factory != PinFactoryName.MOCK:
        raise ConfigError(f"{where}: mute.control = 'key' is for trying tallylight without GPIO (a key on the terminal "
                          "presses a simulated button): set gpio.pin_factory = \"mock\", or wire a switch or button")
    ind = cfg.indicator
    if ind.kind == IndicatorKind.RGBLED and -1 in (ind.red_pin, ind.green_pin, ind.blue_pin):
        raise ConfigError(
            f"{where}: indicator.kind = 'rgbled' needs indicator.red_pin, green_pin and blue_pin set"
        )
    # The light exists to tell states apart: a setting that makes two of them look alike (a glow as
    # bright as "capturing") is refused here rather than shown. The light module judges its own patterns.
    from tallylight.hardware.indicator import light_problem

    problem = light_problem(ind)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    if cfg.commands:
        # Validate the voice commands now, so `check` and `run` fail the same way on a bad command.
        from tallylight.speech.commands import parse_commands

        misplaced = _misplaced_in_commands(cfg.commands)
        if misplaced:
            raise ConfigError(f"{where}: {misplaced}")
        # Set once, before from_dict hands the config out (the usual way to fill a frozen field).
        object.__setattr__(cfg, "parsed_commands", parse_commands(cfg.commands, where))
    # Two things on one GPIO fail only when both are used (a voice command's relay can be the light's
    # red leg): refuse them now. A ReSpeaker profile means its I2S/I2C lines are taken; a HAT known
    # only from this machine's sound card is for `tallylight check`.
    from tallylight.hardware.pitfalls import pin_clashes, profile_model

    clashes = pin_clashes(cfg, i2s_hat=profile_model(cfg.hardware.profile) is not None)
    if clashes:
        raise ConfigError(f"{where}: {clashes[0]}")


def _toml_hint(path: Path, e: tomllib.TOMLDecodeError) -> str:
    """What the usual causes of a TOML error mean for the person editing the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    if text.startswith("\ufeff"):
        return " (the file starts with a byte-order mark: save it as UTF-8 without BOM)"
    if "Cannot overwrite a value" in str(e) or "Cannot declare" in str(e):
        line_no = getattr(e, "lineno", None)
        if line_no is None:  # Python 3.11's tomllib has no lineno: read it from the message
            import re

            m = re.search(r"at line (\d+)", str(e))
            line_no = int(m.group(1)) if m else None
        lines = text.splitlines()
        if line_no and 0 < line_no <= len(lines):
            return f" ({lines[line_no - 1].strip()[:60]!r} sets a key or table a second time: keep one)"
    return ""


def load(path: str | os.PathLike) -> Config:
    """Read and validate a TOML config file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (copy config/tallylight.toml there, or pass --config)") from None
    except PermissionError:
        raise ConfigError(f"{path}: not readable by this user (check its permissions)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}{_toml_hint(path, e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8 text") from None
    return from_dict(raw, str(path), path)


def default_path(checkout: Path | None = None) -> Path:
    """/etc/tallylight/tallylight.toml when it exists, else the checkout's config/tallylight.toml."""
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    here = checkout or Path(__file__).resolve().parents[2]
    return here / "config" / "tallylight.toml"


def section_fields() -> dict[str, list[str]]:
    """Every section and its keys, for the test that the shipped config documents them all."""
    return {name: [f.name for f in dataclasses.fields(cls)] for name, cls in _SECTIONS.items()}
