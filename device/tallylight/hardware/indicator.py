"""The tally light: shows the gate's state, and confirms that it did before capture audio may flow.

`show(state)` drives the light and reads back what the hardware reports before it returns, so the
gate (which only lets capture audio past the wake detector after `show(CAPTURING)` returns) never
captures behind a dark light. Steady patterns are written and read back in the caller's thread; a
blinking pattern writes and confirms its first phase ("on") in the caller's thread too, then a
background thread carries on the rhythm and checks every write; if one fails, the next `check()` or
`show()` raises IndicatorError (once; the show() after that drives and confirms afresh).

What read-back can and cannot see: on GPIO it reads the level the pin is driven to (so a dead GPIO
driver, a pin owned by something else or a closed device fails), not whether the LED itself glows; a
burnt-out LED needs eyes. APA102 LEDs send nothing back over SPI, so there it confirms the transfer
went through with the exact bytes meant.

One table, `PATTERNS`, says what each state looks like on each kind of light and, in plain words,
what is happening (the terminal light prints those words); the README's table "What the light means"
is the same table for owners (tests/test_indicator.py keeps them together). A single-colour LED cannot
use colour, so it uses rhythm: solid is reserved for "capturing", the one thing the tally light exists
to show.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from tallylight.choices import IndicatorKind, PinFactoryName
from tallylight.errors import HardwareError, IndicatorError
from tallylight.gate import State

if TYPE_CHECKING:  # only for annotations: config.load asks this module whether two states look alike
    from tallylight.config import IndicatorConfig

log = logging.getLogger(__name__)

RGB = tuple[float, float, float]
OFF: RGB = (0.0, 0.0, 0.0)
ON: RGB = (1.0, 1.0, 1.0)  # a single-colour LED fully on
WHITE: RGB = (1.0, 1.0, 1.0)
RED: RGB = (1.0, 0.0, 0.0)
GREEN: RGB = (0.0, 1.0, 0.0)
BLUE: RGB = (0.0, 0.0, 1.0)
AMBER: RGB = (1.0, 0.4, 0.0)
MAGENTA: RGB = (1.0, 0.0, 1.0)


@dataclass(frozen=True)
class Look:
    """One rendering of a state: a steady colour, or a cycle of two colours.

    `first` is shown at once (and confirmed) and held for `first_s`; then `second` for `second_s`,
    and so on. `first_s == 0` means steady. `glow` means "`first` scaled by indicator.listening_glow"
    (off when that is 0). For a single-colour LED the colours are grey levels (ON / OFF).
    """

    text: str
    first: RGB
    first_s: float = 0.0
    second: RGB = OFF
    second_s: float = 0.0
    glow: bool = False

    @property
    def steady(self) -> bool:
        return self.first_s <= 0


@dataclass(frozen=True)
class Pattern:
    """What one state looks like: `mono` on a single LED (led, pwmled), `colour` on rgbled / apa102;
    `meaning` says in plain words what is happening ("{wake}" stands for the wake phrase)."""

    name: str
    mono: Look
    colour: Look
    meaning: str = ""

    def says(self, wake_phrase: str = "") -> str:
        return self.meaning.replace("{wake}", f'"{wake_phrase}"' if wake_phrase else "the wake word")


PATTERNS: dict[State, Pattern] = {
    State.MUTED: Pattern(
        "MUTED",
        mono=Look("short flash every 2 s", ON, 0.1, OFF, 1.9),
        colour=Look("solid red", RED),
        meaning="the microphone is closed; only the mute control opens it",
    ),
    State.LISTENING: Pattern(
        "LISTENING",
        mono=Look("off (or a dim glow: indicator.listening_glow, pwmled only)", ON, glow=True),
        colour=Look("off (or a dim green glow: indicator.listening_glow)", GREEN, glow=True),
        meaning="waiting for {wake}; nothing is kept",
    ),
    State.CAPTURING: Pattern(
        "CAPTURING",
        mono=Look("solid on", ON),
        colour=Look("solid white", WHITE),
        meaning="heard {wake}: your command is held in memory and recognized on this device",
    ),
    State.UPLOADING: Pattern(
        "UPLOADING",
        mono=Look("fast blink, 5 per second", ON, 0.1, OFF, 0.1),
        colour=Look("fast blink blue, 5 per second", BLUE, 0.1, OFF, 0.1),
        meaning="sending audio off the device: uploads are turned on",
    ),
    State.ERROR: Pattern(
        "ERROR",
        mono=Look("slow blink, once a second", ON, 0.5, OFF, 0.5),
        colour=Look("slow blink amber, once a second", AMBER, 0.5, OFF, 0.5),
        meaning="something failed and the microphone is closed; the log says what",
    ),
}

# Shown instead of LISTENING / CAPTURING while the debug option writes audio to disk: the light is
# never dark while audio is being kept. UPLOADING keeps its own pattern (the upload light comes
# first, P3); MUTED and ERROR record nothing.
DEBUG_RECORDING = Pattern(
    "DEBUG RECORDING",
    mono=Look("on, blinking off briefly once a second", ON, 0.9, OFF, 0.1),
    colour=Look("white and magenta alternating, once a second", WHITE, 0.5, MAGENTA, 0.5),
    meaning="the debug option record_dir is on: what is captured is also saved to disk",
)


def pattern_for(state: State, recording: bool = False) -> Pattern:
    """The pattern to show for `state`; `recording` is true while audio is being written to disk."""
    if recording and state in (State.LISTENING, State.CAPTURING):
        return DEBUG_RECORDING
    return PATTERNS[State(state)]


# Two steady lights of one colour are told apart, without the other beside them to compare, only
# when one gives at least this many times the light of the other: perceived brightness goes roughly
# as the cube root of the light (CIE lightness), so a quarter of the light still looks about 60% as
# bright, and a half looks nearly the same (about 75%).
DISTINCT_LEVEL_RATIO = 4.0
# Colours (each scaled to its brightest channel) differing by less than this in every channel are
# the same colour to the eye.
_HUE_TOLERANCE = 0.25
# Blink phases this close in length (seconds) are the same rhythm.
_RHYTHM_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class Appearance:
    """What one pattern looks like in the room: a cycle of (light as emitted, seconds) phases, one
    phase for a steady light; or, on the terminal, the line printed."""

    phases: tuple[tuple[RGB, float], ...] = ()
    text: str = ""

    def alike(self, other: Appearance) -> bool:
        """Whether a person could not tell the two apart by looking (or reading)."""
        if self.text or other.text:
            return self.text == other.text
        if len(self.phases) != len(other.phases):
            return False
        n = len(self.phases)
        # A cycle may start at any phase: on-off and off-on blinking look the same.
        return any(all(_phase_alike(self.phases[i], other.phases[(i + shift) % n]) for i in range(n))
                   for shift in range(n))

    def describe(self) -> str:
        if self.text:
            return repr(self.text)
        return " then ".join(_fmt(c) + (f" for {s:g} s" if s else " steady") for c, s in self.phases)


def _phase_alike(a: tuple[RGB, float], b: tuple[RGB, float]) -> bool:
    return abs(a[1] - b[1]) < _RHYTHM_TOLERANCE_S and _light_alike(a[0], b[0])


def _light_alike(a: RGB, b: RGB) -> bool:
    la, lb = max(a), max(b)
    if la <= 0 or lb <= 0:
        return la <= 0 and lb <= 0  # dark is told apart from any light at all
    if max(la, lb) / min(la, lb) >= DISTINCT_LEVEL_RATIO:
        return False
    return all(abs(x / la - y / lb) < _HUE_TOLERANCE for x, y in zip(a, b, strict=True))


def every_pattern() -> dict[str, Pattern]:
    """Every pattern the README's light table tells apart, by name."""
    return {**{p.name: p for p in PATTERNS.values()}, DEBUG_RECORDING.name: DEBUG_RECORDING}


