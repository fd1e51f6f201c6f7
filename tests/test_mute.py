"""The physical mute control on gpiozero's MockFactory with an injected clock.

Wiring as documented: pull-up on, so driving the pin LOW is the "active" level: a switch closed
(listening) or a button held down."""

import threading

import pytest
from gpiozero.pins.mock import MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from tallylight.config import MuteConfig
from tallylight.errors import SwitchError
from tallylight.hardware.mute import MuteControl
from tallylight.hardware.pins import make_pin_factory

DEBOUNCE = 0.030


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, s):
        self.t += s


class HeldPin(MockPWMPin):
    """A line held low from outside (a closed switch, a held button) that overpowers the pull-up,
    as real hardware does from the moment the pin is set up."""

    def _set_pull(self, value):
        super()._set_pull(value)
        self.drive_low()


class BrokenPin(MockPWMPin):
    """A pin whose level cannot be read once `broken` (a GPIO chip gone, a driver error)."""

    broken = False

    def _get_state(self):
        if self.broken:
            raise OSError(5, "GPIO line read failed")
        return super()._get_state()


@pytest.fixture
def factory():
    f = make_pin_factory("mock")
    yield f
    f.close()


@pytest.fixture
def clock():
    return Clock()


def switch(factory, clock, muted=True, **kw):
    cfg = MuteConfig(control="switch", pin=17, debounce_ms=30, **kw)
    return MuteControl(cfg, factory, clock=clock, initially_muted=muted), factory.pin(17)


def button(factory, clock, muted=True):
    cfg = MuteConfig(control="button", pin=17, debounce_ms=30)
    return MuteControl(cfg, factory, clock=clock, initially_muted=muted), factory.pin(17)


def listening(pin):  # switch closed / button held
    pin.drive_low()


def muting(pin):  # switch open / button released
    pin.drive_high()


# --- switch ------------------------------------------------------------------------------------

def test_switch_unmutes_only_after_stable_debounce(factory, clock):
    ctl, pin = switch(factory, clock)
    listening(pin)
    assert ctl.poll() is None and ctl.muted
    clock.advance(0.029)
    assert ctl.poll() is None and ctl.muted
    clock.advance(0.002)
    assert ctl.poll() is False and not ctl.muted
    assert ctl.poll() is None


def test_switch_mutes_on_the_first_edge_of_a_bouncy_move(factory, clock):
    ctl, pin = switch(factory, clock)
    listening(pin)
    clock.advance(0.1)
    assert ctl.poll() is False
    # Flip to mute: the contact bounces for 4 ms. The first edge alone must mute.
    clock.advance(0.5)
    muting(pin)
    assert ctl.poll() is True and ctl.muted
    for _ in range(4):
        clock.advance(0.001)
        listening(pin)
        clock.advance(0.001)
        muting(pin)
    assert ctl.poll() is None and ctl.muted


def test_a_mute_between_polls_is_not_missed_even_if_it_bounced_back(factory, clock):
    ctl, pin = switch(factory, clock)
    listening(pin)
    clock.advance(0.1)
    assert ctl.poll() is False
    muting(pin)  # a 1 ms dip to the mute position, over before the next poll
    clock.advance(0.001)
    listening(pin)
    assert ctl.poll() is True
    clock.advance(0.029)
    assert ctl.poll() is None
    clock.advance(0.002)
    assert ctl.poll() is False  # back on only after the line was still for debounce_ms


def test_switch_bouncy_unmute_waits_for_the_last_bounce(factory, clock):
    ctl, pin = switch(factory, clock)
    assert ctl.poll() is None
    for _ in range(5):  # 10 ms of bounce while moving to "listening"
        listening(pin)
        clock.advance(0.001)
        muting(pin)
        clock.advance(0.001)
    listening(pin)
    last_edge = clock()
    assert ctl.last_edge_time == last_edge
    clock.advance(0.025)
    assert ctl.poll() is None and ctl.muted  # 25 ms since the last bounce
    clock.advance(0.006)
    assert ctl.poll() is False


def test_switch_position_decides_at_start(factory, clock):
    factory.pin(17, pin_class=HeldPin)
    ctl, _ = switch(factory, clock, muted=False)
    assert ctl.poll() is None and not ctl.muted
    ctl.close()
    factory.reset()
    ctl, _ = switch(factory, clock, muted=False)  # a fresh pin: released, the mute position
    assert ctl.poll() is True


def test_switch_force_muted_holds_until_the_switch_is_cycled(factory, clock):
    ctl, pin = switch(factory, clock)
    listening(pin)
    clock.advance(0.1)
    assert ctl.poll() is False
    ctl.force_muted()  # "stop listening"
    assert ctl.muted
    clock.advance(10)
    assert ctl.poll() is None and ctl.muted  # the switch still says "listening": not enough
    muting(pin)
    clock.advance(0.2)
    assert ctl.poll() is None and ctl.muted
    listening(pin)
    clock.advance(0.031)
    assert ctl.poll() is False


