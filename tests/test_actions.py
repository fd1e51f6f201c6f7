"""Actions, for real: GPIO through gpiozero's MockFactory, programs as real child processes, the
volume through real amixer (a PulseAudio server's mixer, and the errors of a machine without one)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gpiozero import LED
from gpiozero.pins.mock import MockFactory
from test_reply import pulse  # noqa: F401  (the PulseAudio null-sink fixture)

from tallylight.actions import MUTE_REPLY, SORRY, ActionResult, ActionRunner, Mixer, MixerError, spoken_duration
from tallylight.config import ActionsConfig
from tallylight.timers import Timers

# -- test data: commands as the config parser gives them -----------------------------------------


@dataclass(frozen=True)
class Slot:
    name: str
    kind: str
    lo: int | None = None
    hi: int | None = None
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    name: str
    action: str
    options: Mapping[str, Any] = field(default_factory=dict)
    reply: str | None = None
    slots: Mapping[str, Slot] = field(default_factory=dict)
    phrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    command: Command
    slots: Mapping[str, int | str] = field(default_factory=dict)
    text: str = ""


MINUTES = Slot("minutes", "int", 1, 99)
ROOM = Slot("room", "enum", values={"kitchen": "kitchen", "living room": "living room", "hall": "hallway-2"})


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.close()


@pytest.fixture
def runner(factory):
    r = ActionRunner(ActionsConfig(), pin_factory=factory, timers=Timers(clock=Clock(100.0)), clock=Clock(0.0))
    yield r
    r.close()


@pytest.fixture
def utc():
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


# -- built-ins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "epoch, said",
    [
        (1700000000, "It's 10:13 PM."),  # 2023-11-14 22:13:20 UTC
        (1700000000 - 12 * 3600, "It's 10:13 AM."),
        (1699920000 + 5 * 60, "It's 12:05 AM."),  # just after midnight
        (1699920000 + 12 * 3600, "It's 12:00 PM."),  # noon
    ],
)
def test_time(utc, epoch, said):
    r = ActionRunner(ActionsConfig(), clock=Clock(epoch))
    result = r.perform(Match(Command("time", "time")))
    assert result == ActionResult(True, said, said[5:-1])


def test_time_with_own_template(utc):
    r = ActionRunner(ActionsConfig(), clock=Clock(1700000000))
    result = r.perform(Match(Command("time", "time", reply="The time is {time}, on {date}.")))
    assert result.reply == "The time is 10:13 PM, on Tuesday, November 14."


def test_timer_starts_replies_and_fires_on_tick(runner):
    cmd = Command("timer", "timer", slots={"minutes": MINUTES})
    result = runner.perform(Match(cmd, {"minutes": 5}, "set a timer for five minutes"))
    assert result.ok and result.reply == "Timer set for 5 minutes."
    (timer,) = runner.timers.active()
    assert timer.seconds == 300 and timer.label == "5 minutes timer"
    assert runner.timers.tick(399.0) == []
    assert runner.timers.tick(400.0) == [timer]
    one = runner.perform(Match(cmd, {"minutes": 1}))
    assert one.reply == "Timer set for 1 minute."


def test_timer_reply_template_and_duration_slot(runner):
    cmd = Command("nap", "timer", slots={"length": Slot("length", "duration")}, reply="Okay, {duration} nap.")
    result = runner.perform(Match(cmd, {"length": 5400}))
    assert result.reply == "Okay, 1 hour 30 minutes nap."
    assert runner.timers.active()[0].seconds == 5400
    fixed = runner.perform(Match(Command("tea", "timer", options={"seconds": 240})))
    assert fixed.reply == "Timer set for 4 minutes."


@pytest.mark.parametrize("bad", [0, 100, "5", 2.5, True])
def test_timer_refuses_a_value_the_grammar_cannot_give(runner, bad):
    result = runner.perform(Match(Command("timer", "timer", slots={"minutes": MINUTES}), {"minutes": bad}))
    assert not result.ok and result.reply == SORRY
    assert "minutes" in result.detail
    assert runner.timers.active() == []


def test_timer_cancel(runner):
    cancel = Match(Command("timer_cancel", "timer_cancel"))
    assert runner.perform(cancel) == ActionResult(False, "There is no timer.", "no timer running")
    runner.timers.start(60, "a")
    runner.timers.start(120, "b")
    result = runner.perform(cancel)
    assert result.ok and result.reply == "Timer cancelled."
    assert [t.label for t in runner.timers.active()] == ["a"]  # the latest went


def test_stop_and_mute_only_tell_the_daemon(runner):
    stop = runner.perform(Match(Command("stop", "stop")))
    assert stop.ok and stop.stop and not stop.mute and stop.reply is None
    mute = runner.perform(Match(Command("mute", "mute")))
    assert mute.ok and mute.mute and not mute.stop and mute.reply == MUTE_REPLY.format(control="the mute control")


@pytest.mark.parametrize("mute, says", [
    ({"control": "switch"}, "the mute switch"),
    ({"control": "button"}, "the mute button"),
    ({"control": "key", "key": "space"}, "the space bar"),
    ({"control": "key", "key": "m"}, "the m key"),
])
def test_the_mute_reply_names_the_control_that_opens_the_mic_again(mute, says):
    """The default "stop listening" reply said "Use the mute switch" on a laptop, where the space bar
    is the control, and on a ReSpeaker HAT, where it is a button."""
    from tallylight import config as C
    from tallylight.hardware.mute import spoken_name
    from tallylight.speech.commands import default_commands
    from tallylight.speech.grammar import Grammar

    cfg = C.from_dict({"gpio": {"pin_factory": "mock"}, "mute": mute})
    runner = ActionRunner(cfg.actions, mute_control=spoken_name(cfg.mute))
    try:
        result = runner.perform(Grammar(default_commands()).match("stop listening"))
    finally:
        runner.close()
    assert result.mute and result.reply == f"Okay, I've stopped listening. Use {says} to turn me back on."


def test_unknown_action_is_refused(runner):
    result = runner.perform(Match(Command("x", "launch_rockets")))
    assert not result.ok and "launch_rockets" in result.detail


def test_spoken_duration():
    assert spoken_duration(60) == "1 minute"
    assert spoken_duration(3725) == "1 hour 2 minutes 5 seconds"
    assert spoken_duration(7200) == "2 hours"


# -- volume -------------------------------------------------------------------------------------


def test_mixer_argv():
    assert Mixer("PCM").argv("sset", "PCM", "10%+") == ["amixer", "-M", "sset", "PCM", "10%+"]
    assert Mixer("PCM", device="hw:1").argv("sget", "PCM") == ["amixer", "-D", "hw:1", "-M", "sget", "PCM"]


def test_volume_without_a_sound_card_says_so(runner):
    # This machine has no sound card: real amixer fails to attach a mixer.
    plain = {k: v for k, v in os.environ.items() if k != "ALSA_CONFIG_PATH"}
    runner.mixer = Mixer("Master", env=plain)
    result = runner.perform(Match(Command("volume_up", "volume_up")))
    assert not result.ok
    assert result.reply == "I can't change the volume: no mixer on the default sound card."
    assert "actions.mixer_device" in result.detail and "aplay -l" in result.detail


def test_amixer_missing():
    with pytest.raises(MixerError, match="apt-get install alsa-utils"):
        Mixer(amixer="/nonexistent/amixer").change(10)


@pytest.fixture
def pulse_mixer_env(pulse, tmp_path):  # noqa: F811
    """amixer's default mixer is a PulseAudio server's (ALSA's pulse ctl plugin): a real mixer."""
    conf = tmp_path / "ctl.conf"
    conf.write_text("ctl.!default { type pulse }\n")
    env = {**os.environ, **pulse, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}
    subprocess.run(["pactl", "set-sink-volume", "virt", "50%"], env=env, check=True)
    return env


def _sink_percent(env) -> int:
    out = subprocess.run(["pactl", "get-sink-volume", "virt"], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split("/")[1].strip().rstrip("%"))


def test_volume_up_and_down_through_a_real_mixer(runner, pulse_mixer_env):
    runner.mixer = Mixer("Master", env=pulse_mixer_env)
    before = _sink_percent(pulse_mixer_env)
    up = runner.perform(Match(Command("volume_up", "volume_up", reply="Volume {volume} percent.")))
    assert up.ok, up.detail
    after_up = _sink_percent(pulse_mixer_env)
    assert after_up > before
    assert up.reply == f"Volume {runner.mixer.get()} percent."
    down = runner.perform(Match(Command("volume_down", "volume_down", options={"step": 20})))
    assert down.ok and down.reply is None  # no default reply: the change itself is heard
    assert _sink_percent(pulse_mixer_env) < after_up


def test_volume_with_a_control_that_does_not_exist(runner, pulse_mixer_env):
    runner.mixer = Mixer("Speaker", env=pulse_mixer_env)
    result = runner.perform(Match(Command("volume_down", "volume_down")))
    assert not result.ok
    assert result.reply == "I can't change the volume: no mixer control 'Speaker'."
    assert result.detail == "no mixer control 'Speaker' (set actions.mixer_control; `amixer scontrols` lists them)"


# -- GPIO ---------------------------------------------------------------------------------------


def _states(factory, pin) -> list[bool]:
    return [s.state for s in factory.pin(pin).states]


def test_gpio_on_off_toggle_and_one_device_per_pin(runner, factory):
    def do(mode, **opts):
        return runner.perform(Match(Command(f"light_{mode}", "gpio", options={"pin": 22, "set": mode, **opts})))

    assert do("on") == ActionResult(True, "Okay.", "GPIO22 on")
    assert factory.pin(22).state is True
    assert do("off").detail == "GPIO22 off"
    assert do("toggle").detail == "GPIO22 on"
    assert do("toggle").detail == "GPIO22 off"
    assert _states(factory, 22) == [False, True, False, True, False]


def test_gpio_pulse_returns_at_once_and_turns_off_again(runner, factory):
    cmd = Command("door", "gpio", options={"pin": 23, "set": "pulse", "pulse_s": 0.2}, reply="Door buzzer {state}.")
    result = runner.perform(Match(cmd))
    assert result.reply == "Door buzzer pulsed."
    deadline = time.monotonic() + 10
    while _states(factory, 23) != [False, True, False]:
        assert time.monotonic() < deadline, _states(factory, 23)
        time.sleep(0.02)
    # MockPin stamps each state with the time since the change before it: the pulse's own length.
    # gpiozero's blink thread waits on an Event for on_time, which never returns early.
    assert factory.pin(23).states[2].timestamp >= 0.2 - 1e-3


def test_gpio_active_low_relay(runner, factory):
    runner.perform(Match(Command("relay", "gpio", options={"pin": 24, "set": "on", "active_high": False})))
    assert factory.pin(24).state is False  # an active-low relay board is on when the pin is low


def test_gpio_pin_in_use_is_a_clear_failure(runner, factory):
    led = LED(27, pin_factory=factory)  # the capture light, say
    try:
        result = runner.perform(Match(Command("light_on", "gpio", options={"pin": 27, "set": "on"})))
    finally:
        led.close()
    assert not result.ok and "GPIO27" in result.detail and "pick a free pin" in result.detail


def test_gpio_bad_options(runner):
    r1 = runner.perform(Match(Command("x", "gpio", options={"pin": 40, "set": "on"})))
    r2 = runner.perform(Match(Command("x", "gpio", options={"pin": 5, "set": "blink"})))
    assert not r1.ok and "0-27" in r1.detail
    assert not r2.ok and "on, off, toggle or pulse" in r2.detail


def test_close_turns_outputs_off_and_frees_pins(factory):
    runner = ActionRunner(ActionsConfig(), pin_factory=factory)
    runner.perform(Match(Command("light_on", "gpio", options={"pin": 22, "set": "on"})))
    assert factory.pin(22).state is True
    runner.close()
    runner.close()
    LED(22, pin_factory=factory).close()  # the pin is free again
    assert not runner.perform(Match(Command("time", "time"))).ok


# -- running programs ---------------------------------------------------------------------------

# A program that writes what it was given (argv, environment, stdin, process group) to a file.
REPORTER = """\
import json, os, sys
report = {
    "argv": sys.argv[2:],
    "transcript": os.environ.get("TALLYLIGHT_TRANSCRIPT"),
    "command": os.environ.get("TALLYLIGHT_COMMAND"),
    "stdin": sys.stdin.read(),
    "own_group": os.getpgid(0) == os.getpid(),
}
with open(sys.argv[1], "w") as f:
    json.dump(report, f)
print("reported")
"""


@pytest.fixture
def reporter(tmp_path) -> tuple[str, Path]:
    """(program path, the report file it writes)."""
    prog = tmp_path / "reporter"
    prog.write_text(f"#!{sys.executable}\n{REPORTER}")
    prog.chmod(0o755)
    return str(prog), tmp_path / "report.json"


def run_cmd(argv, reply=None, slots=None, **opts) -> Command:
    return Command("prog", "run", options={"argv": argv, **opts}, reply=reply, slots=slots or {})


def test_run_fills_slots_per_element_and_passes_nothing_else(runner, reporter):
    prog, out = reporter
    cmd = run_cmd(
        [prog, str(out), "{room}", "--minutes={minutes}", "$(touch {room}); *"],
        slots={"room": ROOM, "minutes": MINUTES},
    )
    result = runner.perform(Match(cmd, {"room": "living room", "minutes": 7}, "okay nabu set the living room"))
    assert result.ok, result.detail
    report = json.loads(out.read_text())
    # One element per element (the space in "living room" splits nothing), no shell (the "$(...)"
    # and "*" are passed as they are), no stdin, no transcript, its own process group.
    assert report == {
        "argv": ["living room", "--minutes=7", "$(touch living room); *"],
        "transcript": None,
        "command": "prog",
        "stdin": "",
        "own_group": True,
    }
    assert result.reply == "Okay."


def test_run_passes_the_transcript_only_when_asked_and_only_in_the_environment(runner, reporter):
    prog, out = reporter
    cmd = run_cmd([prog, str(out)], pass_transcript=True)
    assert runner.perform(Match(cmd, {}, "what is the weather")).ok
    report = json.loads(out.read_text())
    assert report["transcript"] == "what is the weather"
    assert report["argv"] == []


def test_run_transcript_from_our_own_environment_does_not_leak(reporter):
    # A TALLYLIGHT_TRANSCRIPT in the daemon's environment must not reach a program that did not ask.
    r = ActionRunner(ActionsConfig(), env={**os.environ, "TALLYLIGHT_TRANSCRIPT": "stale secret"})
    prog, out = reporter
    assert r.perform(Match(run_cmd([prog, str(out)]), {}, "new words")).ok
    assert json.loads(out.read_text())["transcript"] is None


def test_run_output_as_reply(runner):
    cmd = run_cmd(["/bin/echo", "It is {minutes} degrees\nsecond line"], reply="{output}", slots={"minutes": MINUTES})
    result = runner.perform(Match(cmd, {"minutes": 21}))
    assert result == ActionResult(True, "It is 21 degrees", "'/bin/echo' ok")


@pytest.mark.parametrize(
    "slots, why",
    [
        ({"room": "bathroom"}, "not one of its values"),
        ({"room": "kitchen; rm -rf ~"}, "not one of its values"),
        ({"room": 5}, "not one of its values"),
        ({"room": "hall"}, "not one of its values"),  # the word heard, not the value it maps to
        ({"room": "kitchen", "minutes": "5"}, "whole number"),
        ({"room": "kitchen", "minutes": 0}, "outside 1-99"),
        ({"room": "kitchen", "minutes": True}, "whole number"),
    ],
)
def test_run_refuses_slot_values_outside_the_grammar_and_never_starts(runner, reporter, slots, why):
    prog, out = reporter
    argv = [prog, str(out), "{room}", "{minutes}" if "minutes" in slots else "x"]
    result = runner.perform(Match(run_cmd(argv, slots={"room": ROOM, "minutes": MINUTES}), slots))
    assert not result.ok and why in result.detail
    assert not out.exists()


def test_run_enum_value_given_to_the_action_is_accepted(runner):
    cmd = run_cmd(["/bin/echo", "{room}"], reply="{output}", slots={"room": ROOM})
    assert runner.perform(Match(cmd, {"room": "hallway-2"})).reply == "hallway-2"


def test_run_refuses_undeclared_or_unheard_slots_and_a_chosen_program(runner):
    undeclared = runner.perform(Match(run_cmd(["/bin/echo", "{who}"]), {"who": "me"}))
    unheard = runner.perform(Match(run_cmd(["/bin/echo", "{room}"], slots={"room": ROOM}), {}))
    chosen = runner.perform(Match(run_cmd(["/usr/bin/{room}"], slots={"room": ROOM}), {"room": "kitchen"}))
    assert "no slot {who}" in undeclared.detail
    assert "was not heard" in unheard.detail
    assert "argv[0]" in chosen.detail
    assert not (undeclared.ok or unheard.ok or chosen.ok)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped
    except FileNotFoundError:
        return False


def test_run_timeout_kills_the_whole_process_group(tmp_path):
    r = ActionRunner(dataclasses.replace(ActionsConfig(), run_timeout_s=0.5))
    pidfile = tmp_path / "child.pid"
    # The program starts a child of its own and both hang.
    prog = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen(['sleep', '60']); open(sys.argv[1], 'w').write(str(c.pid)); time.sleep(60)"
    )
    start = time.monotonic()
    result = r.perform(Match(run_cmd([sys.executable, "-c", prog, str(pidfile)])))
    assert time.monotonic() - start < 30
    assert not result.ok and result.reply == "Sorry, that took too long."
    assert "killed" in result.detail
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the program's child survived the timeout"
        time.sleep(0.05)