class Indicator:
    """Base of every light. Subclasses say how to write and read back one colour."""

    kind = "light"
    colour_light = False  # True: render Pattern.colour, else Pattern.mono

    def __init__(self, cfg: IndicatorConfig) -> None:
        self.cfg = cfg
        self.state: State | None = None
        self.pattern: Pattern | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fault: str | None = None

    # What a subclass provides.
    def _write(self, colour: RGB) -> None:
        raise NotImplementedError

    def _read(self) -> RGB:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    @classmethod
    def sent(cls, cfg: IndicatorConfig, look: Look, colour: RGB) -> RGB:
        """The colour actually sent for `colour` of `look`, after listening_glow and brightness."""
        k = cfg.brightness * (cfg.listening_glow if look.glow else 1.0)
        return (colour[0] * k, colour[1] * k, colour[2] * k)

    @classmethod
    def emitted(cls, cfg: IndicatorConfig, look: Look, colour: RGB) -> RGB:
        """The light that comes out for `colour` of `look`: what a person in the room sees."""
        return cls.sent(cfg, look, colour)

    @classmethod
    def appearance(cls, cfg: IndicatorConfig, pattern: Pattern) -> Appearance:
        """What `pattern` looks like on this kind of light with `cfg`: its phases as emitted."""
        look = pattern.colour if cls.colour_light else pattern.mono
        first = cls.emitted(cfg, look, look.first)
        if look.steady:
            return Appearance(((first, 0.0),))
        second = cls.emitted(cfg, look, look.second)
        if _light_alike(first, second):  # a "blink" between two lights nobody can tell apart is steady
            return Appearance(((first, 0.0),))
        return Appearance(((first, look.first_s), (second, look.second_s)))

    def _scale(self, look: Look, colour: RGB) -> RGB:
        return self.sent(self.cfg, look, colour)

    def _same(self, want: RGB, got: RGB) -> bool:
        return all(abs(w - g) < 0.01 for w, g in zip(want, got))

    def describe(self) -> str:
        return self.kind

    # The public face.
    def show(self, state: State, *, recording: bool = False) -> None:
        """Drive the light for `state` and confirm it, or raise IndicatorError."""
        pattern = pattern_for(state, recording)
        look = pattern.colour if self.colour_light else pattern.mono
        with self._lock:
            if self._closed:
                raise IndicatorError(f"the {self.describe()} was closed: restart tallylight")
            self._raise_fault()
            if pattern is self.pattern and not look.steady and self._animating():
                self.state = state  # the same rhythm is running and healthy: do not restart it
                return
            self._stop_animation()
            self.pattern, self.state = None, None
            self._apply(look, look.first)
            self.pattern, self.state = pattern, state
            if not look.steady:
                self._start_animation(look)

    @property
    def fault(self) -> str | None:
        """A failure of the blink thread not yet reported by check() or show(), else None."""
        return self._fault

    def check(self) -> None:
        """Raise IndicatorError if the light has failed since the last show(): a blink write failed,
        the blink thread died, or a steady light no longer reads back what it was set to (its pin
        was released or taken by another program)."""
        with self._lock:
            self._raise_fault()
            if self.pattern is not None and not self._closed:
                look = self.pattern.colour if self.colour_light else self.pattern.mono
                if not look.steady and not self._animating():
                    raise IndicatorError(f"the {self.describe()} stopped blinking: restart tallylight")
                if look.steady:
                    self._confirm(self._scale(look, look.first))

    def close(self) -> None:
        """Light off, pins released. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_animation()
            try:
                self._write(OFF)
                log.info("light off: %s", self.describe())
            except Exception as e:
                log.warning("could not turn the %s off: %s", self.describe(), e)
            try:
                self._release()
            except Exception as e:
                log.warning("could not release the %s: %s", self.describe(), e)

    # Internals.
    def _raise_fault(self) -> None:
        """Report a failure of the blink thread, once: the next show() drives and confirms afresh, so
        a light that works again can recover (through the gate's ERROR state), one that does not
        fails again."""
        if self._fault:
            fault, self._fault = self._fault, None
            self._stop_animation()
            self.pattern, self.state = None, None
            raise IndicatorError(fault)

    def _apply(self, look: Look, colour: RGB) -> None:
        want = self._scale(look, colour)
        try:
            self._write(want)
        except HardwareError as e:  # already one line that names the fix
            raise IndicatorError(str(e)) from None
        except Exception as e:  # gpiozero, lgpio, spidev errors alike: the light is not driven
            raise IndicatorError(f"cannot drive the {self.describe()}: {e} (check the wiring and [indicator] pins)") from None
        self._confirm(want)

    def _confirm(self, want: RGB) -> None:
        """Read the light back; IndicatorError unless it shows `want`."""
        try:
            got = self._read()
        except IndicatorError:
            raise
        except Exception as e:
            raise IndicatorError(f"cannot read back the {self.describe()}: {e} (check the wiring and [indicator] pins)") from None
        if not self._same(want, got):
            raise IndicatorError(
                f"the {self.describe()} did not read back: set {_fmt(want)}, read {_fmt(got)} "
                "(is another program using that pin?)"
            )

    def _animating(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _start_animation(self, look: Look) -> None:
        self._stop = threading.Event()
        phases = [(look.first, look.first_s), (look.second, look.second_s)]
        self._thread = threading.Thread(
            target=self._animate, args=(look, phases, self._stop), name="tallylight-light", daemon=True
        )
        self._thread.start()

    def _stop_animation(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _animate(self, look: Look, phases: list[tuple[RGB, float]], stop: threading.Event) -> None:
        # Phase 0 was written and confirmed by show(); carry on from the end of it.
        i = 0
        while not stop.wait(phases[i][1]):
            i = (i + 1) % len(phases)
            try:
                self._apply(look, phases[i][0])
            except IndicatorError as e:
                self._fault = str(e)
                log.error("%s", e)
                return


def _fmt(c: RGB) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in c) + ")"


class TerminalIndicator(Indicator):
    """A stand-in light for a machine without one: one line per change of state, saying in plain
    words what is happening (`Pattern.meaning`, with the wake phrase filled in)."""

    kind = "terminal light"

    def __init__(self, cfg: IndicatorConfig, out: TextIO = sys.stderr, wake_phrase: str = "", hint: str = "") -> None:
        super().__init__(cfg)
        self.out = out
        self.wake_phrase = wake_phrase
        self.hint = hint  # how to mute and unmute here (a key on the terminal), said with each line
        self._shown: tuple[State, Pattern] | None = None

    def show(self, state: State, *, recording: bool = False) -> None:
        pattern = pattern_for(state, recording)
        with self._lock:
            if self._closed:
                raise IndicatorError("the terminal light was closed: restart tallylight")
            if self._shown == (state, pattern):
                return
            try:
                hint = f"  [{self.hint}]" if self.hint else ""
                self.out.write(self.line(state, pattern) + hint + "\n")
                self.out.flush()
            except (OSError, ValueError) as e:  # ValueError: write to a closed file
                raise IndicatorError(f"cannot show the light on the terminal: {e}") from None
            self._shown = (state, pattern)
            self.pattern, self.state = pattern, state

    def line(self, state: State, pattern: Pattern) -> str:
        """What the terminal shows for `state` drawn as `pattern`."""
        name = pattern.name if pattern is PATTERNS.get(state) else f"{State(state).name} + {pattern.name}"
        return f"[tallylight] light: {name} ({pattern.says(self.wake_phrase)})"

    @classmethod
    def appearance(cls, cfg: IndicatorConfig, pattern: Pattern) -> Appearance:
        return Appearance(text=f"{pattern.name} ({pattern.says()})")

    def check(self) -> None:
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._shown is None:
            return  # it never showed a state (`check` only asks what it is): nothing to take back
        try:
            self.out.write("[tallylight] light: OFF (tallylight has stopped)\n")
            self.out.flush()
        except (OSError, ValueError):
            pass


class _GpioIndicator(Indicator):
    """A light made of one gpiozero device whose `.value` we set and read back."""

    def __init__(self, cfg: IndicatorConfig, device, where: str) -> None:
        super().__init__(cfg)
        self._device = device
        self._where = where

    def describe(self) -> str:
        return f"{self.kind} on {self._where}"

    def _release(self) -> None:
        self._device.close()


class LedIndicator(_GpioIndicator):
    """A single on/off LED (indicator.kind = 'led'). Cannot glow: LISTENING is off."""

    kind = "LED"

    @classmethod
    def sent(cls, cfg: IndicatorConfig, look: Look, colour: RGB) -> RGB:
        # On or off only: a glow would be a half level we cannot show, so it is off.
        level = 0.0 if look.glow else max(colour)
        on = 1.0 if level > 0 and cfg.brightness > 0 else 0.0
        return (on, on, on)

    def _write(self, colour: RGB) -> None:
        self._device.value = bool(colour[0])

    def _read(self) -> RGB:
        v = 1.0 if self._device.value else 0.0
        return (v, v, v)


class PwmLedIndicator(_GpioIndicator):
    """A single LED dimmed by PWM (indicator.kind = 'pwmled')."""

    kind = "PWM LED"

    @classmethod
    def emitted(cls, cfg: IndicatorConfig, look: Look, colour: RGB) -> RGB:
        v = max(cls.sent(cfg, look, colour))  # one LED, one level: what _write sends
        return (v, v, v)

    def _write(self, colour: RGB) -> None:
        self._device.value = max(colour)

    def _read(self) -> RGB:
        v = float(self._device.value)
        return (v, v, v)


class RgbLedIndicator(_GpioIndicator):
    """A three-pin RGB LED, each colour dimmed by PWM (indicator.kind = 'rgbled')."""

    kind = "RGB LED"
    colour_light = True

    def _write(self, colour: RGB) -> None:
        self._device.value = colour

    def _read(self) -> RGB:
        r, g, b = self._device.value
        return (float(r), float(g), float(b))


class Apa102Indicator(Indicator):
    """APA102 LEDs over SPI (indicator.kind = 'apa102'), every LED the same colour.

    indicator.brightness goes to the LEDs' 5-bit global brightness, which keeps dim colours smooth;
    the colour bytes carry the pattern (and the listening glow).
    """

    kind = "APA102 LEDs"
    colour_light = True

    def __init__(self, cfg: IndicatorConfig, strip) -> None:
        super().__init__(cfg)
        self.strip = strip
        self._global = self.global_brightness(cfg)

    def describe(self) -> str:
        return f"{self.strip.led_count} APA102 LEDs on SPI {self.cfg.spi_bus}.{self.cfg.spi_device}"

    @staticmethod
    def global_brightness(cfg: IndicatorConfig) -> int:
        return max(1, round(cfg.brightness * 31))

    @classmethod
    def sent(cls, cfg: IndicatorConfig, look: Look, colour: RGB) -> RGB:
        k = cfg.listening_glow if look.glow else 1.0
        return (colour[0] * k, colour[1] * k, colour[2] * k)

    @classmethod
    def emitted(cls, cfg: IndicatorConfig, look: Look, colour: RGB) -> RGB:
        # Whole colour bytes (as _write sends them), then dimmed by the 5-bit global brightness.
        k = cls.global_brightness(cfg) / 31
        r, g, b = (round(v * 255) / 255 * k for v in cls.sent(cfg, look, colour))
        return (r, g, b)

    def _write(self, colour: RGB) -> None:
        self.strip.fill(tuple(round(v * 255) for v in colour), self._global)

    def _read(self) -> RGB:
        from tallylight.hardware.apa102 import encode_frame

        # SPI is write-only: confirm the strip sent a whole, uniform frame at our brightness.
        frame = self.strip.last_frame
        if frame is None or len(frame) < 8:
            raise IndicatorError(f"nothing was sent to the {self.describe()}")
        head, b, g, r = frame[4:8]
        if head & 0x1F != self._global or frame != encode_frame([(r, g, b)] * self.strip.led_count, self._global):
            raise IndicatorError(f"the frame sent to the {self.describe()} is not the one meant")
        return (r / 255, g / 255, b / 255)

    def _same(self, want: RGB, got: RGB) -> bool:
        return all(abs(w - g) <= 0.5 / 255 + 1e-9 for w, g in zip(want, got))

    def _release(self) -> None:
        self.strip.close()


# Every indicator.kind but "auto", and the class that drives it.
INDICATOR_KINDS: dict[IndicatorKind, type[Indicator]] = {
    IndicatorKind.TERMINAL: TerminalIndicator, IndicatorKind.LED: LedIndicator, IndicatorKind.PWMLED: PwmLedIndicator,
    IndicatorKind.RGBLED: RgbLedIndicator, IndicatorKind.APA102: Apa102Indicator,
}


def _gpio_kind_for_auto(cfg: IndicatorConfig) -> IndicatorKind:
    """indicator.kind = 'auto' on a machine with GPIO: an LED that can glow when a glow is wanted."""
    return IndicatorKind.PWMLED if cfg.listening_glow > 0 else IndicatorKind.LED


def kinds_for(cfg: IndicatorConfig) -> list[IndicatorKind]:
    """The kinds of light `cfg` may drive: 'auto' becomes an LED or, without GPIO, the terminal."""
    return [_gpio_kind_for_auto(cfg), IndicatorKind.TERMINAL] if cfg.kind == IndicatorKind.AUTO else [IndicatorKind(cfg.kind)]


def alike_patterns(cfg: IndicatorConfig) -> list[tuple[str, tuple[str, Appearance], tuple[str, Appearance]]]:
    """Every pair of patterns the light `cfg` describes would show alike, as (kind, (name, appearance),
    (name, appearance)): computed from PATTERNS and each light's own rendering, so it cannot drift."""
    found = []
    for kind in kinds_for(cfg):
        cls = INDICATOR_KINDS[kind]
        shown = [(name, cls.appearance(cfg, p)) for name, p in every_pattern().items()]
        for i, (_, look_a) in enumerate(shown):
            found += [(kind, shown[i], other) for other in shown[i + 1:] if look_a.alike(other[1])]
    return found


def light_problem(cfg: IndicatorConfig) -> str | None:
    """One line naming the key and the fix when two states would look alike on this light, else None."""
    alike = alike_patterns(cfg)
    if not alike:
        return None
    kind, (a, look_a), (b, look_b) = alike[0]
    what = f"indicator.kind = {cfg.kind!r}" + (f" (a {kind} where there is GPIO)" if cfg.kind != kind else "")
    head = f"{what} would show {a} ({look_a.describe()}) and {b} ({look_b.describe()}) alike"
    if "LISTENING" in (a, b) and cfg.listening_glow > 0:
        # The only per-state setting is the glow: the brightest glow that tells every state apart.
        steps = (round(g * 0.05, 2) for g in range(round(cfg.listening_glow / 0.05), -1, -1))
        best = next(g for g in steps if g == 0 or not alike_patterns(dataclasses.replace(cfg, listening_glow=g)))
        return f"{head}: set indicator.listening_glow to {best:g} or less (0 = off while listening)"
    return f"{head}: choose another indicator.kind (the README's light table lists them)"


def make_indicator(cfg: IndicatorConfig, pin_factory=None, out: TextIO = sys.stderr, spi=None,
                   wake_phrase: str = "", hint: str = "") -> Indicator:
    """The light `cfg` describes. `pin_factory` is the GPIO seam (see hardware.pins); None means
    "this machine's GPIO". `spi` is the SPI seam for APA102 LEDs (None: open /dev/spidevB.D).
    `wake_phrase` goes into the terminal light's words ("waiting for "okay nabu"")."
    kind = 'auto' is a GPIO LED on indicator.pin when there is GPIO (or a pin factory was given),
    else the terminal light."""
    from tallylight.hardware.pins import gpio_available, make_pin_factory

    if cfg.brightness <= 0:
        raise IndicatorError("indicator.brightness = 0 would hide every state, capturing included: set it above 0")
    kind = cfg.kind
    if kind == IndicatorKind.AUTO:
        if cfg.pin != -1 and (pin_factory is not None or gpio_available()):
            kind = _gpio_kind_for_auto(cfg)
        else:
            log.info("no GPIO light available: showing the light's state on the terminal")
            kind = IndicatorKind.TERMINAL
    if kind == IndicatorKind.TERMINAL:
        return TerminalIndicator(cfg, out, wake_phrase, hint)
    if kind == IndicatorKind.APA102:
        from tallylight.hardware.apa102 import Apa102Strip

        try:
            if cfg.power_pin != -1 and pin_factory is None:
                pin_factory = make_pin_factory(PinFactoryName.AUTO)
            strip = Apa102Strip(
                cfg.led_count, spi=spi, bus=cfg.spi_bus, device=cfg.spi_device,
                power_pin=cfg.power_pin, pin_factory=pin_factory,
            )
        except IndicatorError:
            raise
        except Exception as e:  # HardwareError from the strip already names the fix
            raise IndicatorError(str(e)) from None
        return Apa102Indicator(cfg, strip)

    from gpiozero import LED, PWMLED, RGBLED

    factory = pin_factory if pin_factory is not None else make_pin_factory(PinFactoryName.AUTO)
    if kind in (IndicatorKind.LED, IndicatorKind.PWMLED):
        if cfg.pin == -1:
            raise IndicatorError(f"indicator.kind = '{kind}' needs indicator.pin (the BCM number the LED is wired to)")
        where = f"GPIO{cfg.pin}"
        cls, make = (LedIndicator, LED) if kind == IndicatorKind.LED else (PwmLedIndicator, PWMLED)
        try:
            device = make(cfg.pin, active_high=cfg.active_high, initial_value=0, pin_factory=factory)
        except Exception as e:
            raise IndicatorError(f"cannot use {where} for the light: {e} (check indicator.pin)") from None
        return cls(cfg, device, where)
    if kind == IndicatorKind.RGBLED:
        pins = (cfg.red_pin, cfg.green_pin, cfg.blue_pin)
        if -1 in pins:
            raise IndicatorError("indicator.kind = 'rgbled' needs indicator.red_pin, green_pin and blue_pin")
        where = "GPIO{}/{}/{}".format(*pins)
        try:
            device = RGBLED(*pins, active_high=cfg.active_high, initial_value=OFF, pwm=True, pin_factory=factory)
        except Exception as e:
            raise IndicatorError(f"cannot use {where} for the RGB light: {e} (check indicator.red_pin, green_pin, blue_pin)") from None
        return RgbLedIndicator(cfg, device, where)
    raise IndicatorError(f"indicator.kind must be one of auto, terminal, led, pwmled, rgbled, apa102, not {kind!r}")