def test_a_missed_edge_is_caught_by_reading_the_level(factory, clock):
    ctl, pin = switch(factory, clock)
    listening(pin)
    clock.advance(0.1)
    assert ctl.poll() is False
    pin.edges = "falling"  # the driver now reports only falling edges (active, with the pull-up)
    muting(pin)  # a rising edge: no callback
    assert not ctl.edge_event.is_set()
    assert ctl.poll() is True  # still muted at once, from the level read


def test_pull_down_wiring(factory, clock):
    ctl, pin = switch(factory, clock, pull_up=False)
    pin.drive_high()  # active-high: switch connects the pin to 3.3 V
    clock.advance(0.031)
    assert ctl.poll() is False
    pin.drive_low()
    assert ctl.poll() is True


# --- button ------------------------------------------------------------------------------------

def press(pin, clock, hold=0.1, bounce=3):
    """A press with contact bounce on both edges."""
    for _ in range(bounce):
        listening(pin)
        clock.advance(0.001)
        muting(pin)
        clock.advance(0.001)
    listening(pin)


def release(pin, clock, bounce=3):
    for _ in range(bounce):
        muting(pin)
        clock.advance(0.001)
        listening(pin)
        clock.advance(0.001)
    muting(pin)


def poll_for(ctl, clock, seconds, step=0.02):
    """Poll every block (20 ms) for `seconds`; the non-None results."""
    out = []
    t = 0.0
    while t < seconds:
        r = ctl.poll()
        if r is not None:
            out.append(r)
        clock.advance(step)
        t += step
    return out


def test_button_press_toggles_and_bounce_does_not_double_toggle(factory, clock):
    ctl, pin = button(factory, clock, muted=False)
    assert ctl.poll() is None and not ctl.muted
    listening(pin)  # first edge of a press
    assert ctl.poll() is True  # mutes at once
    clock.advance(0.001)
    muting(pin)
    clock.advance(0.001)
    listening(pin)
    assert poll_for(ctl, clock, 0.1) == []  # bounce and the hold change nothing
    release(pin, clock)
    assert poll_for(ctl, clock, 0.2) == []
    press(pin, clock)
    assert ctl.poll() is None and ctl.muted  # an unmuting press must be held debounce_ms
    assert poll_for(ctl, clock, 0.1) == [False]
    release(pin, clock)
    assert poll_for(ctl, clock, 0.2) == []
    press(pin, clock)
    assert poll_for(ctl, clock, 0.1) == [True]


def test_button_glitch_while_muted_does_not_unmute(factory, clock):
    ctl, pin = button(factory, clock, muted=True)
    listening(pin)
    clock.advance(0.005)
    muting(pin)  # a 5 ms spike: not a press
    assert poll_for(ctl, clock, 0.2) == [] and ctl.muted


def test_button_release_bounce_is_not_a_new_press(factory, clock):
    ctl, pin = button(factory, clock, muted=True)
    press(pin, clock)
    assert poll_for(ctl, clock, 0.1) == [False]
    # Release, with one bounce 10 ms after the line first went up (well inside debounce).
    muting(pin)
    assert ctl.poll() is None
    clock.advance(0.010)
    listening(pin)
    clock.advance(0.002)
    muting(pin)
    assert poll_for(ctl, clock, 0.2) == [] and not ctl.muted


def test_button_held_at_start_is_not_a_press(factory, clock):
    factory.pin(17, pin_class=HeldPin)
    ctl, pin = button(factory, clock, muted=False)
    assert poll_for(ctl, clock, 0.2) == [] and not ctl.muted
    release(pin, clock)
    assert poll_for(ctl, clock, 0.1) == []
    press(pin, clock)
    assert ctl.poll() is True


def test_button_force_muted_next_press_unmutes(factory, clock):
    ctl, pin = button(factory, clock, muted=False)
    ctl.force_muted()
    assert ctl.muted and poll_for(ctl, clock, 0.1) == []
    press(pin, clock)
    assert poll_for(ctl, clock, 0.1) == [False]


def test_poll_due_in_tells_a_sleeping_loop_when_to_look_again(factory, clock):
    ctl, pin = button(factory, clock, muted=True)
    assert ctl.poll_due_in() is None
    listening(pin)
    assert ctl.poll() is None
    assert ctl.poll_due_in() == pytest.approx(0.030)
    clock.advance(0.030)
    assert ctl.poll_due_in() == 0
    assert ctl.poll() is False


# --- threads, errors, life cycle ---------------------------------------------------------------

def test_edge_event_is_set_from_another_thread(factory):
    ctl = MuteControl(MuteConfig(control="switch", pin=17), factory)
    pin = factory.pin(17)
    assert not ctl.edge_event.is_set()
    t = threading.Thread(target=pin.drive_low)  # as gpiozero's callback thread would
    t.start()
    assert ctl.edge_event.wait(5)
    t.join()
    assert ctl.last_edge_time is not None
    ctl.poll()
    assert not ctl.edge_event.is_set()  # poll() consumed it
    ctl.close()


