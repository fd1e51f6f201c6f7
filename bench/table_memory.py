"""Table 9: memory over many commands: RSS of `listen`'s pipeline over ~200 captures, each recognizer in
a fresh child process (bench.children.listen_memory)."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.common import ROOT, Ctx, Table, register, run_child_json, verdict
from bench.inputs import COMMANDS, VOSK_EN_LABEL, english_vosk_model, silence_pcm, wav_pcm, write_wav
from tallylight.pcm import BYTES_PER_SECOND
from testkit import speech

# Ten default commands (config/tallylight.toml), each said once per round after "okay nabu".
MEMORY_COMMANDS = COMMANDS + (("set a timer for twenty five minutes", "timer"), ("stop the alarm", "stop"))


def memory_run(ctx: Ctx, wav: Path, engine: str, vosk_model: str = "") -> dict:
    """One child process: `engine` ("none": no recognizer) over `wav`; what bench.children.listen_memory prints."""
    return run_child_json("bench.children.listen_memory", str(ROOT / "config" / "tallylight.toml"), str(wav),
                          str(ctx.tmp / f"state-memory-{engine}"), engine, vosk_model)


@register(9, "memory", "Memory over many commands")
def table_memory(ctx: Ctx) -> Table:
    rounds = 2 if ctx.quick else 20
    warm, window = (10, 5) if ctx.quick else (20, 10)
    gap = silence_pcm(1.5)
    one_round = b"".join(wav_pcm(speech.synth(f"okay nabu, {text}", voice="en-us", speed=160, lead_s=0.5, tail_s=0.3)) + gap
                         for text, _ in MEMORY_COMMANDS)
    wav = write_wav(ctx.tmp / "many-commands.wav", one_round * rounds)
    said = len(MEMORY_COMMANDS) * rounds
    audio_min = len(one_round) * rounds / BYTES_PER_SECOND / 60
    runs = [("pocketsphinx", "pocketsphinx", "")]
    en, why = english_vosk_model(ctx)
    if ctx.quick:
        en, why = None, "skipped with --quick"
    if en is not None:
        runs += [(f"vosk ({VOSK_EN_LABEL})", "vosk", str(en)),
                 (f"both: vosk ({VOSK_EN_LABEL}) + pocketsphinx", "both", str(en))]
    runs.append(("none: a consumer that takes the audio and hears nothing", "none", ""))
    t = Table(9, "Memory over many commands: RSS of the listening pipeline as captures go by",
              f"growth after the first {warm} captures <= 2 MiB per 200 captures, with pocketsphinx",
              ["recognizer", "captures", "intents", f"RSS after {warm} captures MiB", "RSS at the end MiB", "growth MiB",
               "growth per 100 captures KiB", "of which listen's records, per 100 KiB", "result"])
    ok = False
    details = []
    for name, engine, model in runs:
        judged = engine == "pocketsphinx"  # the recognizer users get without a vosk model
        try:
            r = memory_run(ctx, wav, engine, model)
        except Exception as e:  # noqa: BLE001 - one recognizer's failure must not hide the other rows
            if judged:
                raise
            t.notes.append(f"{name}: not measured ({type(e).__name__}: {e})")
            continue
        rss = r["rss"]
        n = len(rss)
        if n < warm + window:
            t.rows.append([name, r["captures"], r["intents"], "-", "-", "-", "-", "-", "MISS" if judged else "-"])
            t.notes.append(f"{name}: only {n} captures, too few to tell growth from warm-up")
            continue
        before = statistics.median(rss[warm - window:warm]) / 1024
        end = statistics.median(rss[-window:]) / 1024
        per100 = (end - before) * 1024 / (n - warm) * 100
        records = r["records"] / 1024 / max(r["captures"], 1) * 100
        if judged:
            ok = per100 * 2 <= 2048
        result = "(not judged)" if not judged else "(too few)" if ctx.quick else verdict(per100 * 2 <= 2048)
        t.rows.append([name, r["captures"], r["intents"], before, end, end - before, per100, records, result])
        after = rss[warm:]
        details.append(f"{name}: {r['loaded'] / 1024:.1f} MiB before the audio (consumer made, listen_file not yet called), "
                       f"{rss[0] / 1024:.1f} after the first capture; after the first {warm} captures each reading "
                       f"lies within {min(after) / 1024:.1f}-{max(after) / 1024:.1f}; growth beyond listen's records "
                       f"{per100 - records:.0f} KiB per 100 captures; {r['cpu_s']:.0f} CPU s")
    t.verdict = "" if ctx.quick else verdict(ok)
    t.notes.append(f"one WAV of {said} \"okay nabu, <command>\" utterances ({len(MEMORY_COMMANDS)} default commands by "
                   f"espeak-ng en-us, 160 wpm, each followed by 1.5 s of silence, {rounds} rounds: {audio_min:.0f} min "
                   "of audio) through tallylight.listen.listen_file with the shipped config/tallylight.toml and "
                   "make_understander, as `tallylight listen` runs it, in a fresh child process per row (the bench's "
                   "own memory does not count); VmRSS (/proc/self/status) read each time the consumer's finish() "
                   "returns, i.e. as each capture is handed over")
    t.notes.append(f"RSS after {warm} captures = the median reading of captures {warm - window + 1}-{warm}; at the end = "
                   f"the median of the last {window}: the readings swing by several hundred KiB from one capture to "
                   f"the next (the ranges below), so one reading is not enough; growth per 100 captures = the growth "
                   f"over the captures between the two, scaled; judged: twice it (per 200 captures) <= 2 MiB")
    t.notes.append("listen's records: listen_file returns every event of the file, keeps its ledger in memory "
                   "(Ledger.in_memory: reading a file must not touch the device's ledger) and gives the gate a stand-in "
                   "light that writes a line per change of state to a StringIO; the daemon keeps none of these in "
                   "memory (its ledger goes to disk). They are part of the growth measured here; their size is "
                   "sys.getsizeof over those events and ledger entries (not counting what lives for the whole run: the "
                   "config, the grammar, the models) plus the light's text, a lower bound (the allocator's own overhead "
                   "is not counted)")
    t.notes.append("the 'none' row runs the same pipeline without a recognizer (wake word, VAD, capture buffer, gate, "
                   "ledger): what grows around the recognizer")
    t.notes += details
    if ctx.quick:
        t.notes.append(f"--quick: {said} captures, too few to tell a slow growth from the swing between readings, so "
                       "not judged; the full run has 200")
    if en is None:
        t.notes.append(f"vosk and both: not measured ({why})")
    else:
        t.notes.append(f"judged on pocketsphinx only: vosk and both use the {VOSK_EN_LABEL} (testkit/vosk_english.py), "
                       "not the model users download")
    return t
