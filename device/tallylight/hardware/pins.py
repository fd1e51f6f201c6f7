"""The one GPIO seam: which gpiozero pin factory drives the light and reads the mute control.

Every device in `tallylight.hardware` takes a pin factory in its constructor, the way gpiozero's
devices do. We never let gpiozero pick one itself: on a machine without GPIO that prints four
`PinFactoryFallback` warnings and a `BadPinFactory` traceback, and on a Pi it silently falls back
from lgpio to a backend that may not work on a Pi 5. Here the choice is explicit and a failure is one
line that says what to do.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from tallylight.choices import PinFactoryName
from tallylight.errors import HardwareError

log = logging.getLogger(__name__)

NO_GPIO = (
    "no GPIO on this machine (no /dev/gpiochip*): set indicator.kind = 'terminal' to see the light as "
    "text, and gpio.pin_factory = 'mock' to try tallylight with simulated pins"
)


def gpio_available(dev: Path = Path("/dev")) -> bool:
    """True when a GPIO character device exists and the lgpio library imports."""
    if not any(dev.glob("gpiochip*")):
        return False
    try:
        _import_lgpio()
    except HardwareError:
        return False
    return True


def make_pin_factory(name: str, dev: Path = Path("/dev")):
    """A gpiozero pin factory for `gpio.pin_factory`: "auto", "lgpio" or "mock".

    "mock" gives simulated pins (gpiozero's MockFactory with PWM support), for trying tallylight
    on a laptop and for the tests. "auto" means lgpio when this machine has GPIO, else an error:
    a privacy device must never pretend to drive a light it does not have.
    """
    if name == PinFactoryName.MOCK:
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    if name == PinFactoryName.LGPIO:
        return _lgpio_factory(dev)
    if name == PinFactoryName.AUTO:
        if not any(dev.glob("gpiochip*")):
            raise HardwareError(NO_GPIO)
        return _lgpio_factory(dev)
    raise HardwareError(f"gpio.pin_factory must be 'auto', 'lgpio' or 'mock', not {name!r}")


def _lgpio_factory(dev: Path):
    _import_lgpio()
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    except Exception as e:  # lgpio.error, OSError, gpiozero errors: all mean "cannot open the chip"
        chips = ", ".join(sorted(p.name for p in dev.glob("gpiochip*"))) or "none"
        raise HardwareError(
            f"cannot open the GPIO chip ({e}; chips: {chips}): on a Raspberry Pi, run as a user in the "
            "'gpio' group (sudo usermod -aG gpio $USER, then log in again); elsewhere set "
            "gpio.pin_factory = 'mock'"
        ) from None


def _import_lgpio():
    """Import lgpio with a writable working directory.

    lgpio creates its notification pipe (.lgd-nfy*) in the current directory when imported, so under
    systemd (working directory "/", read-only with ProtectSystem=strict) the import fails. Its LG_WD
    setting would move the pipe but also changes the whole process's working directory, so instead we
    import it once from a private writable directory and change back at once.
    """
    import sys

    if "lgpio" in sys.modules:
        return sys.modules["lgpio"]
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    workdir = runtime if runtime and os.access(runtime, os.W_OK) else tempfile.mkdtemp(prefix="tallylight-lgpio-")
    try:
        here = os.getcwd()
    except OSError:  # the working directory was deleted: nothing to go back to
        here = "/"
    try:
        os.chdir(workdir)
        import lgpio
    except ImportError:
        raise HardwareError(
            "the lgpio library is not installed: run scripts/run again on the Pi (it installs lgpio), "
            "or `pip install lgpio` in tallylight's .venv"
        ) from None
    except OSError as e:
        raise HardwareError(f"lgpio could not start ({e}): check that {workdir} is writable") from None
    finally:
        os.chdir(here)
    log.debug("lgpio imported with its notification pipe in %s", workdir)
    return lgpio
