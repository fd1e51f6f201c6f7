"""Hardware profiles: partial configs for common boards (ReSpeaker HATs, a USB mic with a switch and
an LED, an RGB LED) that overlay the main config.

A profile may only set [audio], [mute], [indicator] and [gpio] keys: it describes wiring, never what
tallylight is allowed to do. They live in config/profiles/ of a checkout and in
/etc/tallylight/profiles/ after install (that one wins when both have a name).
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tallylight.errors import ConfigError

SYSTEM_PROFILES = Path("/etc/tallylight/profiles")
CHECKOUT_PROFILES = Path(__file__).resolve().parents[3] / "config" / "profiles"
PROFILE_SECTIONS = ("audio", "mute", "indicator", "gpio")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\Z")


def profile_dirs() -> list[Path]:
    """Where profiles are looked for, first match wins."""
    return [SYSTEM_PROFILES, CHECKOUT_PROFILES]


def profile_names(dirs: list[Path] | None = None) -> list[str]:
    """Every profile name available, sorted."""
    names: set[str] = set()
    for d in dirs if dirs is not None else profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def profile_path(name: str, dirs: list[Path] | None = None) -> Path:
    """The file of profile `name` (e.g. "respeaker-2mic"), or ConfigError listing the known ones."""
    dirs = dirs if dirs is not None else profile_dirs()
    if _NAME.match(name):
        for d in dirs:
            p = d / f"{name}.toml"
            if p.is_file():
                return p
    known = ", ".join(profile_names(dirs)) or "none installed"
    raise ConfigError(f"no hardware profile {name!r} (known profiles: {known})")


def load_profile(name: str, dirs: list[Path] | None = None) -> dict[str, Any]:
    """The parsed profile `name`, checked to hold only the sections a profile may set."""
    path = profile_path(name, dirs)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the profile ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for section, value in raw.items():
        if section not in PROFILE_SECTIONS:
            raise ConfigError(
                f"{path}: a profile may only set [{'], ['.join(PROFILE_SECTIONS)}], not [{section}]"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{section}] must be a table of keys")
    return raw


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overlay` laid over it: tables merge key by key, any other value is replaced.
    Neither argument is changed."""
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
