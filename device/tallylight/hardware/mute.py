"""The physical mute control: a latching switch or a momentary button on one GPIO.

Debouncing is a privacy property here, so it is asymmetric and done in our own code (gpiozero's mock
pins ignore bounce_time, and its real debounce would delay a mute):
 - a move TO mute acts on the first edge, at once: a mute is never delayed, and a glitch mutes
   (failing closed) rather than being filtered out;
 - a move to UNMUTE needs the line to sit still in the "listening" position for debounce_ms, so
   contact bounce, a glitch or interference never opens the mic.

Wiring (with mute.pull_up = true, the line active when pulled to GND):
 - switch: closed (pin to GND) = listening, open = muted. So a broken wire or an unplugged switch
   mutes. A hardware switch that cuts the mic itself and also tells a GPIO (as on the Echo or the
   Home Assistant Voice PE) is such a switch; with mute.pull_up = false the active level is high.
 - button: each press toggles. A press that mutes acts on its first edge; a press that unmutes must
   be held for debounce_ms (a real press lasts ~100 ms); the button must be released (stable for
   debounce_ms) before the next press counts.

Threads: gpiozero calls our edge callback from its own thread; it only records the edge and sets
`edge_event`. `poll()`, called from the audio thread every block and after `edge_event`, decides.
poll() also reads the pin level, so a missed edge is still caught and an unreadable pin raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from tallylight.choices import MuteControlKind, MuteKey, PinFactoryName
from tallylight.config import MuteConfig
from tallylight.errors import SwitchError

log = logging.getLogger(__name__)


def spoken_name(cfg: MuteConfig) -> str:
    """What opens the mic again, as the mute reply says it: "the mute switch", "the space bar"."""
    if cfg.control == MuteControlKind.KEY:
        return "the space bar" if cfg.key == MuteKey.SPACE else f"the {cfg.key} key"
    return f"the mute {cfg.control}"


class MuteControl:
    """The physical mute control. Debounced in our own code (gpiozero mock pins ignore bounce_time).

    `poll()` returns True (request mute) or False (request unmute) when the debounced request changes,
    else None. `muted` is the current request.

    For a switch, its position decides: `initially_muted` is only what is reported until the first
    poll() has read the position (an unmute still waits debounce_ms from construction). For a button,
    `initially_muted` is the starting toggle state (mute.at_start, resolved by the caller).
    """

    def __init__(
        self,
        cfg: MuteConfig,
        pin_factory=None,
        clock: Callable[[], float] = time.monotonic,
        initially_muted: bool = True,
    ) -> None:
        from gpiozero import DigitalInputDevice

        from tallylight.hardware.pins import make_pin_factory

        if cfg.pin == -1:
            raise SwitchError("mute.pin is -1: tallylight needs a physical mute control; wire a switch or button and set mute.pin")
        self.cfg = cfg
        # A key on the terminal (hardware/keyboard.py) presses a simulated button.
        self.is_button = cfg.control in (MuteControlKind.BUTTON, MuteControlKind.KEY)
        self._what = f"mute {cfg.control} on GPIO{cfg.pin}"
        self._clock = clock
        self._debounce = cfg.debounce_ms / 1000.0
        factory = pin_factory if pin_factory is not None else make_pin_factory(PinFactoryName.AUTO)
        try:
            # bounce_time=None: gpiozero's debounce would swallow the first edge of a mute.
            self._device = DigitalInputDevice(cfg.pin, pull_up=cfg.pull_up, bounce_time=None, pin_factory=factory)
        except Exception as e:
            raise SwitchError(f"cannot use GPIO{cfg.pin} for the mute {cfg.control}: {e} (check mute.pin and mute.pull_up)") from None

        self.edge_event = threading.Event()
        self.last_edge_time: float | None = None
        self._edges: deque[tuple[float, bool]] = deque()  # (time, line active), from gpiozero's thread
        self._edges_lock = threading.Lock()

        self.muted = bool(initially_muted)
        now = clock()
        try:
            self._level = self._read()   # the raw line as poll() last knew it (True = active)
        except SwitchError:
            self._device.close()
            raise
        self._level_since = now          # when it last changed
        self._held = self._level         # button: debounced "held down" (held at start is not a press)
        self._latched = False            # switch: force_muted() until the switch is seen at mute
        self.polls = 0                   # poll() calls that read the line: a key's press waits for one
        self._closed = False
        self._device.when_activated = self._on_active
        self._device.when_deactivated = self._on_inactive

    # gpiozero's thread: record only.
    def _on_active(self) -> None:
        self._record(True)

    def _on_inactive(self) -> None:
        self._record(False)

    def _record(self, active: bool) -> None:
        t = self._clock()
        with self._edges_lock:
            self._edges.append((t, active))
            self.last_edge_time = t
        self.edge_event.set()

    def _read(self) -> bool:
        try:
            return bool(self._device.is_active)
        except Exception as e:  # closed device, lgpio error, a pin gone: the switch cannot be read
            self.muted = True  # fail closed whatever the caller does next
            raise SwitchError(f"cannot read the {self._what}: {e} (check its wiring; the mic stays closed)") from None

    @property
    def line_active(self) -> bool:
        """The line now, undebounced (True = a button held down, a switch at mute): for `check`'s report."""
        return self._read()

    # The audio thread.
    def poll(self, now: float | None = None) -> bool | None:
        """Fold in the edges seen since the last call and the line's level now; return True to
        request mute, False to request unmute, None for no change. Clears `edge_event`."""
        if now is None:
            now = self._clock()
        self.edge_event.clear()
        with self._edges_lock:
            edges = list(self._edges)
            self._edges.clear()
        level = self._read()
        saw_active = saw_inactive = False
        # A button let go and pressed again between two polls (the loop was busy opening the mic):
        # the release counts if it lasted debounce_ms by the edges' own times, or the press is lost.
        released_at = None if self._level else self._level_since
        settled_release = False
        for t, active in edges:
            if active:
                saw_active = True
                if released_at is not None and t - released_at >= self._debounce:
                    settled_release = True
            else:
                saw_inactive = True
            if active != self._level:
                self._level, self._level_since = active, t
                released_at = None if active else t
        if level != self._level:  # an edge we did not hear about (or not yet)
            self._level, self._level_since = level, now
            if level:
                saw_active = True
            else:
                saw_inactive = True
        if not self._level:
            saw_inactive = True
        stable = now - self._level_since >= self._debounce
        try:
            if self.is_button:
                return self._decide_button(saw_active, stable, settled_release)
            return self._decide_switch(saw_inactive, stable)
        finally:
            self.polls += 1

    def _decide_switch(self, saw_mute_position: bool, stable: bool) -> bool | None:
        if saw_mute_position:
            self._latched = False  # the switch has been at mute since force_muted(): it rules again
            if not self.muted:
                self.muted = True
                return True
        # Already muted: unmute once the line has sat in "listening" for debounce_ms, measured from
        # its last change (so a mute-position bounce seen in this same poll still counts against it).
        if self.muted and not self._latched and self._level and stable:
            self.muted = False
            return False
        return None

    def _decide_button(self, saw_press: bool, stable: bool, settled_release: bool = False) -> bool | None:
        if self._held:
            # Held down: wait for a release that stays released before a new press can count.
            if settled_release:
                self._held = False  # ... and a new press came after it: judged below
            else:
                if not self._level and stable:
                    self._held = False
                return None
        if not self.muted and (saw_press or self._level):
            self._held = True  # the first edge of a press mutes at once
            self.muted = True
            return True
        if self.muted and self._level and stable:
            self._held = True  # held still for debounce_ms: a real press
            self.muted = False
            return False
        return None

    def poll_due_in(self, now: float | None = None) -> float | None:
        """Seconds until a pending unmute (or button release) can be decided, None if none is pending.

        A muted loop sleeping on `edge_event` must wake again after this long: an unmute is decided
        only once the line has been still for debounce_ms, which no further edge will announce."""
        if now is None:
            now = self._clock()
        if self.is_button:
            # a release waiting to settle, or a press waiting to be held long enough to unmute
            pending = (self._held and not self._level) or (not self._held and self.muted and self._level)
        else:
            pending = self.muted and self._level and not self._latched
        if not pending:
            return None
        return max(0.0, self._level_since + self._debounce - now)

    def force_muted(self) -> None:
        """Mute from software (the voice command "stop listening").

        Button: the toggle state becomes muted, so the next press unmutes. Switch in the listening
        position: we stay muted until the switch is moved to mute and back; only the physical
        control opens the mic again."""
        self.muted = True
        if not self.is_button:
            self._latched = True

    def close(self) -> None:
        """Release the pin. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._device.close()
        except Exception as e:
            log.warning("could not release the %s: %s", self._what, e)
