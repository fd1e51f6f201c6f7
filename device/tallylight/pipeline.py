"""The listening pipeline: privacy gate -> wake detector -> capture session -> consumer (or, in Home
Assistant's audio mode, -> upload stream).

A plain object fed 16 kHz mono blocks with `process(block)`, returning events. It does no I/O of
its own (the gate drives the light and the ledger), so `tallylight listen` feeds it files and the
daemon feeds it the microphone, through exactly the same code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Protocol

from tallylight.capture import CaptureBuffer, PrerollRing
from tallylight.config import CaptureConfig
from tallylight.events import CaptureEnded, Event, StateChanged, WakeDetected
from tallylight.gate import PrivacyGate, State
from tallylight.pcm import BYTES_PER_SECOND

_LOG = logging.getLogger(__name__)

_NO_EVENTS: tuple[Event, ...] = ()

# The pause a recognizer's final search is given before an early end (see Pipeline._hear_pause_again).
# With 0.4 s after a 0.1 s early end, vosk and pocketsphinx together heard as after a 0.2 s pause;
# pocketsphinx alone lost 7 of 868 espeak-ng clips (0.2 and 0.3 s: no better; docs/measurements.md).
FINAL_SEARCH_PAUSE_S = 0.4


class UtteranceConsumer(Protocol):
    """What a capture is handed to (the recognizer and command matcher). It sees the utterance block
    by block while the capture light is on, and must keep nothing after `finish()`/`reset()`."""

    name: str

    def process(self, block: bytes) -> tuple[list[Event], bool]:
        """Events so far, and True while what it heard so far is a whole command that no longer
        command continues: the pipeline may then end the capture at a short pause (early end)."""

    def finish(self, t: float) -> list[Event]:
        """The end of the utterance: what was heard."""

    def reset(self) -> None: ...


class UtteranceUploader(Protocol):
    """Where an utterance streams in audio mode (uplink_port.UplinkPort). It sends only what the pipeline
    gives it, which the gate allowed block by block (P3); it keeps no audio of its own."""

    upload_destination: str

    def upload_ready(self) -> bool:
        """True when a stream could start now (audio mode, the uplink and Home Assistant connected)."""

    def begin_stream(self) -> None: ...

    def stream(self, block: bytes) -> None:
        """Send one block (allowed by the gate)."""

    def stream_over(self) -> str:
        """Why the stream should stop now ("vad_end": Home Assistant heard the end of speech, "dropped": the
        link lost it), or "" while it goes on."""

    def end_stream(self, reason: str) -> None:
        """No more audio for this stream."""

    def stream_settled(self) -> tuple[int, int | None, str] | None:
        """After end_stream: (bytes sent, bytes the uplink passed on or None, how it ended) once the uplink has
        passed the stream on or the wait for it is over; None while it is still passing it on."""

    def abort_stream(self, reason: str) -> None:
        """A mute or an error: whatever was not yet sent is taken back."""


class Pipeline:
    def __init__(self, make_gate: Callable[..., PrivacyGate], wake, endpointer, cfg: CaptureConfig, *,
                 consumer: UtteranceConsumer | None = None, recorder=None, echo=None):
        self.wake = wake
        # echo.EchoCanceller (the daemon, with [frontend] echo_cancel): the speaker's own sound is
        # taken out of each block first, so the ring, the wake word and a capture all hear without it.
        self.echo = echo
        self.endpointer = endpointer
        self.consumer = consumer
        self.recorder = recorder
        self.uploader: UtteranceUploader | None = None  # audio mode: set by the daemon once its uplink port exists
        self._stream_bytes = 0
        self._stream_end = ""  # why the stream being uploaded stopped; "" while it goes on
        self.max_s = cfg.max_s
        self.preroll_s = cfg.preroll_s
        self.early_end_s = cfg.early_end_s
        self.ring = PrerollRing(cfg.ring_s)
        self.buffer = CaptureBuffer(cfg.max_s, cfg.preroll_s)
        self.t = 0.0  # seconds of audio processed
        self.blocks_processed = 0
        self._was_suppressed = False
        self._events: list[Event] = []
        # The gate wipes what this pipeline holds when it closes the mic (before its light changes)
        # and tells it of every state change.
        self.gate = make_gate(wipe=self.forget, on_change=self._state_changed)

    def _state_changed(self, old: State, new: State, reason: str) -> None:
        self._events.append(StateChanged(self.t, new.value, old.value, reason))

    def drain(self) -> list[Event]:
        """Events that happened outside `process` (state changes made by the daemon)."""
        if not self._events:
            return []
        out, self._events = self._events, []
        return out

    def process(self, block: bytes, t_end: float | None = None) -> Sequence[Event]:
        """One block; `t_end`: when its last sample was read (monotonic s), for the echo canceller."""
        if not self.gate.mic_open_allowed:
            # The daemon closes the mic before this can happen; refuse rather than trust it (P1).
            raise RuntimeError(f"audio block offered while the gate is {self.gate.state.value}")
        if self.echo is not None and t_end is not None:
            block = self.echo.process(block, t_end)
        self.blocks_processed += 1
        self.t += len(block) / BYTES_PER_SECOND
        if self.gate.capturing:
            self._capture(block)
        elif self.gate.uploading:
            self._upload(block)
        else:
            self._listen(block)
        # Most blocks give no event: hand back one shared empty tuple rather than a new list each time.
        return self.drain() if self._events else _NO_EVENTS

    def _listen(self, block: bytes) -> None:
        self.ring.push(block)
        if self.gate.wake_suppressed:  # our own speaker is playing (gate.py rule 7)
            self._was_suppressed = True
            return
        if self._was_suppressed:  # our own reply just ended: forget what the detector heard of it
            self._was_suppressed = False
            self.wake.reset()
        hit = self.wake.process(block)
        if hit is None:
            return
        self._events.append(WakeDetected(self.t, hit.word, hit.engine, round(hit.score, 3)))
        if self.uploader is not None and self.uploader.upload_ready():
            self._begin_upload()
            return
        # P2: only once the light is confirmed on (and ledgered) may audio go past this point.
        if not self.gate.begin_capture():
            self.ring.wipe()
            return
        preroll = self.ring.tail(self.preroll_s)
        self.ring.wipe()
        self.endpointer.reset()
        if self.consumer:
            self.consumer.reset()
        self._capture(preroll, count_for_endpoint=False)

    def _capture(self, block: bytes, count_for_endpoint: bool = True) -> None:
        self.buffer.append(block)
        sure = False
        if self.consumer and block:
            events, sure = self.consumer.process(block)
            self._events.extend(events)
        end = self.endpointer.process(block) if count_for_endpoint else None
        if end is None and sure and self.endpointer.speech_started and self.endpointer.silence_s >= self.early_end_s:
            # The recognizer holds a whole command that nothing longer could continue, and the
            # speaker has paused: no need to wait out the full end_silence_s.
            end = "early"
            self._hear_pause_again()
        if end is None and self.buffer.full:
            end = "max_length"
        if end:
            self._finish(end)

    def _hear_pause_again(self) -> None:
        """Before an early end, the consumer hears the pause that ended the capture again, until it has
        heard FINAL_SEARCH_PAUSE_S of pause in all. pocketsphinx's final search needs room for the
        silence after the last word: with only the short pause of an early end it stretched that word
        over the pause and distrusted it ("lights off" at confidence 0), or changed the command
        ("quieter" became "light off"). Only what the VAD called non-speech is repeated, never the end
        of a word; it is the room's own sound, so nothing is made up."""
        pause = self.endpointer.silence_s
        n = min(int(pause * BYTES_PER_SECOND) // 2 * 2, len(self.buffer))
        if not n:
            return
        again = bytes(self.buffer.view()[-n:])
        for _ in range(math.ceil((FINAL_SEARCH_PAUSE_S - pause) / (n / BYTES_PER_SECOND) - 1e-9)):
            events, _ = self.consumer.process(again)
            self._events.extend(events)

    # -- audio mode: the utterance streams to Home Assistant (gate.py rule 9) ------------------------
    def _begin_upload(self) -> None:
        # P3: only once the upload light is confirmed on (and ledgered). The ring, which holds the wake
        # phrase, is wiped either way: what is sent starts after the wake word.
        opened = self.gate.begin_upload(self.uploader.upload_destination)
        self.ring.wipe()
        if opened:
            self._stream_bytes, self._stream_end = 0, ""
            self.uploader.begin_stream()

    def _upload(self, block: bytes) -> None:
        up = self.uploader
        if not self._stream_end:
            end = up.stream_over() or ("max_length" if self._stream_bytes >= self.max_s * BYTES_PER_SECOND else "")
            if not end:
                if self.gate.allow_send(len(block)):  # the light re-confirmed, the bytes counted (P3)
                    up.stream(block)
                    self._stream_bytes += len(block)
                return
            self._stream_end = end
            up.end_stream(end)
        # Blocks heard while the uplink passes the stream on are dropped, not kept: the light stays on
        # until the uplink says the last byte has gone to Home Assistant.
        settled = up.stream_settled()
        if settled is None:
            return
        sent, forwarded, how = settled
        self.wake.reset()
        self.endpointer.reset()
        self.gate.end_upload(up.upload_destination, sent, end=how, forwarded=forwarded)

    def _finish(self, end: str) -> None:
        duration = self.buffer.duration_s
        if self.consumer:
            self._events.extend(self.consumer.finish(self.t))
        if self.recorder is not None:
            self._record_for_debugging(duration)
        self.buffer.wipe()
        if self.consumer:
            self.consumer.reset()
        self.wake.reset()
        self.endpointer.reset()
        # P2: the light goes off only now, after hand-over and wipe.
        self._events.append(CaptureEnded(self.t, round(duration, 3), end, self.consumer.name if self.consumer else "nobody"))
        self.gate.end_capture(duration_s=duration, handed_to=self.consumer.name if self.consumer else "nobody", end=end)

    def _record_for_debugging(self, duration: float) -> None:
        """debug.record_dir, if the gate allows (gate.py rule 8: it ledgers the file first). A failed
        write leaves no part of the file and is ledgered too."""
        path = self.recorder.next_path()
        if not self.gate.allow_debug_recording(str(path), duration):
            return
        try:
            self.recorder.write(path, self.buffer.view())
        except OSError as e:
            _LOG.error("debug recording not written to %s: %s (check debug.record_dir)", path, e.strerror or e)
            self.gate.note("debug_recording_failed", file=str(path), error=str(e.strerror or e))

    def end_of_stream(self) -> list[Event]:
        """The input ended (end of a file): finish a capture in progress as if speech had ended."""
        if self.gate.capturing:
            self._finish("end_of_stream")
        return self.drain()

    def forget(self) -> None:
        """Drop all audio now (mute, error, shutdown): zero the ring and any capture in progress, and take
        back what an upload had not sent yet."""
        if self.uploader is not None:
            self.uploader.abort_stream("stopped")
        self.ring.wipe()
        self.buffer.wipe()
        if self.consumer:
            self.consumer.reset()
        self.wake.reset()
        self.endpointer.reset()
        if self.echo is not None:
            self.echo.reset()  # the reference ring too: what the speaker played is audio as well (P4)

    def close(self) -> None:
        self.forget()
        for part in (self.consumer, self.wake, self.echo):
            if part is not None and hasattr(part, "close"):
                part.close()
