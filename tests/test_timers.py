"""Timers: start, cancel, and firing from tick(now), on an injected clock (no sleeping)."""

import pytest

from tallylight.timers import MAX_SECONDS, Timers


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_timer_fires_once_when_due_and_not_before():
    clock = Clock()
    timers = Timers(clock=clock)
    t = timers.start(300, "5 minutes timer")
    assert t.due == 1300.0 and t.remaining(1100.0) == 200.0
    assert timers.tick(1299.9) == []
    assert timers.active() == [t]
    assert timers.tick(1300.0) == [t]
    assert timers.active() == []
    assert timers.tick(5000.0) == []  # fired once only


def test_tick_returns_all_due_timers_earliest_first():
    clock = Clock()
    timers = Timers(clock=clock)
    long = timers.start(120, "long")
    short = timers.start(60, "short")
    clock.t += 10
    third = timers.start(60, "third")  # due at 1070
    assert timers.next_due() == 1060.0
    assert timers.tick(1200.0) == [short, third, long]


def test_tick_without_now_reads_the_clock():
    clock = Clock()
    timers = Timers(clock=clock)
    t = timers.start(5)
    assert timers.tick() == []
    clock.t += 5
    assert timers.tick() == [t]


def test_cancel_latest_then_by_label_then_nothing():
    timers = Timers(clock=Clock())
    a = timers.start(60, "tea")
    b = timers.start(90, "eggs")
    c = timers.start(30, "tea")
    assert timers.cancel() is True  # the latest: c
    assert timers.active() == [a, b]
    assert timers.cancel("eggs") is True
    assert timers.active() == [a]
    assert timers.cancel("eggs") is False
    assert timers.cancel("tea") is True
    assert timers.cancel() is False
    assert c not in timers.active()


def test_cancelled_timer_never_fires():
    timers = Timers(clock=Clock())
    timers.start(1, "a")
    timers.start(2, "b")
    assert timers.cancel() is True and timers.cancel() is True
    assert timers.cancel() is False
    assert timers.tick(10**9) == []


@pytest.mark.parametrize("bad", [0, -5, MAX_SECONDS + 1, float("nan"), "60", True, None])
def test_start_refuses_nonsense_lengths(bad):
    timers = Timers(clock=Clock())
    with pytest.raises(ValueError):
        timers.start(bad, "x")
    assert timers.active() == []


def test_too_many_timers_refused():
    timers = Timers(clock=Clock(), max_timers=3)
    for i in range(3):
        timers.start(10 + i)
    with pytest.raises(ValueError, match="already running"):
        timers.start(10)


def test_close_twice():
    timers = Timers(clock=Clock())
    timers.start(10)
    timers.close()
    timers.close()
    assert timers.active() == []
