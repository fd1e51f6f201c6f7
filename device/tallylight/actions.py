"""Carry out a recognized command: built-ins, GPIO outputs and programs. Returns what to say.

`ActionRunner.perform(match)` takes a recognized intent (duck-typed: `match.command` with `name`,
`action`, `options`, `reply`, `slots`; `match.slots`, a mapping of typed values; `match.text`, the
transcript) and returns an `ActionResult`. It never touches the microphone or the privacy gate: the
`mute` action only sets `ActionResult.mute`, and the daemon enters MUTED through the gate.

Actions (`command.action`):
- `time`: "It's 3:05 PM."
- `timer`: starts a timer of its duration slot (seconds), or its `hours`/`minutes`/`seconds` int
  slots, or `options.seconds`; the daemon plays the alarm for what `timers.tick(now)` returns.
- `timer_cancel`: cancels the latest timer.
- `volume_up` / `volume_down`: the ALSA mixer through `amixer -M sset CONTROL STEP%+/-`.
- `stop`: sets `ActionResult.stop`; the daemon cuts the reply or alarm that is playing.
- `mute`: sets `ActionResult.mute`; its reply's `{control}` names what opens the mic again.
- `gpio`: `options.pin` (BCM), `options.set` = on | off | toggle | pulse, `options.pulse_s`.
- `home_assistant`: sets `ActionResult.to_home_assistant` to the words heard; the daemon sends them to
  Home Assistant through the uplink (speech/ha_sentences.py builds this command from its sentences).
- `run`: `options.argv`, a list run without a shell, `{slot}` placeholders filled per element.

Reply templates (`command.reply`) may use the slots by name and these fields (they win over a slot
of the same name): `time`, `date`, `duration`, `volume`, `state`, `output`, `count`, `control`.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tallylight.choices import GpioSet
from tallylight.errors import HardwareError, TallylightError
from tallylight.reply_template import render
from tallylight.speech.command_draft import CommandDraft, Option
from tallylight.speech.command_types import TIMER_UNIT_SLOTS, FrozenMap, template_fields
from tallylight.speech.phrase import required_slots
from tallylight.timers import Timers

log = logging.getLogger(__name__)

SORRY = "Sorry, that didn't work."
MUTE_REPLY = "Microphone off. Use {control} to turn it back on."
# The most of a program's output used for a reply, and kept from its stderr for the log.
MAX_OUTPUT_CHARS = 200
# The most of each of a program's output streams held in memory (the start of stdout, for the reply;
# the end of stderr, for the log): the rest is read and dropped, so a chatty program (`yes`) cannot
# fill the daemon's memory, nor block on a full pipe.
MAX_CAPTURE_BYTES = 16384
# After a program exits, how long to wait for the end of its output: a child it left running in the
# background (a music player) may hold the pipes open for hours, and the reply must not wait for it.
OUTPUT_GRACE_S = 0.2
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


class ActionError(TallylightError):
    """An action could not be carried out (bad options, a program that failed)."""


class MixerError(HardwareError):
    """The ALSA mixer cannot be used (no control of that name, no card, no amixer)."""


@dataclass(frozen=True)
class ActionResult:
    """What happened. `reply` is the text to speak (None: say nothing); `detail` one line for the log."""

    ok: bool
    reply: str | None
    detail: str = ""
    mute: bool = False  # the daemon enters MUTED through the privacy gate
    stop: bool = False  # the daemon cuts the current reply or alarm
    # Text for Home Assistant's conversation: the daemon sends it over the uplink socket (text only, never audio)
    to_home_assistant: str | None = None


# -- the mixer ------------------------------------------------------------------------------------


class Mixer:
    """Volume through ALSA's `amixer` (Debian's alsa-utils). `-M` uses the mapped (perceived) scale,
    so ten steps of 10% sound even rather than bunched at the top."""

    def __init__(
        self,
        control: str = "Master",
        *,
        device: str = "",
        env: Mapping[str, str] | None = None,
        amixer: str = "amixer",
        timeout_s: float = 5.0,
    ) -> None:
        self.control = control
        self.device = device
        self._env = dict(env) if env is not None else None
        self._amixer = amixer
        self._timeout_s = timeout_s

    def argv(self, *args: str) -> list[str]:
        """The amixer command line for `args` (e.g. "sset", "Master", "10%+")."""
        dev = ["-D", self.device] if self.device else []
        return [self._amixer, *dev, "-M", *args]

    def change(self, percent: int) -> int:
        """Raise (percent > 0) or lower the volume; returns the new level in percent."""
        step = f"{abs(int(percent))}%{'+' if percent >= 0 else '-'}"
        return self._level(self._amixer_run("sset", self.control, step))

    def get(self) -> int:
        """The current level in percent."""
        return self._level(self._amixer_run("sget", self.control))

    def _amixer_run(self, *args: str) -> str:
        argv = self.argv(*args)
        try:
            done = subprocess.run(
                argv, env=self._env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=self._timeout_s
            )
        except FileNotFoundError:
            raise MixerError(f"{self._amixer} not found (apt-get install alsa-utils)") from None
        except subprocess.TimeoutExpired:
            raise MixerError(f"amixer took over {self._timeout_s:g} s (is the sound card hung?)") from None
        if done.returncode == 0:
            return done.stdout
        err = done.stderr
        if "Unable to find simple control" in err:
            raise MixerError(
                f"no mixer control {self.control!r} (set actions.mixer_control; `amixer scontrols` lists them)"
            )
        if "Mixer attach" in err or "cannot find card" in err or "Invalid CTL" in err:
            where = repr(self.device) if self.device else "the default sound card"
            raise MixerError(f"no mixer on {where} (set actions.mixer_device; `aplay -l` lists sound cards)")
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        raise MixerError(f"amixer failed: {lines[-1] if lines else f'exit status {done.returncode}'}")

    def _level(self, output: str) -> int:
        m = re.search(r"\[(\d+)%\]", output)
        if not m:
            raise MixerError(f"mixer control {self.control!r} has no volume (pick another with actions.mixer_control)")
        return int(m.group(1))


# -- helpers --------------------------------------------------------------------------------------


def spoken_duration(seconds: float) -> str:
    """3725 -> "1 hour 2 minutes 5 seconds"; 60 -> "1 minute"."""
    s = int(round(seconds))
    parts = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        n, s = divmod(s, size)
        if n:
            parts.append(f"{n} {unit}{'' if n == 1 else 's'}")
    return " ".join(parts) or "0 seconds"


def spoken_time(t: float) -> str:
    """Local time of day as people say it: "3:05 PM"."""
    lt = time.localtime(t)
    hour = lt.tm_hour % 12 or 12
    return f"{hour}:{lt.tm_min:02d} {'AM' if lt.tm_hour < 12 else 'PM'}"


def _slot_specs(command: Any) -> dict[str, Any]:
    """The command's declared slots by name: a mapping, or a sequence of objects with `.name`."""
    slots = getattr(command, "slots", None) or {}
    if isinstance(slots, Mapping):
        return dict(slots)
    return {getattr(s, "name", None): s for s in slots}


