"""`tallylight check`: is everything this config needs here and working? Says what to fix."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from typing import TextIO

from tallylight.choices import HomeAssistantMode, MuteControlKind, PinFactoryName
from tallylight.config import Config
from tallylight.errors import TallylightError


class _Report:
    def __init__(self, out: TextIO):
        self.out = out
        self.problems = 0

    def ok(self, what: str, detail: str) -> None:
        self.out.write(f"  ok       {what}: {detail}\n")

    def note(self, what: str, detail: str) -> None:
        """Not wrong, but the owner may want it (counts as no problem)."""
        self.out.write(f"  note     {what}: {detail}\n")

    def problem(self, what: str, detail: str) -> None:
        self.problems += 1
        self.out.write(f"  PROBLEM  {what}: {detail}\n")

    def attempt(self, what: str, fn: Callable[[], str]) -> None:
        try:
            self.ok(what, fn())
        except TallylightError as e:
            self.problem(what, str(e))
        except Exception as e:  # a check must report, not crash
            self.problem(what, f"{type(e).__name__}: {e}")


def run_checks(cfg: Config, out: TextIO) -> int:
    r = _Report(out)
    out.write(f"tallylight check: {cfg.path}\n")
    r.ok("config", "valid" + (f", hardware profile {cfg.hardware.profile!r}" if cfg.hardware.profile else ""))
    for key, written, full in cfg.relative_paths:
        r.ok("config", f"{key} = {written!r} is relative to the config file's folder: {full}")
    r.attempt("audio input", lambda: _check_audio(cfg, out))
    r.attempt("GPIO", lambda: _check_gpio(cfg))
    from tallylight.hardware.pitfalls import check_hardware

    for problem in check_hardware(cfg, profile=cfg.hardware.profile or None):
        r.problem("hardware", problem)
    r.attempt("wake word", lambda: _check_wake(cfg))
    for note in unread_options(cfg):
        r.note("config", note)
    r.attempt("voice activity", lambda: _check_vad(cfg))
    r.attempt("recognizer", lambda: _check_recognizer(cfg))
    _note_replaced_commands(cfg, r)
    _check_vosk(cfg, r)
    r.attempt("state directory", lambda: _check_state_dir(cfg))
    r.attempt("Home Assistant", lambda: _check_home_assistant(cfg))
    if cfg.reply.enabled or cfg.reply.sounds:
        for tool, pkg in (("espeak-ng", "espeak-ng"), ("aplay", "alsa-utils")):
            if shutil.which(tool):
                r.ok("replies", f"{tool} found")
            else:
                r.problem("replies", f"{tool} not found: sudo apt-get install {pkg} (or set reply.enabled = false)")
        if cfg.reply.enabled and shutil.which("espeak-ng"):
            r.attempt("reply voice", lambda: _check_voice(cfg))
        if shutil.which("aplay"):
            r.attempt("reply output", lambda: _check_output(cfg))
    if cfg.debug.record_dir:
        r.problem("debug", f"debug.record_dir is set: every capture is written to {cfg.debug.record_dir} "
                           "(set it to \"\" unless you are debugging)")
    out.write("everything looks right\n" if not r.problems else f"{r.problems} problem(s) found\n")
    return 0 if not r.problems else 1


def _check_audio(cfg: Config, out: TextIO) -> str:
    from tallylight.audio.device import devices_report, open_pyaudio, plan_capture

    with open_pyaudio() as pa:
        out.write("\n".join("           " + line for line in devices_report(pa).splitlines()) + "\n")
        plan = plan_capture(pa, cfg.audio)  # what `tallylight run` opens, worked out the same way
    return f"will capture from {plan.describe()}"


def _check_gpio(cfg: Config) -> str:
    """The pins, the mute control as `run` will have it, the state `run` starts in, and the light."""
    from tallylight.hardware.indicator import make_indicator
    from tallylight.hardware.mute import MuteControl
    from tallylight.hardware.pins import make_pin_factory
    from tallylight.restart import physical_control

    factory = make_pin_factory(cfg.gpio.pin_factory)
    physical = physical_control(cfg, None)
    if cfg.mute.control == MuteControlKind.KEY:
        control = f"simulated pins; mute control: the {cfg.mute.key} key on the terminal `run` is started from"
    elif not physical:
        control = "simulated pins: no mute control to press (mute.control = \"key\" makes a key one)"
    else:
        mute = MuteControl(cfg.mute, pin_factory=factory)
        try:
            if cfg.mute.control == MuteControlKind.SWITCH:
                mute.poll()
                control = f"mute switch on GPIO{cfg.mute.pin} is at {'mute' if mute.muted else 'listening'}"
            else:  # a button's line says only whether it is held down now; `at start` says the state
                control = f"mute button on GPIO{cfg.mute.pin} {'is held down' if mute.line_active else 'is up'}"
        finally:
            mute.close()
    light = make_indicator(cfg.indicator, pin_factory=factory)
    try:
        what = light.describe()
    finally:
        light.close()
    return f"{control}; {_start_state(cfg, physical)}; light: {what}"


def _start_state(cfg: Config, physical: bool) -> str:
    """What `tallylight run` would start in now, by the same rule it uses (restart.start_state)."""
    from tallylight import ledger
    from tallylight.restart import VOICE_MUTE_FILE, start_state
    from tallylight.statedir import running_pid

    pid = running_pid(cfg.state_dir)
    if pid is not None:  # how it would start says nothing now: the ledger's last entry is its present
        return f"`tallylight run` is running now (pid {pid}): `tallylight ledger` shows its state"
    if physical and (cfg.state_dir / VOICE_MUTE_FILE).exists():
        return "run starts muted (\"stop listening\" is kept until the mute control opens the mic)"
    try:
        v = ledger.check(cfg.state_dir / "ledger.jsonl")
    except OSError:
        v = None  # the state directory's own line says why it cannot be read
    start = start_state(cfg.mute, v.last_entry if v else None, ledger_set_aside=not (v and v.ok), physical=physical)
    reason = start.reason.removeprefix("at start: ")
    return f"run starts {'muted' if start.muted else 'listening'} ({reason})"


def _check_home_assistant(cfg: Config) -> str:
    """What leaves the device, in the owner's words, and whether the uplink's user exists."""
    ha = cfg.home_assistant
    if not ha.enabled:
        return "off (home_assistant.enabled = false): no socket, nothing leaves the device"
    from tallylight.uplink_port import allowed_uid

    uid = allowed_uid(ha.uplink_user)  # raises with the fix when the user is missing
    sends = ("AUDIO mode: after the wake word, what you say streams to Home Assistant with the upload light on"
             if ha.mode == HomeAssistantMode.AUDIO else
             "text mode: only the words of a sentence that is not a local command go to Home Assistant, never audio")
    return f"{sends}; the uplink (uid {uid}) connects to {ha.socket}"


def _check_wake(cfg: Config) -> str:
    from tallylight.ears import make_wake_detector

    # make_wake_detector asks the engine's spec (wake_engines) what it needs, and says how to get it.
    det = make_wake_detector(cfg.wake, cfg.frontend)
    try:
        parts = det.describe()
        front = f"; before it: {', '.join(parts)}" if parts else "; no front end, no lowered view"
        return f"{cfg.wake.engine} '{det.word}' loaded (threshold {det.threshold:.2f}){front}"
    finally:
        det.close()


def unread_options(cfg: Config) -> list[str]:
    """Engine keys set away from their default that the chosen engine does not read (each spec's
    `options`, in wake_engines and speech.recognizers): likely meant for another engine."""
    import dataclasses

    from tallylight.speech.recognizers import MODES, RECOGNIZERS, pairing
    from tallylight.wake_engines import WAKE_ENGINES

    rec = cfg.recognizer.engine
    # The modes run the registered pair (vosk and pocketsphinx), so they read what those two read.
    lead, pair = pairing()
    rec_reads = [o for name in (lead, pair.partner) for o in RECOGNIZERS[name].options] if rec in MODES \
        else RECOGNIZERS[rec].options
    notes = []
    for section, specs, engine, reads in (("wake", WAKE_ENGINES, cfg.wake.engine, WAKE_ENGINES[cfg.wake.engine].options),
                                          ("recognizer", RECOGNIZERS, rec, rec_reads)):
        values = getattr(cfg, section)
        defaults = {f.name: f.default for f in dataclasses.fields(values)}
        for key in dict.fromkeys(o for spec in specs.values() for o in spec.options):
            if key not in reads and getattr(values, key) != defaults[key]:
                users = ", ".join(name for name, spec in specs.items() if key in spec.options)
                notes.append(f"{section}.{key} is set, but {section}.engine = {engine!r} does not read it "
                             f"(only {users} does)")
    return notes


def _check_vad(cfg: Config) -> str:
    from tallylight.vad import make_voice_detector

    vad = make_voice_detector(cfg.capture)
    vad.close()
    return f"{cfg.capture.vad} loaded"


def _check_recognizer(cfg: Config) -> str:
    from tallylight.speech.understand import commands_of, make_understander

    commands = commands_of(cfg)
    u = make_understander(cfg)
    try:
        # recognizer.engine = "both": a word either model lacks.
        unknown = set().union(*(part.recognizer.missing_words() for part in getattr(u, "parts", (u,))))
    finally:
        u.close()
    missing = unknown & u.grammar.vocabulary()
    if missing:
        raise TallylightError(
            f"{u.name} cannot recognize these command words: {', '.join(sorted(missing))} "
            "(change the phrases, or use a model that knows them)")
    # Not a problem, but worth knowing: the capture's pre-roll holds the wake phrase, and a word of it
    # the model lacks is heard as [unk] or as some other word before the command.
    wake_unknown = [w for w in u.wake_words if w in unknown]
    note = (f"; the model does not know the wake word{'s' if len(wake_unknown) > 1 else ''} "
            f"{', '.join(wake_unknown)}, so it hears something else at the start of each capture" if wake_unknown else "")
    return (f"{u.name} with {len(commands)} command{'s' if len(commands) != 1 else ''}, "
            f"all {len(u.grammar.vocabulary())} words known{note}")


def _note_replaced_commands(cfg: Config, r: _Report) -> None:
    """A config with one [commands.X] table of its own has only that command: the built-in ones are
    not merged in. Someone adding a command to config/laptop.toml lost "stop" and "stop listening"
    without a word."""
    from tallylight.speech.commands import default_commands

    if not cfg.commands:
        return
    left_out = [c.name for c in default_commands() if c.name not in cfg.commands]
    if left_out:
        r.note("commands", f"this config's [commands] tables replace the built-in commands, and these are not "
                           f"among them: {', '.join(left_out)} (to keep one, copy its table from the end of "
                           "config/tallylight.toml)")


def _check_vosk(cfg: Config, r: _Report) -> None:
    """Say when vosk is missing and what it would bring; a problem only when the config asks for it."""
    from tallylight.speech.models import VOSK_BRINGS, vosk_package_problem
    from tallylight.speech.recognizers import MODES, RecognizerMode, default_vosk_model

    engine = cfg.recognizer.engine
    if engine not in MODES and engine != "vosk":
        # One registered recognizer that is not vosk: the "recognizer" line says whether it runs here
        # (make_recognizer asks its spec what it needs, and says how to install it).
        return
    problem = vosk_package_problem()
    if problem is not None:
        fix = "pip install vosk into tallylight's venv (scripts/setup.sh does)"
        if engine == RecognizerMode.AUTO:
            r.note("vosk", f"the vosk package cannot be used ({problem}), so pocketsphinx alone recognizes "
                           f"commands; {VOSK_BRINGS}: {fix}")
        else:
            r.problem("vosk", f"recognizer.engine = {engine!r} needs the vosk package, which cannot be used "
                              f"({problem}): {fix}, or set recognizer.engine = \"pocketsphinx\"")
        return
    if engine == RecognizerMode.AUTO and not cfg.recognizer.vosk_model and default_vosk_model(cfg.state_dir) is None:
        r.note("vosk", f"no vosk model installed, so pocketsphinx alone recognizes commands; {VOSK_BRINGS}: "
                       "`tallylight models download small-en-us` (`tallylight models list` shows them)")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _check_voice(cfg: Config) -> str:
    voice = cfg.reply.voice
    try:
        done = subprocess.run(["espeak-ng", "-q", "-v", voice, "ok"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TallylightError(f"espeak-ng cannot be run: {e}") from None
    if done.returncode != 0:
        raise TallylightError(f"reply.voice = {voice!r}: {_last_line(done.stderr)} (`espeak-ng --voices` lists them)")
    return f"espeak-ng voice {voice!r}"


def _check_output(cfg: Config) -> str:
    """Play 10 ms of silence where replies go: the same `aplay` and device the speaker uses."""
    dev = cfg.reply.output_device
    argv = ["aplay", "-q", *(["-D", dev] if dev else []), "-t", "raw", "-f", "S16_LE", "-r", "22050", "-c", "1"]
    try:
        done = subprocess.run(argv, input=bytes(441), capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TallylightError(f"aplay cannot play on {dev or 'the default device'}: {e}") from None
    if done.returncode != 0:
        raise TallylightError(f"aplay cannot play on {dev or 'the default device'}: "
                              f"{_last_line(done.stderr.decode('utf-8', 'replace'))} "
                              "(set reply.output_device; `aplay -L` lists devices)")
    return f"plays on {dev or 'the default device'}"


def _check_state_dir(cfg: Config) -> str:
    from tallylight import ledger

    d = cfg.state_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise TallylightError(f"{d} is a file, not a folder (set daemon.state_dir to a folder)") from None
    except OSError as e:
        raise TallylightError(f"{d} cannot be created: {e.strerror} (set daemon.state_dir to a writable folder)") from None
    if not os.access(d, os.W_OK):
        raise TallylightError(f"{d} is not writable by this user (set daemon.state_dir, or fix its owner)")
    path = d / "ledger.jsonl"
    witness = ledger.witness_path(path)
    if not path.exists() and not witness.exists():
        return f"{d} (no ledger yet)"
    v = ledger.verify(path)
    if not v.ok:
        raise TallylightError(f"the ledger {path} failed verification: {v.problems[0]} (run `tallylight ledger --verify`)")
    if v.witness is None:
        raise TallylightError(f"the ledger {path} is intact but has no witness {witness}, so deleting it would go "
                              "unnoticed (`tallylight run` writes one at each start: let its user write "
                              f"{witness.parent})")
    from tallylight.restart import VOICE_MUTE_FILE

    voice_muted = (d / VOICE_MUTE_FILE).exists()
    if voice_muted and cfg.gpio.pin_factory == PinFactoryName.MOCK:
        held = "; a \"stop listening\" is kept, but simulated pins have no mute control: it ends at the next start"
    elif voice_muted:
        held = "; muted by \"stop listening\": press the mute button, or move the switch to mute and back"
    else:
        held = ""
    return f"{d}, ledger intact ({v.entries} entries){held}"
