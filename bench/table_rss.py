"""Table 4 (and 8): RSS while listening, with each recognizer: the daemon runs of bench.daemon_runs."""

from __future__ import annotations

import statistics

from bench.common import Ctx, Table, register, rss_breakdown, verdict
from bench.daemon_runs import A52_CONFIGS, NO_A52, measure_processes


@register(4, "rss", "RSS while listening", also=(8,))
def table_rss(ctx: Ctx) -> Table:
    t = Table(4, "RSS while listening, with each recognizer (issues 2 and 3)",
              "<= 60 MB with microWakeWord; <= 120 MB with pocketsphinx",
              ["process", "runs", "VmRSS MiB (median)", "VmRSS MiB (max)", "VmHWM MiB (peak, max)", "goal MiB", "result"])
    runs = measure_processes(ctx)
    if isinstance(runs, str):
        t.verdict = "SKIPPED"
        t.notes.append(runs)
        return t
    ok_all = True
    for name, rs in runs.items():
        good = [r for r in rs if r.rss_mb is not None]
        goal = None if name == NO_A52 else 60 if "only" in name else 120 if name == "tallylight run, pocketsphinx" else None
        if not good:
            t.rows.append([name, 0, "-", "-", "-", goal or "-", "ERROR"])
            t.notes.append(f"{name}: {rs[0].error if rs else 'not run'}")
            ok_all = False
            continue
        rss = statistics.median(r.rss_mb for r in good)
        rss_max = max(r.rss_mb for r in good)
        hwm = max(r.hwm_mb for r in good)
        res = "-" if goal is None else verdict(rss_max <= goal)
        ok_all &= goal is None or rss_max <= goal
        t.rows.append([name, len(good), rss, rss_max, hwm, goal or "(none)", res])
    t.verdict = verdict(ok_all)
    t.notes.append("each a real subprocess capturing from a PulseAudio null-sink mic through PyAudio, simulated pins; "
                   f"VmRSS and VmHWM (peak) from /proc/PID/status after READY=1 and {ctx.hold_s:g} s of listening; "
                   "judged on the largest VmRSS while listening (the issue's 'RSS while listening'), with the goals' MB "
                   "read as MiB (2^20 bytes). VmHWM is the peak since start: it includes the moment at start-up in which "
                   "PortAudio's device probe has every ALSA plugin loaded, before MicSource.open() lets ALSA unload the "
                   "ones no stream uses (audio/device.py release_alsa_probe_cache)")
    if NO_A52 in runs:
        t.notes.append(f"'{NO_A52.split(' (')[0]}': the same daemon, the only difference being that "
                       f"{' and '.join(A52_CONFIGS)} read as empty in its mount namespace, so PortAudio's probe does not "
                       "load ALSA's a52 (AC-3 playback) encoder and libavcodec behind it. libasound2-plugins, which brings "
                       "that config, is installed here for the tests' PulseAudio mic; scripts/install.sh does not install it")
    pa = ctx.pa_init
    if pa:
        t.notes.append(f"of which PortAudio's initialisation (pyaudio.PyAudio(), which MicSource.open() calls): "
                       f"+{pa['after'] - pa['before']:.1f} MiB ({pa['before']:.1f} -> {pa['after']:.1f} MiB in a process "
                       f"holding only the wake engine): PortAudio probes every PCM the ALSA configuration defines, "
                       "which loads these plugin modules and what they link to "
                       f"({', '.join(p.removeprefix('libasound_module_') for p in pa['plugins']) or 'none'}), "
                       f"{pa['libs']} shared libraries in all")
        shares = [(name.removeprefix("libasound_module_").removesuffix(".so"), mib, n) for name, (mib, n) in pa.get("shares", {}).items()]
        if shares:
            t.notes.append("what each ALSA plugin brought in (resident MiB of it and of the libraries it loaded that nothing "
                           "had loaded before): " + ", ".join(f"{name} {mib:.1f} ({n} files)" for name, mib, n in shares if mib >= 0.05))
    for name, rs in runs.items():
        good = [r for r in rs if r.mappings]
        if good:
            t.block += rss_breakdown(name, good[-1].mappings)
    return t
