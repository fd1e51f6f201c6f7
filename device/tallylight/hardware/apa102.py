"""APA102 (DotStar) LEDs over SPI, as on the ReSpeaker HATs: 3 LEDs on the 2-mic, a ring of 12 on the
4-mic and 6-mic arrays.

The frame on the wire, per the APA102 datasheet:
  start frame  4 bytes 0x00
  per LED      0b111bbbbb (5-bit global brightness), then blue, green, red (one byte each)
  end frame    4 + ceil(n / 16) bytes 0x00
The end frame pushes the data through the chain: each LED delays the data by half a clock, so n LEDs
need n/2 extra clock edges, ceil(n / 16) bytes. We send zeros, not the 0xFF of the datasheet:
 - an LED frame must start with three 1 bits, so zeros can never be taken for one. With 0xFF, a
   chain longer than indicator.led_count would light its next LED full white;
 - the SK9822 clones sold as APA102 latch the new colours on a 32-bit zero "reset frame", hence the
   4 extra bytes;
 - zeros are what the next start frame is anyway, so any we send too many are harmless.
SPI is write-only here (no data comes back from the LEDs), so "read-back" means the transfer went
through without an error with exactly the bytes we meant; `last_frame` keeps them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tallylight.choices import PinFactoryName
from tallylight.errors import HardwareError

log = logging.getLogger(__name__)

RGB8 = tuple[int, int, int]

ENABLE_SPI = (
    "run `sudo raspi-config nonint do_spi 0` (or add dtparam=spi=on to /boot/firmware/config.txt) "
    "and reboot"
)


class SpiDevice(Protocol):
    """What we need of spidev.SpiDev: a write and a close. Tests pass a recording fake."""

    def writebytes(self, data: list[int]) -> None: ...

    def close(self) -> None: ...


def end_frame_length(led_count: int) -> int:
    """Bytes of end frame for `led_count` LEDs: the SK9822 reset frame plus n/2 clock edges."""
    return 4 + math.ceil(led_count / 16)


def encode_frame(colours: Sequence[RGB8], brightness: int = 31) -> bytes:
    """The bytes to send for these LED colours (red, green, blue 0-255) at a 0-31 global brightness."""
    if not 0 <= brightness <= 31:
        raise ValueError(f"APA102 brightness is 5 bits (0-31), not {brightness}")
    out = bytearray(4)  # start frame
    head = 0b1110_0000 | brightness
    for r, g, b in colours:
        for v in (r, g, b):
            if not 0 <= v <= 255:
                raise ValueError(f"APA102 colour values are 0-255, not {v}")
        out += bytes((head, b, g, r))
    out += bytes(end_frame_length(len(colours)))
    return bytes(out)


def open_spidev(bus: int, device: int, speed_hz: int, dev: Path = Path("/dev")) -> SpiDevice:
    """Open /dev/spidevB.D in mode 0, or say how to enable SPI."""
    node = dev / f"spidev{bus}.{device}"
    if not node.exists():
        raise HardwareError(f"SPI is not enabled (no {node}) but the APA102 LEDs need it: {ENABLE_SPI}")
    try:
        import spidev
    except ImportError:
        raise HardwareError("the spidev library is not installed: run scripts/run again, "
                            "or `pip install spidev` in tallylight's .venv") from None
    spi = spidev.SpiDev()
    try:
        spi.open(bus, device)
        spi.mode = 0
        spi.max_speed_hz = speed_hz
    except PermissionError:
        spi.close()
        raise HardwareError(f"{node} is not writable by this user: add it to the 'spi' group (sudo usermod -aG spi $USER)") from None
    except OSError as e:
        spi.close()
        raise HardwareError(f"cannot open {node} ({e}): {ENABLE_SPI}") from None
    return spi


class Apa102Strip:
    """A chain of APA102 LEDs on one SPI device, with an optional GPIO that powers them.

    `spi` is the seam: any object with `writebytes(list[int])` and `close()`; by default
    /dev/spidev{bus}.{device} is opened at `speed_hz`. `power_pin` (BCM, -1 for none) is driven high
    for as long as the strip is open: the ReSpeaker 4-mic and 6-mic arrays (and some 2-mic HAT
    revisions) only power their LEDs while GPIO5 is high.
    """

    def __init__(
        self,
        led_count: int,
        *,
        spi: SpiDevice | None = None,
        bus: int = 0,
        device: int = 0,
        speed_hz: int = 8_000_000,
        power_pin: int = -1,
        pin_factory=None,
        dev: Path = Path("/dev"),
    ) -> None:
        if not 1 <= led_count <= 1024:
            raise HardwareError(f"indicator.led_count must be 1-1024, not {led_count}")
        self.led_count = led_count
        self.last_frame: bytes | None = None
        self._power = None
        self._spi: SpiDevice | None = None
        if power_pin != -1:
            self._power = _power_on(power_pin, pin_factory)
        try:
            self._spi = spi if spi is not None else open_spidev(bus, device, speed_hz, dev)
        except BaseException:
            self._release_power()
            raise
        self._where = f"APA102 LEDs on SPI {bus}.{device}"

    @property
    def closed(self) -> bool:
        return self._spi is None

    def show(self, colours: Sequence[RGB8], brightness: int = 31) -> bytes:
        """Send one colour per LED; returns the frame sent. Raises HardwareError if it cannot be sent."""
        if self._spi is None:
            raise HardwareError(f"the {self._where} are closed")
        if len(colours) != self.led_count:
            raise ValueError(f"{len(colours)} colours for {self.led_count} LEDs")
        frame = encode_frame(colours, brightness)
        if self._power is not None:
            self._check_power()
        try:
            self._spi.writebytes(list(frame))
        except Exception as e:  # OSError from the driver, or anything a broken seam throws
            raise HardwareError(f"cannot write to the {self._where} ({e}): {ENABLE_SPI}") from None
        self.last_frame = frame
        return frame

    def fill(self, colour: RGB8, brightness: int = 31) -> bytes:
        """Every LED the same colour."""
        return self.show([colour] * self.led_count, brightness)

    def close(self) -> None:
        """All LEDs off, SPI closed, power pin released. Safe to call twice."""
        spi, self._spi = self._spi, None
        if spi is not None:
            try:
                spi.writebytes(list(encode_frame([(0, 0, 0)] * self.led_count, 0)))
            except Exception as e:  # closing: nothing more to do than say so
                log.warning("could not turn the %s off: %s", self._where, e)
            try:
                spi.close()
            except Exception as e:
                log.warning("could not close the %s: %s", self._where, e)
        self._release_power()

    def _check_power(self) -> None:
        try:
            on = bool(self._power.value)
        except Exception as e:
            raise HardwareError(f"cannot read back the LED power pin ({e}): check indicator.power_pin") from None
        if not on:
            raise HardwareError("the LED power pin reads low after being driven high: check indicator.power_pin")

    def _release_power(self) -> None:
        power, self._power = self._power, None
        if power is not None:
            try:
                power.close()
            except Exception as e:
                log.warning("could not release the LED power pin: %s", e)


def _power_on(pin: int, pin_factory):
    """Drive the LED power pin high and confirm it reads back high."""
    from gpiozero import OutputDevice

    from tallylight.hardware.pins import make_pin_factory

    factory = pin_factory if pin_factory is not None else make_pin_factory(PinFactoryName.AUTO)
    try:
        power = OutputDevice(pin, active_high=True, initial_value=True, pin_factory=factory)
    except Exception as e:
        raise HardwareError(f"cannot drive the LED power pin GPIO{pin} ({e}): check indicator.power_pin") from None
    try:
        ok = bool(power.value)
    except Exception as e:
        ok, why = False, str(e)
    else:
        why = "it reads low"
    if not ok:
        power.close()
        raise HardwareError(f"the LED power pin GPIO{pin} did not go high ({why}): check indicator.power_pin")
    return power
