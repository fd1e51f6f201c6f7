"""APA102 frames, checked byte by byte against the datasheet format through a fake SPI device that
records what is written; the power pin on gpiozero's MockFactory."""

import math
from pathlib import Path

import pytest
from gpiozero import OutputDevice
from gpiozero.pins.mock import MockPWMPin

from tallylight.errors import HardwareError
from tallylight.hardware.apa102 import Apa102Strip, encode_frame, end_frame_length
from tallylight.hardware.pins import make_pin_factory


class FakeSpi:
    """Stands in for spidev.SpiDev: records every transfer, as bytes."""

    def __init__(self, fail: Exception | None = None):
        self.writes: list[bytes] = []
        self.closed = 0
        self.fail = fail

    def writebytes(self, data):
        assert isinstance(data, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in data)
        if self.fail:
            raise self.fail
        self.writes.append(bytes(data))

    def close(self):
        self.closed += 1


def parse(frame: bytes, n: int):
    """Split a frame per the datasheet; fail on anything malformed. Returns (brightness, [rgb])."""
    assert frame[:4] == b"\x00\x00\x00\x00", "start frame is 32 zero bits"
    leds = []
    brightness = set()
    for i in range(n):
        head, b, g, r = frame[4 + 4 * i: 8 + 4 * i]
        assert head >> 5 == 0b111, f"LED {i}: brightness byte must start with 111, got {head:08b}"
        brightness.add(head & 0x1F)
        leds.append((r, g, b))
    end = frame[4 + 4 * n:]
    assert len(end) >= math.ceil(n / 16), "end frame too short to clock the data to the last LED"
    assert set(end) <= {0}, "end frame is zeros"
    assert len(end) == end_frame_length(n)
    assert len(brightness) == 1
    return brightness.pop(), leds


@pytest.mark.parametrize("n", [1, 3, 12, 16, 17, 64, 255])
def test_frame_format(n):
    colours = [(i % 256, (3 * i) % 256, (7 * i + 1) % 256) for i in range(n)]
    frame = encode_frame(colours, brightness=17)
    assert len(frame) == 4 + 4 * n + end_frame_length(n)
    bright, leds = parse(frame, n)
    assert bright == 17 and leds == colours


def test_colour_order_on_the_wire_is_blue_green_red():
    frame = encode_frame([(0x11, 0x22, 0x33)], brightness=31)
    assert frame[4:8] == bytes([0xFF, 0x33, 0x22, 0x11])


def test_end_frame_lengths():
    # n/2 clock edges to push the data down the chain, plus the SK9822's 32-bit reset frame.
    assert [end_frame_length(n) for n in (1, 16, 17, 32, 33)] == [5, 5, 6, 6, 7]


def test_bad_values_are_refused():
    with pytest.raises(ValueError):
        encode_frame([(0, 0, 0)], brightness=32)
    with pytest.raises(ValueError):
        encode_frame([(256, 0, 0)])


def test_strip_writes_frames_and_turns_off_on_close():
    spi = FakeSpi()
    strip = Apa102Strip(3, spi=spi)
    sent = strip.fill((255, 0, 0), brightness=8)
    assert spi.writes == [sent] and strip.last_frame == sent
    assert parse(sent, 3) == (8, [(255, 0, 0)] * 3)
    strip.show([(1, 2, 3), (4, 5, 6), (7, 8, 9)])
    assert parse(spi.writes[-1], 3) == (31, [(1, 2, 3), (4, 5, 6), (7, 8, 9)])
    strip.close()
    assert parse(spi.writes[-1], 3) == (0, [(0, 0, 0)] * 3) and spi.closed == 1
    strip.close()
    assert spi.closed == 1  # safe twice
    with pytest.raises(HardwareError):
        strip.fill((1, 1, 1))


def test_strip_refuses_a_wrong_number_of_colours():
    strip = Apa102Strip(3, spi=FakeSpi())
    with pytest.raises(ValueError):
        strip.show([(0, 0, 0)] * 2)


def test_write_failure_is_one_line():
    strip = Apa102Strip(12, spi=FakeSpi(fail=OSError(121, "Remote I/O error")))
    with pytest.raises(HardwareError) as err:
        strip.fill((0, 0, 255))
    assert "Remote I/O error" in str(err.value) and "\n" not in str(err.value)
    assert strip.last_frame is None
    strip.close()


def test_power_pin_is_high_while_open_and_released_after():
    factory = make_pin_factory("mock")
    strip = Apa102Strip(12, spi=FakeSpi(), power_pin=5, pin_factory=factory)
    assert factory.pin(5).state == 1
    strip.fill((0, 0, 0))
    strip.close()
    OutputDevice(5, pin_factory=factory).close()  # the pin was released: it can be claimed again
    factory.close()


def test_power_pin_stuck_low_is_reported():
    class DeadPin(MockPWMPin):
        def _set_state(self, value):  # the line does not move
            pass

    factory = make_pin_factory("mock")
    factory.pin(5, pin_class=DeadPin)
    with pytest.raises(HardwareError) as err:
        Apa102Strip(3, spi=FakeSpi(), power_pin=5, pin_factory=factory)
    assert "GPIO5" in str(err.value) and "power_pin" in str(err.value)
    factory.close()


def test_no_spi_device_says_how_to_enable_spi(tmp_path):
    with pytest.raises(HardwareError) as err:
        Apa102Strip(3, bus=0, device=1, dev=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "spidev0.1") in msg
    assert "sudo raspi-config nonint do_spi 0" in msg and "dtparam=spi=on" in msg


def test_no_spi_releases_the_power_pin(tmp_path):
    factory = make_pin_factory("mock")
    with pytest.raises(HardwareError):
        Apa102Strip(3, power_pin=5, pin_factory=factory, dev=tmp_path)
    OutputDevice(5, pin_factory=factory).close()
    factory.close()


@pytest.mark.skipif(Path("/dev/spidev0.0").exists(), reason="this machine has SPI")
def test_real_spidev_that_cannot_open_is_one_line(tmp_path):
    (tmp_path / "spidev0.0").touch()  # looks enabled, but the real /dev/spidev0.0 is not there
    with pytest.raises(HardwareError) as err:
        Apa102Strip(3, dev=tmp_path)
    assert "\n" not in str(err.value) and "spidev0.0" in str(err.value)
