"""The tally light on gpiozero's MockFactory (real gpiozero, simulated pins): every kind shows the
right pattern for every state, confirms it before show() returns, and fails closed with one line."""

import io
import re
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockPWMPin

from tallylight.config import IndicatorConfig
from tallylight.errors import HardwareError, IndicatorError
from tallylight.gate import State
from tallylight.hardware.indicator import (
    AMBER,
    BLUE,
    DEBUG_RECORDING,
    GREEN,
    INDICATOR_KINDS,
    MAGENTA,
    OFF,
    ON,
    PATTERNS,
    RED,
    WHITE,
    Apa102Indicator,
    LedIndicator,
    Look,
    Pattern,
    PwmLedIndicator,
    RgbLedIndicator,
    TerminalIndicator,
    alike_patterns,
    light_problem,
    make_indicator,
    pattern_for,
)
from tallylight.hardware.pins import make_pin_factory


class FailingPin(MockPWMPin):
    """A pin whose driver starts failing on demand (as an lgpio call does when the chip goes away)."""

    fail = False

    def _set_state(self, value):
        if self.fail:
            raise OSError(5, "GPIO line write failed")
        super()._set_state(value)


class StuckPin(MockPWMPin):
    """A pin that accepts writes but stays where it is (owned and held by something else)."""

    stuck = False

    def _set_state(self, value):
        if not self.stuck:
            super()._set_state(value)


@pytest.fixture
def factory():
    f = make_pin_factory("mock")
    yield f
    f.close()