def _spec_attr(spec: Any, name: str) -> Any:
    return spec.get(name) if isinstance(spec, Mapping) else getattr(spec, name, None)


def check_slot(command: Any, name: str, value: Any) -> None:
    """Refuse a slot value the command's grammar could not have produced (ActionError).

    The matcher already checked it; this is the second lock, because the value is about to become a
    program argument: an int or duration slot must be an int (in the int's range), an enum value one
    of the enum's values. A slot the command does not declare, or of a kind we do not know, is refused.
    """
    specs = _slot_specs(command)
    if name not in specs:
        raise ActionError(f"command {command.name!r} has no slot {{{name}}}")
    spec = specs[name]
    kind = str(_spec_attr(spec, "kind") or "")
    if kind in ("int", "duration"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ActionError(f"slot {{{name}}} of {command.name!r} must be a whole number, not {value!r}")
        if kind == "duration":
            if value < 1:
                raise ActionError(f"slot {{{name}}} of {command.name!r} is {value} seconds, not a length")
            return
        lo, hi = _spec_attr(spec, "lo"), _spec_attr(spec, "hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ActionError(f"slot {{{name}}} of {command.name!r} is {value}, outside {lo}-{hi}")
        return
    if kind == "enum":
        values = _spec_attr(spec, "values") or {}
        # `values` maps the words heard to the value handed to the action: only those values pass.
        allowed = set(values.values()) if isinstance(values, Mapping) else set(values)
        if not isinstance(value, str) or value not in allowed:
            raise ActionError(f"slot {{{name}}} of {command.name!r} is {value!r}, not one of its values")
        return
    raise ActionError(f"slot {{{name}}} of {command.name!r} has an unknown kind {kind!r}")


def fill_argv(command: Any, argv: Any, slots: Mapping[str, Any]) -> list[str]:
    """Substitute `{slot}` in each argv element (never splitting or joining elements).

    The program (argv[0]) must be fixed: a voice must not choose what runs."""
    if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) for a in argv):
        raise ActionError(f"command {command.name!r}: options.argv must be a non-empty list of strings")
    if any(m.group(1) is not None for m in _PLACEHOLDER.finditer(argv[0])):
        raise ActionError(f"command {command.name!r}: the program (argv[0]) cannot contain a {{slot}}")
    out = []
    for arg in argv:

        def fill(m: re.Match) -> str:
            token = m.group(0)
            if token in ("{{", "}}"):
                return token[0]
            name = m.group(1)
            if name not in slots:
                raise ActionError(f"command {command.name!r}: argv uses {{{name}}}, which was not heard")
            check_slot(command, name, slots[name])
            return str(slots[name])

        out.append(_PLACEHOLDER.sub(fill, arg))
    return out