def test_run_timeout_of_a_program_we_may_not_kill_is_one_line(runner, monkeypatch, caplog):
    """A program run through sudo belongs to root: killpg fails with EPERM. The command fails in one
    line that says why, with no traceback in the log, and the speaker goes on."""
    import signal as signal_module

    real_killpg = os.killpg
    refused = []

    def killpg_as_another_user(pgid, sig):  # what the kernel answers for a process we do not own
        refused.append(pgid)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "killpg", killpg_as_another_user)
    proc_pid = []
    try:
        with caplog.at_level("INFO"):
            result = runner.perform(Match(run_cmd(["/bin/sh", "-c", "echo $$; exec sleep 30"], timeout_s=0.3)))
        assert not result.ok and result.reply == "Sorry, that took too long."
        assert "cannot kill it" in result.detail and "\n" not in result.detail
        assert refused, "the program was never signalled"
        proc_pid = refused
        assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    finally:
        monkeypatch.setattr(os, "killpg", real_killpg)
        for pgid in proc_pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal_module.SIGKILL)


def test_run_chatty_program_is_read_to_its_end_but_only_its_start_and_end_kept(runner):
    """`yes`-like output must not fill the daemon's memory (about 50 MB here, a fraction of a Pi's RAM
    at the default 10 s timeout), nor block the program on a full pipe."""
    import tracemalloc

    prog = ("import sys; print('first line'); [sys.stdout.write('y' * 65535 + '\\n') for _ in range(800)]; "
            "[sys.stderr.write('noise\\n') for _ in range(100000)]; print('disk full', file=sys.stderr); sys.exit(3)")
    tracemalloc.start()
    try:
        failed = runner.perform(Match(run_cmd([sys.executable, "-c", prog], reply="{output}")))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not failed.ok and failed.detail.endswith("disk full")  # the end of stderr is kept
    assert peak < 5_000_000, f"{peak / 1e6:.0f} MB of the program's output held in memory"
    ok = runner.perform(Match(run_cmd([sys.executable, "-c", prog.replace("sys.exit(3)", "0")], reply="{output}")))
    assert ok.ok and ok.reply == "first line"  # the start of stdout is kept


