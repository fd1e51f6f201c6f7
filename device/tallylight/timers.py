"""Kitchen timers: a plain object driven by the daemon's clock, with no thread of its own.

The daemon calls `tick(now)` from its loop (every audio block is plenty: an alarm that is 20 ms late
is not late) and plays the alarm for each timer that `tick` returns. Times are monotonic seconds, not
wall-clock time: a Pi has no real-time clock, so the wall clock jumps when NTP first syncs after boot,
and a 5-minute timer must not fire at once or an hour late because of that.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# More running timers than this is a mistake (a loop in a program, a misheard command), not cooking.
MAX_TIMERS = 20
# Longest timer accepted: a day. A longer one is almost certainly a misrecognized number.
MAX_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Timer:
    """One running timer. `due` is on the same monotonic clock as `started`."""

    id: int
    label: str
    seconds: float
    started: float
    due: float

    def remaining(self, now: float) -> float:
        """Seconds left at `now` (0 once due)."""
        return max(0.0, self.due - now)


class Timers:
    """Timers with start, cancel and a `tick(now)` step that returns the ones that fired."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_timers: int = MAX_TIMERS) -> None:
        self._clock = clock
        self._max = max_timers
        self._running: list[Timer] = []  # in start order, so "the latest" is the last one
        self._ids = itertools.count(1)
        # The action thread starts and cancels timers while the audio thread ticks them.
        self._lock = threading.RLock()

    def start(self, seconds: float, label: str = "") -> Timer:
        """Start a timer of `seconds`; raises ValueError for a non-positive, huge or too-many timer."""
        with self._lock:
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
                raise ValueError(f"a timer needs a number of seconds, not {seconds!r}")
            if not 0 < seconds <= MAX_SECONDS:
                raise ValueError(f"a timer must run between 1 second and 24 hours, not {seconds:g} s")
            if len(self._running) >= self._max:
                raise ValueError(f"{self._max} timers are already running; cancel one first")
            now = self._clock()
            timer = Timer(next(self._ids), label, float(seconds), now, now + float(seconds))
            self._running.append(timer)
            log.info("timer %d (%s) started: %g s", timer.id, label or "unnamed", seconds)
            return timer

    def cancel(self, label: str | None = None) -> bool:
        """Cancel the latest timer with `label`, or the latest timer of all when `label` is None.

        Returns False when there was no such timer."""
        with self._lock:
            for i in range(len(self._running) - 1, -1, -1):
                if label is None or self._running[i].label == label:
                    timer = self._running.pop(i)
                    log.info("timer %d (%s) cancelled", timer.id, timer.label or "unnamed")
                    return True
            return False

    def tick(self, now: float | None = None) -> list[Timer]:
        """Remove and return the timers due at `now` (the clock's time when None), earliest first."""
        with self._lock:
            if now is None:
                now = self._clock()
            fired = [t for t in self._running if t.due <= now]
            if fired:
                self._running = [t for t in self._running if t.due > now]
                for t in fired:
                    log.info("timer %d (%s) fired", t.id, t.label or "unnamed")
            return sorted(fired, key=lambda t: (t.due, t.id))

    def active(self) -> list[Timer]:
        """The running timers, in start order."""
        with self._lock:
            return list(self._running)

    def next_due(self) -> float | None:
        """When the next timer fires (monotonic seconds), or None; lets a loop sleep until then."""
        with self._lock:
            return min((t.due for t in self._running), default=None)

    def close(self) -> None:
        """Drop every timer (safe to call twice)."""
        with self._lock:
            self._running.clear()