def _one_line(data: bytes | str | None) -> str:
    if not data:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:MAX_OUTPUT_CHARS] if lines else ""


# -- the runner -----------------------------------------------------------------------------------


class ActionRunner:
    """Carries out matched commands. Holds the GPIO outputs it opened, the timers and the mixer."""

    def __init__(
        self,
        cfg: Any,
        *,
        pin_factory: Any = None,
        make_pin_factory: Callable[[], Any] | None = None,
        mixer: Mixer | None = None,
        timers: Timers | None = None,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
        mute_control: str = "the mute control",
    ) -> None:
        self._cfg = cfg
        # What opens the mic after "stop listening", in words (hardware.mute.spoken_name): the mute
        # reply says it, so that a laptop's owner hears "the space bar", not "the mute switch".
        self._mute_control = mute_control
        # The gpiozero pin factory; or, without one, `make_pin_factory()` makes it when the first
        # GPIO command runs (`listen --act`: a machine without GPIO can still try the other commands).
        self._pin_factory = pin_factory
        self._make_pin_factory = make_pin_factory
        self.mixer = mixer or Mixer(cfg.mixer_control, device=getattr(cfg, "mixer_device", ""))
        self.timers = timers or Timers()
        self._clock = clock
        # The environment programs start from (the daemon's, by default), minus our own variables.
        base = dict(os.environ if env is None else env)
        self._env = {k: v for k, v in base.items() if not k.startswith("TALLYLIGHT_")}
        self._outputs: dict[int, Any] = {}
        self._closed = False

    # -- public -----------------------------------------------------------------------------------

    def perform(self, match: Any) -> ActionResult:
        """Carry out `match.command.action`; never raises for a failed action (ok=False instead)."""
        command = match.command
        action = command.action
        spec = ACTIONS.get(action)
        if spec is None:
            return ActionResult(False, SORRY, f"command {command.name!r}: unknown action {action!r}")
        if self._closed:
            return ActionResult(False, SORRY, "actions are closed")
        try:
            result = spec.handler(self, match)
        except TallylightError as e:
            log.warning("command %r (%s) failed: %s", command.name, action, e)
            return ActionResult(False, SORRY, str(e))
        except Exception as e:  # noqa: BLE001 - one broken action must not take the speaker down
            log.exception("command %r (%s) failed", command.name, action)
            return ActionResult(False, SORRY, f"{type(e).__name__}: {e}")
        log.info("command %r (%s): %s", command.name, action, result.detail or ("ok" if result.ok else "failed"))
        return result

    def close(self) -> None:
        """Close the GPIO outputs (each goes to its off state) and drop the timers. Safe twice."""
        if self._closed:
            return
        self._closed = True
        for pin, device in list(self._outputs.items()):
            try:
                device.close()
            except Exception:  # noqa: BLE001 - close the others anyway
                log.exception("closing GPIO output on pin %d failed", pin)
        self._outputs.clear()
        self.timers.close()

    # -- replies ----------------------------------------------------------------------------------

    def reply(self, match: Any, **fields: Any) -> str | None:
        """What to say for `match`: its command's reply, else its action's default reply, filled in
        with the slots and the action's own `fields`; None when there is nothing to say."""
        template = match.command.reply
        if template is None:
            spec = ACTIONS.get(match.command.action)
            template = spec.default_reply if spec else None
        if template is None:
            return None
        # Slots by the words heard ("twenty one", the enum's spoken word) when the matcher gives
        # them, else by value; the action's own fields win over a slot of the same name.
        merged = {**dict(match.slots), **dict(getattr(match, "spans", None) or {}), **fields}
        merged.setdefault("time", spoken_time(self._clock()))
        merged.setdefault("date", time.strftime("%A, %B %-d", time.localtime(self._clock())))
        return render(template, merged) or None

    # -- built-ins --------------------------------------------------------------------------------

    def _do_time(self, match: Any) -> ActionResult:
        now = spoken_time(self._clock())
        return ActionResult(True, self.reply(match, time=now), now)

    def _do_home_assistant(self, match: Any) -> ActionResult:
        # Only the words go; the daemon sends them (the runner has no socket) and ledgers what was sent.
        return ActionResult(True, self.reply(match), f"{len(match.text)} characters for Home Assistant",
                            to_home_assistant=match.text)

    def _do_timer(self, match: Any) -> ActionResult:
        seconds = timer_seconds(match)
        if seconds is None:
            return ActionResult(False, "How long should the timer run?", "no duration slot heard")
        duration = spoken_duration(seconds)
        try:
            timer = self.timers.start(seconds, f"{duration} timer")
        except ValueError as e:
            return ActionResult(False, f"I can't set that timer: {e}.", str(e))
        return ActionResult(True, self.reply(match, duration=duration), f"timer {timer.id}: {seconds:g} s")

    def _do_timer_cancel(self, match: Any) -> ActionResult:
        if not self.timers.cancel():
            return ActionResult(False, "There is no timer.", "no timer running")
        return ActionResult(True, self.reply(match, count=1), "1 cancelled")

    def _do_volume_up(self, match: Any) -> ActionResult:
        return self._volume(match, +match.command.options.get("step", self._cfg.volume_step))

    def _do_volume_down(self, match: Any) -> ActionResult:
        return self._volume(match, -match.command.options.get("step", self._cfg.volume_step))

    def _volume(self, match: Any, step: int) -> ActionResult:
        try:
            level = self.mixer.change(step)
        except MixerError as e:
            # The spoken part stays short; the fix (a config key, a command) goes to the log.
            spoken = str(e).split(" (", 1)[0]
            return ActionResult(False, f"I can't change the volume: {spoken}.", str(e))
        return ActionResult(True, self.reply(match, volume=level), f"volume {level}%")

    def _do_stop(self, match: Any) -> ActionResult:
        return ActionResult(True, self.reply(match), "stop", stop=True)

    def _do_mute(self, match: Any) -> ActionResult:
        return ActionResult(True, self.reply(match, control=self._mute_control), "mute by voice", mute=True)

    # -- GPIO -------------------------------------------------------------------------------------

    def _do_gpio(self, match: Any) -> ActionResult:
        opts = match.command.options
        pin, mode = opts.get("pin"), opts.get("set")
        name = match.command.name
        if isinstance(pin, bool) or not isinstance(pin, int) or not 0 <= pin <= 27:
            raise ActionError(f"command {name!r}: options.pin must be a BCM GPIO number 0-27, not {pin!r}")
        if mode not in GpioSet.words():
            raise ActionError(f"command {name!r}: options.set must be on, off, toggle or pulse, not {mode!r}")
        device = self._output(pin, bool(opts.get("active_high", True)))
        if mode == GpioSet.ON:
            device.on()
        elif mode == GpioSet.OFF:
            device.off()
        elif mode == GpioSet.TOGGLE:
            device.toggle()
        else:
            pulse_s = opts.get("pulse_s", 0.5)
            if isinstance(pulse_s, bool) or not isinstance(pulse_s, (int, float)) or not 0 < pulse_s <= 60:
                raise ActionError(f"command {name!r}: options.pulse_s must be 0-60 seconds, not {pulse_s!r}")
            # gpiozero's own background thread turns it off again; a pulse never blocks the daemon.
            device.blink(on_time=float(pulse_s), off_time=0.0, n=1, background=True)
        state = "pulsed" if mode == GpioSet.PULSE else ("on" if device.value else "off")
        return ActionResult(True, self.reply(match, state=state), f"GPIO{pin} {state}")

    def _output(self, pin: int, active_high: bool) -> Any:
        """The output device on `pin`, opened on first use and kept (so its state stays put)."""
        device = self._outputs.get(pin)
        if device is not None:
            return device
        from gpiozero import DigitalOutputDevice
        from gpiozero.exc import BadPinFactory, GPIOZeroError

        if self._pin_factory is None and self._make_pin_factory is not None:
            self._pin_factory = self._make_pin_factory()  # HardwareError: one line that says what to do
        try:
            device = DigitalOutputDevice(
                pin, active_high=active_high, initial_value=False, pin_factory=self._pin_factory
            )
        except BadPinFactory:
            raise HardwareError(
                f"GPIO{pin}: no GPIO on this machine (on a Pi install lgpio; to try without one set gpio.pin_factory = 'mock')"
            ) from None
        except GPIOZeroError as e:
            raise HardwareError(f"GPIO{pin} cannot be used as an output: {e} (pick a free pin in the command's options)") from None
        self._outputs[pin] = device
        return device

    # -- programs ---------------------------------------------------------------------------------

    def _do_run(self, match: Any) -> ActionResult:
        command, opts = match.command, match.command.options
        argv = fill_argv(command, opts.get("argv"), match.slots)
        timeout = opts.get("timeout_s", self._cfg.run_timeout_s)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise ActionError(f"command {command.name!r}: options.timeout_s must be 0-3600 seconds, not {timeout!r}")
        env = dict(self._env)
        env["TALLYLIGHT_COMMAND"] = command.name
        if opts.get("pass_transcript", False) is True:
            # In the environment, not argv: any user on the machine can read every process's argv
            # (`ps`, /proc/PID/cmdline), but only its owner and root can read its environment; and
            # free text in argv could be taken for an option.
            env["TALLYLIGHT_TRANSCRIPT"] = match.text
        program = argv[0]
        try:
            # No shell, no stdin (and so no audio, ever), its own process group so a timeout kills
            # everything it started.
            proc = subprocess.Popen(
                argv,
                shell=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise ActionError(f"command {command.name!r}: program not found: {program!r} (check options.argv)") from None
        except PermissionError:
            raise ActionError(f"command {command.name!r}: program not executable: {program!r} (chmod +x it)") from None
        except OSError as e:
            raise ActionError(f"command {command.name!r}: cannot start {program!r}: {e.strerror}") from None
        out = _PipeReader(proc.stdout, keep="head")
        err = _PipeReader(proc.stderr, keep="tail")
        try:
            # The program's own exit ends the wait, not the end of its output (see OUTPUT_GRACE_S).
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return ActionResult(
                False, "Sorry, that took too long.", f"{program!r} still running after {timeout:g} s: {_kill_group(proc)}"
            )
        grace_ends = time.monotonic() + OUTPUT_GRACE_S
        out, err = out.result(grace_ends), err.result(grace_ends)
        first = next((ln.strip() for ln in out.decode("utf-8", "replace").splitlines() if ln.strip()), "")
        first = first[:MAX_OUTPUT_CHARS]
        if proc.returncode != 0:
            why = _one_line(err) or f"exit status {proc.returncode}"
            status = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
            return ActionResult(False, SORRY, f"{program!r} failed ({status}): {why}")
        return ActionResult(True, self.reply(match, output=first), f"{program!r} ok")


# ---------------------------------------------------------------------------------------------------
# The actions: one spec each, the only place an action is described


@dataclass(frozen=True)
class ActionSpec:
    """One kind of action, whole: what the config may set for it, what its reply may say, how the
    responder runs it and what it does.

    `handler(runner, match)` does it and returns an ActionResult (raising TallylightError is a
    failed action too). `options` are its option keys in a command table; `check(draft, options)`
    checks them against the command's phrases and slots (raising `draft.fail(...)`) and may fill in
    derived ones. `reply_fields` are the values the handler gives the reply template besides the
    slots. `immediate` actions only set ActionResult flags and are applied on the audio thread as
    soon as they are heard; the others run on the action thread, in order.
    """

    name: str
    handler: Callable[[ActionRunner, Any], ActionResult]
    options: Mapping[str, Option] = field(default_factory=FrozenMap)
    check: Callable[[CommandDraft, dict[str, Any]], None] | None = None
    reply_fields: frozenset[str] = frozenset()
    default_reply: str | None = None
    immediate: bool = False


# Every action by name, in the order the config's error messages list them.
ACTIONS: dict[str, ActionSpec] = {}
_ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_action(spec: ActionSpec) -> ActionSpec:
    """Add an action; `action = "NAME"` in a command table then chooses it."""
    if not _ACTION_NAME.match(spec.name):
        raise ValueError(f"an action name must be lowercase letters, digits and _, not {spec.name!r}")
    if spec.name in ACTIONS:
        raise ValueError(f"there is already an action {spec.name!r}")
    ACTIONS[spec.name] = spec
    return spec


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"a number from {lo:g} to {hi:g}"


def _bcm(v: Any) -> str | None:
    return None if 0 <= v <= 27 else "a BCM GPIO number from 0 to 27 (the GPIO number, not the header pin)"


def _set_choice(v: Any) -> str | None:
    return None if v in GpioSet.words() else "one of " + ", ".join(repr(s) for s in GpioSet)


PULSE_DEFAULT_S = 0.5


def _check_gpio_options(draft: CommandDraft, options: dict[str, Any]) -> None:
    if options["set"] == GpioSet.PULSE:
        options.setdefault("pulse_s", PULSE_DEFAULT_S)
    elif "pulse_s" in options:
        raise draft.fail(
            ".pulse_s", f"only applies with set = \"pulse\" (this command has set = {options['set']!r})"
        )


def _check_run_options(draft: CommandDraft, options: dict[str, Any]) -> None:
    argv = options["argv"]
    if not argv:
        raise draft.fail(".argv", 'is empty: give the program and its arguments, like ["/usr/local/bin/hello"]')
    for i, arg in enumerate(argv):
        draft.check_template(f"{draft.base}.argv[{i}]", arg, frozenset())
    if not argv[0].startswith("/") or template_fields(argv[0]):
        raise draft.fail(
            ".argv[0]",
            f"must be the program's full path, like /usr/local/bin/hello, not {argv[0]!r} "
            "(no shell or PATH lookup is used)",
        )
    options["argv"] = tuple(argv)


def _check_timer_options(draft: CommandDraft, options: dict[str, Any]) -> None:
    slots = draft.slots
    for i, tree in enumerate(draft.trees):
        length = [n for n in required_slots(tree)
                  if slots[n].kind == "duration" or (n in TIMER_UNIT_SLOTS and slots[n].kind == "int")]
        if len(length) > 1 and any(slots[n].kind == "duration" for n in length):
            raise draft.fail(f".phrases[{i}]", "has a duration slot and another length slot: keep one")
        if not length and "seconds" not in options:
            raise draft.fail(
                f".phrases[{i}]",
                "gives the timer no length: use a {minutes}, {seconds} or {hours} range slot or a duration slot "
                "in every phrase, or set seconds = 300 for a fixed length",
            )
    for n, slot in slots.items():
        if n in TIMER_UNIT_SLOTS and slot.kind == "int" and slot.lo == 0:
            raise draft.fail(f".slots.{n}", "starts at 0, and a timer of zero makes no sense: start the range at 1")


_VOLUME_OPTIONS = FrozenMap(step=Option((int,), check=_range(1, 50)))

for _spec in (
    ActionSpec("time", ActionRunner._do_time, reply_fields=frozenset({"time"}), default_reply="It's {time}."),
    ActionSpec("timer", ActionRunner._do_timer, FrozenMap(seconds=Option((int,), check=_range(1, 24 * 3600))),
               check=_check_timer_options, reply_fields=frozenset({"duration"}),
               default_reply="Timer set for {duration}."),
    ActionSpec("timer_cancel", ActionRunner._do_timer_cancel, reply_fields=frozenset({"count"}), default_reply="Timer cancelled."),
    ActionSpec("volume_up", ActionRunner._do_volume_up, _VOLUME_OPTIONS, reply_fields=frozenset({"volume"})),
    ActionSpec("volume_down", ActionRunner._do_volume_down, _VOLUME_OPTIONS, reply_fields=frozenset({"volume"})),
    ActionSpec("stop", ActionRunner._do_stop, immediate=True),
    ActionSpec("mute", ActionRunner._do_mute, reply_fields=frozenset({"control"}), default_reply=MUTE_REPLY,
               immediate=True),
    # Immediate: the sentence is handed to the uplink's non-blocking queue on the audio thread, which owns the
    # socket; it must not wait behind a slow `run` program (Home Assistant's answer is the reply).
    ActionSpec("home_assistant", ActionRunner._do_home_assistant, immediate=True),
    ActionSpec("gpio", ActionRunner._do_gpio, FrozenMap(
        pin=Option((int,), required=True, check=_bcm),
        set=Option((str,), required=True, check=_set_choice),
        pulse_s=Option((float, int), check=_range(0.01, 60)),
        active_high=Option((bool,), default=True),
    ), check=_check_gpio_options, reply_fields=frozenset({"state"}), default_reply="Okay."),
    ActionSpec("run", ActionRunner._do_run, FrozenMap(
        argv=Option((list,), required=True),
        pass_transcript=Option((bool,), default=False),
        timeout_s=Option((float, int), check=_range(0.1, 600)),
    ), check=_check_run_options, reply_fields=frozenset({"output"}), default_reply="Okay."),
):
    register_action(_spec)


def timer_seconds(match: Any) -> float | None:
    """The timer's length: its duration slot (seconds), else its hours/minutes/seconds int slots,
    else `options.seconds`; None when nothing says how long."""
    command, slots = match.command, match.slots
    specs = _slot_specs(command)
    total, found = 0, False
    for name, value in slots.items():
        kind = _spec_attr(specs.get(name), "kind") if name in specs else None
        if kind == "duration" or (kind == "int" and name in TIMER_UNIT_SLOTS):
            check_slot(command, name, value)
            total += value * (1 if kind == "duration" else TIMER_UNIT_SLOTS[name])
            found = True
    if found:
        return total
    fixed = command.options.get("seconds")
    if isinstance(fixed, (int, float)) and not isinstance(fixed, bool):
        return float(fixed)
    return None


def _kill_group(proc: subprocess.Popen) -> str:
    """Kill the program and everything in its process group, reap it, and say how that went. Its
    pipes are read to their end by the _PipeReader threads, which end when the last writer is gone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        # A program that became another user (sudo, a setuid helper) cannot be signalled by us; it
        # is left to finish on its own, and reaped by Popen's bookkeeping when it does.
        return "cannot kill it: it runs as another user (sudo?); give the command a program that ends by itself"
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return "killed, but it has not ended yet"
    return "killed"


class _PipeReader:
    """Reads a child's output pipe to its end on a daemon thread, keeping at most MAX_CAPTURE_BYTES:
    the first ones (`keep="head"`) or the last ones (`keep="tail"`)."""

    def __init__(self, pipe, keep: str) -> None:
        self._pipe = pipe
        self._keep = keep
        self._data = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="tallylight-run-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := self._pipe.read1(65536):
                with self._lock:
                    if self._keep == "head":
                        self._data += chunk[: max(0, MAX_CAPTURE_BYTES - len(self._data))]
                    else:
                        self._data += chunk
                        del self._data[:-MAX_CAPTURE_BYTES]
        except (OSError, ValueError):
            pass  # the pipe was closed under us
        finally:
            self._pipe.close()

    def result(self, until: float) -> bytes:
        """What was kept, after waiting until time.monotonic() `until` at most for the end of the output."""
        self._thread.join(max(0.0, until - time.monotonic()))
        with self._lock:
            return bytes(self._data)