def test_unreadable_pin_raises_switch_error_and_mutes(factory, clock):
    pin = factory.pin(17, pin_class=BrokenPin)
    ctl, _ = switch(factory, clock)
    listening(pin)
    clock.advance(0.1)
    assert ctl.poll() is False
    pin.broken = True
    with pytest.raises(SwitchError) as err:
        ctl.poll()
    msg = str(err.value)
    assert "\n" not in msg and "GPIO17" in msg and "GPIO line read failed" in msg
    assert ctl.muted


def test_unreadable_pin_at_start(factory, clock):
    pin = factory.pin(17, pin_class=BrokenPin)
    pin.broken = True
    with pytest.raises(SwitchError):
        switch(factory, clock)
    pin.broken = False
    ctl, _ = switch(factory, clock)  # the pin was released: it can be used again
    ctl.close()


def test_poll_after_close_raises(factory, clock):
    ctl, _ = switch(factory, clock)
    ctl.close()
    ctl.close()
    with pytest.raises(SwitchError):
        ctl.poll()


def test_no_pin_is_refused(factory):
    with pytest.raises(SwitchError) as err:
        MuteControl(MuteConfig(pin=-1), factory)
    assert "mute.pin" in str(err.value)


def test_pin_in_use(factory):
    factory.pin(17, pin_class=MockPWMPin)
    from gpiozero import LED

    led = LED(17, pin_factory=factory)
    with pytest.raises(SwitchError) as err:
        MuteControl(MuteConfig(pin=17), factory)
    assert "GPIO17" in str(err.value) and "\n" not in str(err.value)
    led.close()


# --- properties over random edge sequences -----------------------------------------------------

steps = st.lists(
    st.tuples(st.integers(0, 45), st.sampled_from(["flip", "poll", "flip", "poll", "burst"])),
    min_size=1, max_size=60,
)


def run_sequence(ctl, pin, clock, seq, check):
    """Drive `seq` of (ms to wait, action) on the real mock pin; call check(result, history) after
    every poll. history: (time, active) of each raw change, starting with the initial level."""
    history = [(clock(), False)]

    def flip():
        active = not history[-1][1]
        listening(pin) if active else muting(pin)
        history.append((clock(), active))

    for ms, action in seq:
        clock.advance(ms / 1000)
        if action == "flip":
            flip()
        elif action == "burst":  # contact bounce: 3 flips 1 ms apart
            for _ in range(3):
                flip()
                clock.advance(0.001)
        else:
            before = ctl.muted
            check(ctl.poll(), history, before)
    return history


def stable_active_for_debounce(history, now):
    t, active = history[-1]
    return active and now - t >= DEBOUNCE - 1e-9


@settings(max_examples=150, deadline=None)
@given(steps)
def test_switch_never_unmutes_unless_stable(seq):
    factory = make_pin_factory("mock")
    clock = Clock()
    ctl = MuteControl(MuteConfig(control="switch", pin=17, debounce_ms=30), factory, clock=clock)
    pin = factory.pin(17)
    seen_since_poll = []

    def check(result, history, before):
        if result is False:
            assert stable_active_for_debounce(history, clock())
        # Never delay a mute: any move to the mute position since the last poll, while unmuted,
        # is reported by this poll.
        if not before and any(not a for _, a in history[len(seen_since_poll) or 1:]):
            assert result is True
        seen_since_poll[:] = history[:]
        assert ctl.muted == (before if result is None else result)

    history = run_sequence(ctl, pin, clock, seq, check)
    # Liveness: once the line is left alone, the request follows the switch within two polls (the
    # first may still have to report a dip to "mute" it has only now heard about).
    clock.advance(DEBOUNCE + 0.001)
    ctl.poll()
    ctl.poll()
    assert ctl.muted == (not history[-1][1])
    factory.close()


@settings(max_examples=150, deadline=None)
@given(steps, st.booleans())
def test_button_never_unmutes_unless_held_stable(seq, start_muted):
    factory = make_pin_factory("mock")
    clock = Clock()
    ctl = MuteControl(MuteConfig(control="button", pin=17, debounce_ms=30), factory, clock=clock,
                      initially_muted=start_muted)
    pin = factory.pin(17)

    def check(result, history, before):
        if result is False:
            assert stable_active_for_debounce(history, clock())
        if result is not None:
            assert result != before  # a report is always a change
        assert ctl.muted == (before if result is None else result)

    run_sequence(ctl, pin, clock, seq, check)
    factory.close()


def test_button_released_and_pressed_again_between_two_polls_still_counts(factory, clock):
    """The loop may be busy for longer than a quick release and press (opening the mic takes up to a
    second or more): the release is judged by the edges' own times, so the second press is not lost."""
    ctl, pin = button(factory, clock, muted=False)
    assert ctl.poll() is None
    listening(pin)  # a press: mutes at once
    assert ctl.poll() is True
    clock.advance(0.1)
    muting(pin)  # let go ...
    clock.advance(0.1)
    listening(pin)  # ... and pressed again, all before the next poll
    clock.advance(0.1)
    assert poll_for(ctl, clock, 0.1) == [False], "the second press, held 0.1 s, was lost"