def wait_for(cond, timeout=5.0):
    """Poll `cond` until true; generous timeout for a loaded 2-core machine."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def levels(pin):
    return [s.state for s in pin.states]


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


# --- the pattern table itself ------------------------------------------------------------------

def test_every_state_has_a_pattern_and_only_capturing_is_solid_on_a_single_led():
    assert set(PATTERNS) == set(State)
    for state, p in PATTERNS.items():
        solid_on = p.mono.steady and not p.mono.glow and max(p.mono.first) > 0
        assert solid_on == (state is State.CAPTURING), state
    assert not (DEBUG_RECORDING.mono.steady or DEBUG_RECORDING.colour.steady)


def test_capture_upload_and_recording_light_their_first_phase():
    # show() confirms the first phase; for these it must be "lit", never a dark phase or a glow.
    for p in (PATTERNS[State.CAPTURING], PATTERNS[State.UPLOADING], DEBUG_RECORDING):
        for look in (p.mono, p.colour):
            assert max(look.first) > 0 and not look.glow
    # Debug recording never goes dark on a colour light: it alternates two colours.
    assert max(DEBUG_RECORDING.colour.second) > 0


def test_recording_pattern_applies_while_listening_or_capturing_only():
    assert pattern_for(State.CAPTURING, True) is DEBUG_RECORDING
    assert pattern_for(State.LISTENING, True) is DEBUG_RECORDING
    assert pattern_for(State.UPLOADING, True) is PATTERNS[State.UPLOADING]
    assert pattern_for(State.MUTED, True) is PATTERNS[State.MUTED]
    assert pattern_for(State.ERROR, True) is PATTERNS[State.ERROR]
    assert pattern_for(State.CAPTURING) is PATTERNS[State.CAPTURING]


def _readme_light_rows(repo) -> dict[str, list[str]]:
    """The README's table "What the light means": state -> its cells."""
    text = (repo / "README.md").read_text()
    table = text.split("## What the light means", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    return {cells[0]: cells for cells in rows}


def test_readme_table_names_every_pattern_in_the_lights_own_words(repo):
    """The README's table is the one place owners read the light; the patterns and the words the
    terminal light prints are PATTERNS', and each row says them."""
    rows = _readme_light_rows(repo)
    patterns = {state.name.capitalize(): p for state, p in PATTERNS.items()} | {"Debug recording": DEBUG_RECORDING}
    assert sorted(rows) == sorted(patterns)
    for name, p in patterns.items():
        _, mono, colour, happening = rows[name]
        if name != "Listening":  # its cells explain the glow option in words
            assert (mono, colour) == (p.mono.text, p.colour.text), name
        words = p.says()
        assert happening.startswith(words[0].upper() + words[1:] + "."), name


_COLOUR_NAMES = {RED: "red", GREEN: "green", WHITE: "white", BLUE: "blue", AMBER: "amber", MAGENTA: "magenta"}


def _rhythm(look, single_led: bool) -> str:
    """How docs/led-patterns.md writes a Look: "on 0.1 s, off 1.9 s", "red, steady"."""
    def name(rgb) -> str:
        return "off" if max(rgb) == 0 else ("on" if single_led else _COLOUR_NAMES[rgb])

    if look.steady:
        return f"{name(look.first)}, steady"
    first = f"{name(look.first)} {look.first_s:g} s"
    return f"{first}, {name(look.second)} {look.second_s:g} s"


def test_led_patterns_page_gives_the_rhythms_of_patterns_and_leaves_the_meanings_to_the_readme(repo):
    """One source for what the light means (the README's table); the page adds the exact rhythms,
    which must be those the lights are driven with."""
    doc = (repo / "docs" / "led-patterns.md").read_text()
    assert "(../README.md#what-the-light-means)" in doc
    assert "What is happening" not in doc  # the README's table is not repeated
    patterns = {state.name.capitalize(): p for state, p in PATTERNS.items()} | {"Debug recording": DEBUG_RECORDING}
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in patterns:
            rows[cells[0]] = cells[1:]
    assert sorted(rows) == sorted(patterns)
    for name, p in patterns.items():
        if p.mono.glow:
            continue  # listening: off, or a glow whose level is a setting (said in words)
        assert rows[name] == [_rhythm(p.mono, True), _rhythm(p.colour, False)], name


def test_readme_shows_a_line_the_terminal_light_prints(repo):
    text = (repo / "README.md").read_text().split("## What the light means", 1)[1].split("\n## ", 1)[0]
    shown = re.search(r"`(\[tallylight\] light: [^`]*)`", text.replace("\n", " ")).group(1)
    out = io.StringIO()
    TerminalIndicator(IndicatorConfig(kind="terminal"), out=out, wake_phrase="okay nabu").show(State.LISTENING)
    assert out.getvalue() == shown + "\n"


# --- no two states alike ------------------------------------------------------------------------

GLOW_KINDS = [
    IndicatorConfig(kind="pwmled", pin=27),
    IndicatorConfig(kind="rgbled", red_pin=22, green_pin=23, blue_pin=24),
    IndicatorConfig(kind="apa102", led_count=3),
]


@pytest.mark.parametrize("kind", ["auto", *INDICATOR_KINDS])
@pytest.mark.parametrize("glow, brightness", [(0.0, 1.0), (0.1, 0.5), (0.25, 0.05), (0.0, 0.05)])
def test_every_kind_tells_every_state_apart_with_a_sane_glow(kind, glow, brightness):
    cfg = IndicatorConfig(kind=kind, red_pin=22, green_pin=23, blue_pin=24, listening_glow=glow,
                          brightness=brightness)
    assert alike_patterns(cfg) == [] and light_problem(cfg) is None


@pytest.mark.parametrize("kind, glow, alike", [
    ("pwmled", 1.0, True), ("pwmled", 0.3, True), ("pwmled", 0.25, False),
    ("auto", 0.9, True),  # auto with a glow is a PWM LED
    ("led", 1.0, False),  # cannot glow: listening stays off
    ("rgbled", 1.0, False), ("apa102", 1.0, False),  # a bright green is still not white
])
def test_a_glow_as_bright_as_capturing_looks_alike(kind, glow, alike):
    cfg = IndicatorConfig(kind=kind, red_pin=22, green_pin=23, blue_pin=24, listening_glow=glow)
    pairs = [(a, b) for _, (a, _), (b, _) in alike_patterns(cfg)]
    assert pairs == ([("LISTENING", "CAPTURING")] if alike else [])
    problem = light_problem(cfg)
    assert (problem is not None) == alike
    if alike:
        assert "\n" not in problem and "set indicator.listening_glow to 0.25 or less" in problem


def test_looks_alike_is_judged_from_the_pattern_table(monkeypatch):
    """Change the table so errors blink like uploads on a single LED: the check sees it, with no list
    of its own to update."""
    fast = PATTERNS[State.UPLOADING].mono
    monkeypatch.setitem(PATTERNS, State.ERROR, Pattern("ERROR", mono=fast, colour=PATTERNS[State.ERROR].colour))
    for kind in ("led", "pwmled"):
        pairs = [(a, b) for _, (a, _), (b, _) in alike_patterns(IndicatorConfig(kind=kind))]
        assert pairs == [("UPLOADING", "ERROR")], kind
    assert alike_patterns(IndicatorConfig(kind="rgbled", red_pin=22, green_pin=23, blue_pin=24)) == []  # amber != blue
    # Off-on is on-off seen a moment later; a different rhythm is a different look.
    shifted = Look("x", OFF, 0.1, ON, 0.1)
    monkeypatch.setitem(PATTERNS, State.ERROR, Pattern("ERROR", mono=shifted, colour=PATTERNS[State.ERROR].colour))
    assert [a for _, (a, _), _ in alike_patterns(IndicatorConfig(kind="led"))] == ["UPLOADING"]
    slower = Look("x", ON, 0.3, OFF, 0.3)
    monkeypatch.setitem(PATTERNS, State.ERROR, Pattern("ERROR", mono=slower, colour=PATTERNS[State.ERROR].colour))
    assert alike_patterns(IndicatorConfig(kind="led")) == []


@pytest.mark.parametrize("cfg", GLOW_KINDS, ids=lambda c: c.kind)
def test_appearance_is_what_the_light_really_shows(factory, cfg):
    """The check's idea of each state's first phase is what the real light writes and reads back."""
    cfg = IndicatorConfig(**{**cfg.__dict__, "listening_glow": 0.2, "brightness": 0.5})
    spi = RecordingSpi()
    ind = make_indicator(cfg, factory, spi=spi)
    for state in State:
        ind.show(state)
        if cfg.kind == "apa102":
            head, b, g, r = spi.writes[-1][4:8]
            shown = tuple(v / 255 * (head & 0x1F) / 31 for v in (r, g, b))
        elif cfg.kind == "rgbled":
            shown = rgb(factory)
        else:
            shown = (factory.pin(27).state,) * 3
        light, _ = type(ind).appearance(cfg, PATTERNS[state]).phases[0]
        assert shown == pytest.approx(light, abs=1e-6), state
    ind.close()


# --- single LED --------------------------------------------------------------------------------

def test_led_steady_states(factory):
    ind = make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    assert isinstance(ind, LedIndicator)
    pin = factory.pin(27)
    ind.show(State.CAPTURING)
    assert pin.state == 1
    ind.show(State.LISTENING)
    assert pin.state == 0
    ind.show(State.CAPTURING)
    assert levels(pin) == [0, 1, 0, 1]
    ind.close()
    assert pin.state == 0
    ind.close()  # twice is fine


def test_led_cannot_glow_so_listening_is_off(factory):
    ind = make_indicator(IndicatorConfig(kind="led", pin=27, listening_glow=0.5), factory)
    ind.show(State.LISTENING)
    assert factory.pin(27).state == 0
    ind.close()


def test_led_active_low(factory):
    ind = make_indicator(IndicatorConfig(kind="led", pin=27, active_high=False), factory)
    pin = factory.pin(27)
    assert pin.state == 1  # off = high on an active-low LED
    ind.show(State.CAPTURING)
    assert pin.state == 0
    ind.close()


def test_led_uploading_blinks_fast_and_is_on_when_show_returns(factory):
    ind = make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    pin = factory.pin(27)
    ind.show(State.LISTENING)
    pin.clear_states()
    ind.show(State.UPLOADING)
    assert pin.state == 1  # the upload light is on before show() returns
    assert wait_for(lambda: len(pin.states) >= 7)
    ind.show(State.LISTENING)
    seq = levels(pin)
    assert seq[1:7] == [1, 0, 1, 0, 1, 0]  # a steady on/off rhythm
    on_times = [s.timestamp for s in pin.states[2:7:2]]  # time each "on" lasted
    # Rhythm, not a timing test: on for roughly 0.1 s, well short of the 0.5 s of ERROR.
    assert 0.05 < sum(on_times) / len(on_times) < 0.45
    assert pin.state == 0
    ind.close()


def test_led_muted_blips_and_error_blinks_slowly(factory):
    ind = make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    pin = factory.pin(27)
    ind.show(State.MUTED)
    assert pin.state == 1  # the blip starts at once
    assert wait_for(lambda: pin.state == 0)  # and is short
    ind.show(State.ERROR)
    assert pin.state == 1
    assert wait_for(lambda: pin.state == 0) and wait_for(lambda: pin.state == 1)
    ind.check()
    ind.close()


def test_led_debug_recording_is_mostly_on(factory):
    ind = make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    pin = factory.pin(27)
    ind.show(State.CAPTURING, recording=True)
    assert pin.state == 1
    assert wait_for(lambda: pin.state == 0) and wait_for(lambda: pin.state == 1)
    ind.close()


def test_showing_the_same_blink_twice_does_not_restart_it(factory):
    ind = make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    pin = factory.pin(27)
    ind.show(State.ERROR)
    pin.clear_states()
    ind.show(State.ERROR)
    assert levels(pin) == [1]  # no off-on glitch from a restart
    ind.close()


# --- PWM LED -----------------------------------------------------------------------------------

def test_pwmled_glow_and_brightness(factory):
    cfg = IndicatorConfig(kind="pwmled", pin=27, listening_glow=0.2, brightness=0.5)
    ind = make_indicator(cfg, factory)
    assert isinstance(ind, PwmLedIndicator)
    pin = factory.pin(27)
    ind.show(State.LISTENING)
    assert pin.state == pytest.approx(0.1)
    ind.show(State.CAPTURING)
    assert pin.state == pytest.approx(0.5)
    ind.show(State.UPLOADING)
    assert pin.state == pytest.approx(0.5)
    assert wait_for(lambda: pin.state == 0)
    ind.close()
    assert pin.state == 0


def test_auto_picks_pwm_led_when_a_glow_is_wanted(factory):
    assert isinstance(make_indicator(IndicatorConfig(listening_glow=0.1), factory), PwmLedIndicator)


def test_auto_picks_plain_led_with_a_pin_factory(factory):
    assert isinstance(make_indicator(IndicatorConfig(), factory), LedIndicator)


@pytest.mark.skipif(any(Path("/dev").glob("gpiochip*")), reason="this machine has GPIO")
def test_auto_without_gpio_is_the_terminal():
    out = io.StringIO()
    ind = make_indicator(IndicatorConfig(), out=out)
    assert isinstance(ind, TerminalIndicator)
    ind.show(State.MUTED)
    assert out.getvalue() == "[tallylight] light: MUTED (the microphone is closed; only the mute control opens it)\n"


@pytest.mark.skipif(any(Path("/dev").glob("gpiochip*")), reason="this machine has GPIO")
def test_an_led_without_gpio_says_what_to_do():
    with pytest.raises(HardwareError) as err:
        make_indicator(IndicatorConfig(kind="led"))
    assert "no GPIO on this machine" in one_line(err) and "terminal" in str(err.value)


# --- RGB LED -----------------------------------------------------------------------------------

def rgb(factory):
    return tuple(factory.pin(n).state for n in (22, 23, 24))


@pytest.mark.parametrize("state, colour", [
    (State.MUTED, RED), (State.CAPTURING, WHITE), (State.UPLOADING, BLUE), (State.ERROR, AMBER),
])
def test_rgbled_colours(factory, state, colour):
    cfg = IndicatorConfig(kind="rgbled", red_pin=22, green_pin=23, blue_pin=24, brightness=0.8)
    ind = make_indicator(cfg, factory)
    assert isinstance(ind, RgbLedIndicator)
    ind.show(state)
    assert rgb(factory) == pytest.approx(tuple(0.8 * c for c in colour))
    ind.close()
    assert rgb(factory) == (0, 0, 0)


def test_rgbled_listening_glows_green_or_is_dark(factory):
    cfg = IndicatorConfig(kind="rgbled", red_pin=22, green_pin=23, blue_pin=24, listening_glow=0.1)
    ind = make_indicator(cfg, factory)
    ind.show(State.LISTENING)
    assert rgb(factory) == pytest.approx(tuple(0.1 * c for c in GREEN))
    ind.close()
    factory.reset()
    ind = make_indicator(IndicatorConfig(kind="rgbled", red_pin=22, green_pin=23, blue_pin=24), factory)
    ind.show(State.LISTENING)
    assert rgb(factory) == (0, 0, 0)
    ind.close()


def test_rgbled_debug_recording_alternates_white_and_magenta(factory):
    cfg = IndicatorConfig(kind="rgbled", red_pin=22, green_pin=23, blue_pin=24)
    ind = make_indicator(cfg, factory)
    ind.show(State.CAPTURING, recording=True)
    assert rgb(factory) == WHITE
    assert wait_for(lambda: rgb(factory) == MAGENTA)
    assert wait_for(lambda: rgb(factory) == WHITE)
    assert all(max(rgb(factory)) > 0 for _ in range(50))  # never dark while recording
    ind.close()


def test_rgbled_active_low_common_anode(factory):
    cfg = IndicatorConfig(kind="rgbled", red_pin=22, green_pin=23, blue_pin=24, active_high=False)
    ind = make_indicator(cfg, factory)
    ind.show(State.MUTED)
    assert rgb(factory) == (0, 1, 1)  # red leg pulled low, the others held high
    ind.close()


def test_rgbled_needs_three_pins(factory):
    with pytest.raises(IndicatorError) as err:
        make_indicator(IndicatorConfig(kind="rgbled", red_pin=22, green_pin=23), factory)
    assert "blue_pin" in one_line(err)


# --- failing closed ----------------------------------------------------------------------------

def test_show_raises_when_the_pin_cannot_be_driven(factory):
    pin = factory.pin(27, pin_class=FailingPin)
    ind = make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    ind.show(State.LISTENING)
    pin.fail = True
    with pytest.raises(IndicatorError) as err:
        ind.show(State.CAPTURING)
    msg = one_line(err)
    assert "cannot drive the LED on GPIO27" in msg and "GPIO line write failed" in msg
    ind.close()


def test_show_raises_when_read_back_disagrees(factory):
    pin = factory.pin(27, pin_class=StuckPin)
    ind = make_indicator(IndicatorConfig(kind="pwmled", pin=27), factory)
    pin.stuck = True
    with pytest.raises(IndicatorError) as err:
        ind.show(State.CAPTURING)
    assert "did not read back" in one_line(err)
    ind.close()


def test_a_blink_that_fails_later_is_reported(factory):
    pin = factory.pin(27, pin_class=FailingPin)
    ind = make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    ind.show(State.UPLOADING)
    pin.fail = True  # the next phase of the blink cannot be written

    def failed():
        try:
            ind.check()
        except IndicatorError:
            return True
        return False

    assert wait_for(failed)
    with pytest.raises(IndicatorError):
        ind.show(State.ERROR)  # the pin still cannot be driven
    pin.fail = False  # the fault clears (a loose connector pushed back)
    ind.show(State.CAPTURING)  # drives and confirms afresh
    assert pin.state == 1
    ind.close()


def test_a_blink_failure_is_reported_by_the_next_show(factory):
    pin = factory.pin(27, pin_class=FailingPin)
    ind = make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    ind.show(State.UPLOADING)
    pin.fail = True
    assert wait_for(lambda: ind.fault is not None)
    pin.fail = False
    with pytest.raises(IndicatorError) as err:
        ind.show(State.LISTENING)  # the gate hears of the failure even if it never called check()
    assert "GPIO line write failed" in one_line(err)
    ind.show(State.LISTENING)
    ind.close()


def test_show_after_close_raises(factory):
    ind = make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    ind.close()
    with pytest.raises(IndicatorError) as err:
        ind.show(State.CAPTURING)
    assert "closed" in one_line(err)


def test_a_pin_already_in_use_is_one_line(factory):
    first = make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    with pytest.raises(IndicatorError) as err:
        make_indicator(IndicatorConfig(kind="led", pin=27), factory)
    assert "GPIO27" in one_line(err)
    first.close()


def test_zero_brightness_is_refused(factory):
    with pytest.raises(IndicatorError) as err:
        make_indicator(IndicatorConfig(kind="pwmled", brightness=0.0), factory)
    assert "brightness" in one_line(err)


def test_led_without_a_pin(factory):
    with pytest.raises(IndicatorError) as err:
        make_indicator(IndicatorConfig(kind="led", pin=-1), factory)
    assert "indicator.pin" in one_line(err)


# --- terminal ----------------------------------------------------------------------------------

def test_terminal_prints_one_line_per_change():
    out = io.StringIO()
    ind = make_indicator(IndicatorConfig(kind="terminal"), out=out, wake_phrase="okay nabu")
    ind.show(State.MUTED)
    ind.show(State.MUTED)
    ind.show(State.LISTENING)
    ind.show(State.CAPTURING)
    ind.show(State.CAPTURING, recording=True)
    ind.show(State.UPLOADING)
    ind.show(State.ERROR)
    ind.close()
    # Plain words of what is happening, not how an LED would look or which key shapes it.
    assert out.getvalue().splitlines() == [
        "[tallylight] light: MUTED (the microphone is closed; only the mute control opens it)",
        '[tallylight] light: LISTENING (waiting for "okay nabu"; nothing is kept)',
        '[tallylight] light: CAPTURING (heard "okay nabu": your command is held in memory and recognized on this device)',
        "[tallylight] light: CAPTURING + DEBUG RECORDING (the debug option record_dir is on: what is captured is "
        "also saved to disk)",
        "[tallylight] light: UPLOADING (sending audio off the device: uploads are turned on)",
        "[tallylight] light: ERROR (something failed and the microphone is closed; the log says what)",
        "[tallylight] light: OFF (tallylight has stopped)",
    ]
    ind.close()
    with pytest.raises(IndicatorError):
        ind.show(State.CAPTURING)


def test_terminal_that_cannot_be_written_fails_closed():
    out = io.StringIO()
    ind = TerminalIndicator(IndicatorConfig(kind="terminal"), out=out)
    out.close()
    with pytest.raises(IndicatorError) as err:
        ind.show(State.CAPTURING)
    assert "terminal" in one_line(err)


# --- APA102 through make_indicator (frame details are in test_apa102.py) -------------------------

class RecordingSpi:
    def __init__(self):
        self.writes = []
        self.closed = False

    def writebytes(self, data):
        self.writes.append(bytes(data))

    def close(self):
        self.closed = True


def leds_of(frame, n):
    return [tuple(frame[4 + 4 * i: 8 + 4 * i]) for i in range(n)]


def test_apa102_states(factory):
    spi = RecordingSpi()
    cfg = IndicatorConfig(kind="apa102", led_count=12, brightness=0.5, listening_glow=0.2, power_pin=5)
    ind = make_indicator(cfg, factory, spi=spi)
    assert isinstance(ind, Apa102Indicator)
    assert factory.pin(5).state == 1  # the ring's power line is up
    head = 0xE0 | 16  # 0.5 * 31, rounded
    ind.show(State.MUTED)
    assert leds_of(spi.writes[-1], 12) == [(head, 0, 0, 255)] * 12  # red, sent as B, G, R
    ind.show(State.CAPTURING)
    assert leds_of(spi.writes[-1], 12) == [(head, 255, 255, 255)] * 12
    ind.show(State.LISTENING)
    assert leds_of(spi.writes[-1], 12) == [(head, 0, 51, 0)] * 12  # green at 0.2
    ind.show(State.UPLOADING)
    assert leds_of(spi.writes[-1], 12) == [(head, 255, 0, 0)] * 12  # blue first
    assert wait_for(lambda: leds_of(spi.writes[-1], 12) == [(head, 0, 0, 0)] * 12)
    ind.close()
    assert spi.closed and set(spi.writes[-1]) == {0} | {0xE0}  # all off
    ind.close()


def test_apa102_write_failure_is_an_indicator_error(factory):
    class BrokenSpi(RecordingSpi):
        def writebytes(self, data):
            raise OSError(121, "Remote I/O error")

    ind = make_indicator(IndicatorConfig(kind="apa102"), factory, spi=BrokenSpi())
    with pytest.raises(IndicatorError) as err:
        ind.show(State.CAPTURING)
    assert "Remote I/O error" in one_line(err)
    ind.close()


@pytest.mark.skipif(Path("/dev/spidev0.0").exists(), reason="this machine has SPI")
def test_apa102_without_spi_says_how_to_enable_it():
    with pytest.raises(IndicatorError) as err:
        make_indicator(IndicatorConfig(kind="apa102"))
    assert "raspi-config nonint do_spi 0" in one_line(err)


def test_on_and_off_constants():
    assert ON == (1.0, 1.0, 1.0) and OFF == (0.0, 0.0, 0.0)


# --- the pin factory seam ----------------------------------------------------------------------

def test_mock_factory_has_pwm_pins():
    f = make_pin_factory("mock")
    assert isinstance(f.pin(27), MockPWMPin)
    f.close()


def test_unknown_factory_name():
    with pytest.raises(HardwareError) as err:
        make_pin_factory("pigpio")
    assert "'auto', 'lgpio' or 'mock'" in one_line(err)


def test_auto_without_gpiochip_is_one_line_and_no_gpiozero_warnings(tmp_path):
    import warnings

    from tallylight.hardware.pins import gpio_available

    assert not gpio_available(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(HardwareError) as err:
            make_pin_factory("auto", dev=tmp_path)
    assert caught == []
    msg = one_line(err)
    assert "no GPIO on this machine" in msg and "gpio.pin_factory = 'mock'" in msg


@pytest.mark.skipif(any(Path("/dev").glob("gpiochip*")), reason="this machine has GPIO")
def test_lgpio_missing_or_unopenable_is_one_line(tmp_path):
    # Here lgpio is either not installed (x86 CI) or cannot open a gpiochip: both are one line.
    (tmp_path / "gpiochip0").touch()
    with pytest.raises(HardwareError) as err:
        make_pin_factory("lgpio", dev=tmp_path)
    msg = one_line(err)
    assert "lgpio" in msg or "gpiochip" in msg or "GPIO chip" in msg


def test_the_daemons_terminal_light_names_the_configured_wake_phrase(tmp_path):
    from tallylight.config import WakeConfig
    from tallylight.wake import wake_phrase

    assert wake_phrase(WakeConfig()) == "okay nabu"
    model = tmp_path / "my_word.json"
    model.write_text('{"wake_word": "Hey Computer", "model": "my_word.tflite"}')
    assert wake_phrase(WakeConfig(model=str(model))) == "hey computer"
    out = io.StringIO()
    make_indicator(IndicatorConfig(kind="terminal"), out=out, wake_phrase=wake_phrase(WakeConfig(model="hey_jarvis")))\
        .show(State.LISTENING)
    assert out.getvalue() == '[tallylight] light: LISTENING (waiting for "hey jarvis"; nothing is kept)\n'
