"""Table 3: wake latency after the end of "okay nabu", tallylight's pipeline beside the raw engine."""

from __future__ import annotations

from bench.common import Ctx, Table, pct, register
from bench.inputs import FRAME_10MS, VOICES, base_config, wav_pcm
from tallylight.pcm import BYTES_PER_SECOND
from testkit import speech
from testkit.speech import speech_end_s


def raw_wake_time(pcm: bytes) -> float | None:
    """Seconds into `pcm` at which the raw engine (pymicro-wakeword's own decision) first fires,
    fed 10 ms at a time so the time is known to 10 ms."""
    from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

    mww = MicroWakeWord.from_builtin(Model.OKAY_NABU)
    features = MicroWakeWordFeatures()
    step = FRAME_10MS * 2
    try:
        for i in range(0, len(pcm), step):
            for f in features.process_streaming(pcm[i:i + step]):
                if mww.process_streaming(f):
                    return (i + step) / BYTES_PER_SECOND
        return None
    finally:
        mww.close()


@register(3, "wake", "Wake latency after the end of the wake word")
def table_wake(ctx: Ctx) -> Table:
    from tallylight.events import WakeDetected
    from tallylight.listen import listen_file

    voices = VOICES[:3] if ctx.quick else VOICES
    speeds = (160,) if ctx.quick else (140, 180)
    cfg = base_config(ctx.tmp / "state-wake")
    lat: dict[str, list[float]] = {"ours": [], "raw": []}
    missed: dict[str, list[str]] = {"ours": [], "raw": []}
    for voice in voices:
        for speed in speeds:
            path = speech.synth("okay nabu", voice=voice, speed=speed, lead_s=0.5, tail_s=1.5)
            pcm = wav_pcm(path)
            end = speech_end_s(pcm)
            wakes = [ev for ev in listen_file(cfg, path) if isinstance(ev, WakeDetected)]
            raw = raw_wake_time(pcm)
            for who, at in (("ours", wakes[0].t if wakes else None), ("raw", raw)):
                if at is None:
                    missed[who].append(f"{voice}@{speed}")
                else:
                    lat[who].append((at - end) * 1000)
    t = Table(3, "Wake latency after the end of the wake word (issue 2)", "none set in issue 2 (reported only)",
              ["detector", "clips", "heard", "p50 ms", "p95 ms", "min ms", "max ms"])
    n = len(voices) * len(speeds)
    for who, label in (("ours", "tallylight pipeline (listen_file), 20 ms blocks"),
                       ("raw", "raw microWakeWord (its own decision), 10 ms steps")):
        xs = lat[who]
        t.rows.append([label, n, len(xs), *( [pct(xs, 50), pct(xs, 95), min(xs), max(xs)] if xs else ["-"] * 4)])
    t.notes.append(f"'okay nabu' by espeak-ng, {len(voices)} voices x {', '.join(map(str, speeds))} wpm, clean; "
                   "speech end = the last 10 ms frame above -34 dB of the clip's loudest; detection time = the end of "
                   "the block in which the wake was reported")
    for who, label in (("ours", "tallylight"), ("raw", "raw engine")):
        if missed[who]:
            t.notes.append(f"not heard by {label}: {', '.join(missed[who])}")
    return t
