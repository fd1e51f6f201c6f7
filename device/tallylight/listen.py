"""`tallylight listen FILE...`: the daemon's pipeline run over recordings, as fast as the CPU allows.

Each file gets a fresh gate in LISTENING (as if the mute control were open), a light that only
reports to the log, and an in-memory ledger: reading a file is not capturing from the microphone,
so the device's own ledger is never touched.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from tallylight.config import Config, IndicatorConfig
from tallylight.errors import AudioFileError, TallylightError
from tallylight.events import Event, WakeScore
from tallylight.gate import PrivacyGate
from tallylight.ledger import Ledger

_LOG = logging.getLogger(__name__)


def listen_file(cfg: Config, path: Path, consumer=None) -> list[Event]:
    """All events for one file. Raises AudioFileError for a file we cannot read."""
    from tallylight.audio.wavfile import WavFileSource
    from tallylight.daemon import build_pipeline
    from tallylight.hardware.indicator import TerminalIndicator

    source = WavFileSource(path, block_ms=cfg.audio.block_ms, channel_mode=cfg.audio.channel_mode,
                           channel=cfg.audio.channel)
    source.open()
    pipeline = build_pipeline(cfg, functools.partial(PrivacyGate, TerminalIndicator(IndicatorConfig(kind="terminal"), out=io.StringIO()),
                                                     Ledger.in_memory()), consumer)
    gate = pipeline.gate
    events: list[Event] = []
    wake = pipeline.wake
    best = 0.0  # read after every block: the pipeline resets the detector (and its peak) after a capture
    try:
        gate.switch_changed(muted=False)
        events += pipeline.drain()
        while block := source.read():
            events += pipeline.process(block)
            best = max(best, wake.peak_score)
        events += pipeline.end_of_stream()
        events.append(WakeScore(pipeline.t, round(best, 3), round(wake.threshold, 3)))
    finally:
        source.close()
        pipeline.forget()
        if consumer is None:
            pipeline.close()
        else:
            pipeline.wake.close()
    return events


def listen_files(cfg: Config, files: Sequence[Path], *, as_json: bool = False, act: bool = False,
                 consumer_factory: Callable[[], object] | None = None, out: TextIO = sys.stdout) -> int:
    """Print the events of each file. A bad file gets a one-line error and the rest still run."""
    consumer = consumer_factory() if consumer_factory else None
    runner = _action_runner(cfg) if act else None
    failed = 0
    try:
        for path in files:
            try:
                events = listen_file(cfg, path, consumer)
            except AudioFileError as e:
                print(f"tallylight: {e}", file=sys.stderr)
                failed += 1
                continue
            for ev in events:
                d = ev.to_dict()
                if as_json:
                    out.write(json.dumps({"file": str(path), **d}) + "\n")
                else:
                    rest = " ".join(f"{k}={v}" for k, v in d.items() if k not in ("event", "t"))
                    out.write(f"{path}  {d['t']:7.2f}s  {d['event']:<10} {rest}\n")
                if runner is not None and getattr(ev, "match", None) is not None:
                    result = runner.perform(ev.match)
                    out.write(json.dumps({"file": str(path), "event": "action", "t": d["t"], "ok": result.ok,
                                          "reply": result.reply}) + "\n" if as_json else
                              f"{path}  {d['t']:7.2f}s  action     ok={result.ok} reply={result.reply!r}\n")
            out.flush()
    finally:
        if consumer is not None and hasattr(consumer, "close"):
            consumer.close()
        if runner is not None:
            runner.close()
    return 65 if failed else 0  # EX_DATAERR when any file could not be read


def _action_runner(cfg: Config):
    try:
        from tallylight.actions import ActionRunner
    except ImportError as e:
        raise TallylightError(f"--act needs the actions module: {e}") from None
    from tallylight.hardware.mute import spoken_name
    from tallylight.hardware.pins import make_pin_factory

    # gpio.pin_factory as the daemon uses it; made when the first GPIO command runs.
    return ActionRunner(cfg.actions, make_pin_factory=lambda: make_pin_factory(cfg.gpio.pin_factory),
                        mute_control=spoken_name(cfg.mute))