def test_run_program_that_leaves_a_child_running_is_done_when_it_exits(runner):
    """A command that starts a player in the background and exits 0 succeeded: the child holds the
    output pipe open, but the wait is for the program, and the child is left running."""
    start = time.monotonic()
    result = runner.perform(Match(run_cmd(["/bin/sh", "-c", "sleep 30 & echo $!"], reply="{output}")))
    took = time.monotonic() - start
    assert result.ok, result.detail
    child = int(result.reply)
    try:
        assert took < 5, f"waited {took:.1f} s for the background child's output"
        assert _alive(child), "a program's background child was killed although the program succeeded"
    finally:
        os.kill(child, 9)


def test_run_per_command_timeout_wins(runner):
    result = runner.perform(Match(run_cmd(["/bin/sleep", "30"], timeout_s=0.3)))
    assert not result.ok and "0.3 s" in result.detail


def test_run_failure_gives_one_line(runner):
    prog = "import sys; print('first', file=sys.stderr); print('disk full', file=sys.stderr); sys.exit(3)"
    result = runner.perform(Match(run_cmd([sys.executable, "-c", prog])))
    assert not result.ok and result.reply == SORRY
    assert "exit status 3" in result.detail and result.detail.endswith("disk full")
    assert "\n" not in result.detail


def test_run_missing_or_not_executable_program(runner, tmp_path):
    missing = runner.perform(Match(run_cmd(["/nonexistent/bin/lights"])))
    assert not missing.ok and "program not found: '/nonexistent/bin/lights'" in missing.detail
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    noexec = runner.perform(Match(run_cmd([str(script)])))
    assert not noexec.ok and "not executable" in noexec.detail and str(script) in noexec.detail


def test_run_bad_argv_option(runner):
    for argv in ([], "/bin/echo hi", ["/bin/echo", 5]):
        result = runner.perform(Match(run_cmd(argv)))
        assert not result.ok and "non-empty list of strings" in result.detail
