"""The wake engines `wake.engine` can name: one `WakeEngineSpec` each in `WAKE_ENGINES`.

This module is light on purpose: `config.py` reads the names from here to check `wake.engine`, and
`tallylight check` reads what each engine needs. The engine code (`tallylight.wake`, numpy, the
TFLite libraries) is imported only by a spec's factory, when a detector is built.

A new engine is one module with its detector (a `tallylight.wake.WakeDetector`) and one
`register_wake_engine(WakeEngineSpec(...))`: docs/extending.md shows one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tallylight.errors import ConfigError
from tallylight.needs import unavailable

if TYPE_CHECKING:
    from tallylight.config import WakeConfig
    from tallylight.wake import WakeDetector


@dataclass(frozen=True)
class WakeEngineSpec:
    """One wake engine.

    `factory(cfg)` builds its detector from the [wake] section (it reads `model`, `sensitivity`,
    `refractory_s` and whichever of `options` it uses), raising ConfigError or EngineError with one
    line. `needs`: the modules it imports, and `install` the one line that says how to get them.
    `check(cfg)`: the engine's own config check at load time, a message (starting with the key)
    naming the fix, or None. `lowered_view`: whether wake.lowered_view runs it a second time on the
    slowed audio (microWakeWord's models are the ones measured with it).
    """

    name: str
    factory: Callable[[WakeConfig], WakeDetector]
    needs: tuple[str, ...] = ()
    install: str = ""
    options: tuple[str, ...] = ()
    check: Callable[[WakeConfig], str | None] | None = None
    lowered_view: bool = False

    def unavailable(self) -> str | None:
        """Why this engine cannot run here (one line with the fix), or None."""
        return unavailable(f"wake.engine = {self.name!r}", self.needs, self.install)


WAKE_ENGINES: dict[str, WakeEngineSpec] = {}


def register_wake_engine(spec: WakeEngineSpec) -> WakeEngineSpec:
    """Add an engine; `wake.engine = "<name>"` can then choose it."""
    if spec.name in WAKE_ENGINES:
        raise ValueError(f"there is already a wake engine {spec.name!r}")
    WAKE_ENGINES[spec.name] = spec
    return spec


def wake_engine(name: str) -> WakeEngineSpec:
    """The spec `wake.engine = name` means; ConfigError naming the registered ones otherwise."""
    spec = WAKE_ENGINES.get(name)
    if spec is None:
        raise ConfigError(f"wake.engine must be one of {', '.join(WAKE_ENGINES)}, not {name!r}")
    return spec


# -- the builtin engines. Their factories import tallylight.wake when a detector is built.
def _microwakeword(c: WakeConfig) -> WakeDetector:
    from tallylight.wake import MicroWakeWordDetector  # lazy import: numpy and the engine code only when a detector is built

    return MicroWakeWordDetector(c.model, c.sensitivity, c.refractory_s)


def _openwakeword(c: WakeConfig) -> WakeDetector:
    from tallylight.wake import OpenWakeWordDetector  # lazy import: numpy and the engine code only when a detector is built

    return OpenWakeWordDetector(c.model, c.sensitivity, c.refractory_s)


def _porcupine(c: WakeConfig) -> WakeDetector:
    from tallylight.wake import PorcupineDetector  # lazy import: numpy and the engine code only when a detector is built

    return PorcupineDetector(c.model, c.sensitivity, c.refractory_s, c.porcupine_access_key_file)


register_wake_engine(WakeEngineSpec(
    "microwakeword", _microwakeword, needs=("pymicro_wakeword",),
    install="run scripts/setup.sh or pip install pymicro-wakeword",
    options=("lowered_view",), lowered_view=True))
register_wake_engine(WakeEngineSpec(
    "openwakeword", _openwakeword, needs=("pyopen_wakeword",),
    install="run scripts/setup.sh or pip install pyopen-wakeword"))
register_wake_engine(WakeEngineSpec(
    "porcupine", _porcupine, needs=("pvporcupine",),
    install="pip install pvporcupine, or use wake.engine = \"microwakeword\"",
    options=("porcupine_access_key_file",)))
