"""Spoken replies (espeak-ng) and short sounds (made with numpy), played through ALSA's `aplay`.

Audio OUT only: nothing here opens, reads or holds the microphone.

Why `aplay` in a child process rather than a PyAudio output stream in the daemon:
- the mic stream's life is owned by the privacy gate (P1: closed within one block of the mute edge);
  a separate process means opening, closing or failing the output never touches that PortAudio
  stream, and closing the mic never cuts a reply ("Microphone off." is spoken after the mic closes);
- `stop()` is a kill of one small process, which takes effect at once even mid-buffer;
- a wedged or missing output device costs a logged error, never a hung audio loop;
- `aplay -D DEVICE` takes any ALSA device name the owner already knows from `aplay -L`.

The speaker must not wake itself. `on_start()` is called before any sound of a busy period starts and
`on_end()` after the last one has drained from the device plus a short tail for room echo; the
daemon suppresses wake detection in between. Queued utterances keep one busy period open until the
queue is empty; the pair is called even when playback fails or is stopped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import re
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tallylight.echo import to_16k
from tallylight.pcm import RATE
from tallylight.reply_template import render

log = logging.getLogger(__name__)

# espeak-ng speaks at 22050 Hz; the tones are made at the same rate so one aplay format fits all.
TONE_RATE = 22050
SOUNDS = ("wake", "no_match", "alarm", "error")
# A reply longer than this is cut: a program's chatty output must not talk for minutes.
MAX_REPLY_CHARS = 400
# How long after the last sample the speaker stays "speaking": room echo and the device's own latency.
DEFAULT_TAIL_S = 0.3

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _tone(freqs_ms: Sequence[tuple[float, float]], amplitude: float = 0.3) -> bytes:
    """s16le mono at TONE_RATE: (frequency Hz, duration ms) notes, frequency 0 for silence."""
    parts = []
    fade = int(TONE_RATE * 0.005)  # 5 ms fades so notes start and end without a click
    for freq, ms in freqs_ms:
        n = int(TONE_RATE * ms / 1000)
        if freq <= 0:
            parts.append(np.zeros(n, dtype=np.float32))
            continue
        t = np.arange(n, dtype=np.float32) / TONE_RATE
        note = np.sin(2 * np.pi * freq * t).astype(np.float32) * amplitude
        env = np.ones(n, dtype=np.float32)
        env[:fade] = np.linspace(0, 1, fade)
        env[-fade:] = np.linspace(1, 0, fade)
        parts.append(note * env)
    samples = np.concatenate(parts)
    return (samples * 32767).astype("<i2").tobytes()


def make_sounds() -> dict[str, bytes]:
    """The short sounds, made once: raw s16le mono at TONE_RATE."""
    beep = [(880, 150), (0, 100)]
    return {
        "wake": _tone([(660, 80), (0, 20), (880, 110)]),  # rising: "I'm listening"
        "no_match": _tone([(440, 120), (0, 30), (330, 160)]),  # falling: "didn't get that"
        "error": _tone([(220, 350)], amplitude=0.25),
        # Kept short on purpose: wake detection is suppressed while it plays, so a long alarm could
        # not be stopped by voice. The daemon repeats it, with gaps, until stopped or cancelled.
        "alarm": _tone(beep * 4 + [(0, 300)] + beep * 4),
    }


class _Item:
    __slots__ = ("kind", "payload", "generation")

    def __init__(self, kind: str, payload: Any, generation: int) -> None:
        self.kind, self.payload, self.generation = kind, payload, generation


_CLOSE = object()


class Speaker:
    """Speaks replies with espeak-ng and plays short sounds. Audio OUT only.

    One background worker thread owns the output device and plays a queue of utterances in order;
    `say()` and `sound()` return at once.
    """

    def __init__(
        self,
        cfg: Any,
        *,
        play_argv: Sequence[str] = ("aplay", "-q"),
        synth_argv: Sequence[str] = ("espeak-ng",),
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[], None] | None = None,
        env: Mapping[str, str] | None = None,
        tail_s: float = DEFAULT_TAIL_S,
        synth_timeout_s: float = 10.0,
        reference: Any = None,
    ) -> None:
        self._cfg = cfg
        self._play_argv = list(play_argv)
        self._synth_argv = list(synth_argv)
        self._on_start = on_start
        self._on_end = on_end
        self._env = dict(env) if env is not None else None
        self._tail_s = tail_s
        self._synth_timeout_s = synth_timeout_s
        # echo.ReferenceRing (with [frontend] echo_cancel): every block handed to aplay is published
        # there, on the monotonic timeline, for the echo canceller. None: nobody listens to it.
        self._reference = reference
        self._sounds = make_sounds()
        self._queue: queue.Queue = queue.Queue()
        self._cv = threading.Condition()
        self._pending = 0  # queued items not yet finished
        self._active = False  # between on_start and on_end
        self._generation = 0  # bumped by stop(): older items are dropped, the playing one is cut
        self._proc: subprocess.Popen | None = None  # the child now synthesizing or playing
        self._closed = False
        self.last_error = ""  # the last playback problem, one line (for `status` and tests)
        self._worker = threading.Thread(target=self._run, name="tallylight-speaker", daemon=True)
        self._worker.start()

    render = staticmethod(render)

    # -- public -------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Queue `text` to be spoken. Returns at once."""
        text = _CONTROL.sub(" ", text or "").strip()
        if not text:
            return
        if not self._cfg.enabled:
            log.info("reply (spoken replies are off): %s", text)
            return
        if len(text) > MAX_REPLY_CHARS:
            text = text[:MAX_REPLY_CHARS].rsplit(" ", 1)[0]
        self._enqueue("say", text)

    def sound(self, name: str) -> None:
        """Queue one of SOUNDS. The alarm plays even with reply.sounds off: a silent timer is no use."""
        if name not in self._sounds:
            raise ValueError(f"unknown sound {name!r}; known: {', '.join(SOUNDS)}")
        if not self._cfg.sounds and name != "alarm":
            return
        self._enqueue("sound", name)

    def play(self, pcm: bytes, rate: int) -> None:
        """Queue s16le mono PCM (Home Assistant's speech, decoded by the uplink) to play like a reply."""
        if not pcm:
            return
        if not self._cfg.enabled:
            log.info("speech audio of %d bytes not played (spoken replies are off)", len(pcm))
            return
        self._enqueue("pcm", (pcm, rate))

    @property
    def enabled(self) -> bool:
        """reply.enabled: False means say() and play() only log."""
        return bool(self._cfg.enabled)

    @property
    def speaking(self) -> bool:
        """True from on_start() to on_end(): while this is True, wake detection must be suppressed."""
        with self._cv:
            return self._active or self._pending > 0

    def stop(self) -> None:
        """Cut the current utterance or alarm and drop everything queued. on_end() still follows."""
        with self._cv:
            self._generation += 1
            proc = self._proc
        self._kill(proc)
        if self._reference is not None:
            self._reference.cut(time.monotonic())  # what was queued to play after now never will

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty and on_end() has been called; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._pending == 0 and not self._active, timeout)

    def close(self) -> None:
        """Stop playback and end the worker (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        self._queue.put(_CLOSE)
        self._worker.join(timeout=10)

    # -- worker -------------------------------------------------------------------------------

    def _enqueue(self, kind: str, payload: Any) -> None:
        if self._closed:
            log.warning("speaker is closed; not playing %s", kind)
            return
        with self._cv:
            self._pending += 1
            item = _Item(kind, payload, self._generation)
        self._queue.put(item)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                return
            # A busy period: on_start, every item queued meanwhile, the tail, on_end.
            with self._cv:
                self._active = True
            started = self._call(self._on_start, "on_start")
            try:
                while isinstance(item, _Item):
                    if started:
                        self._play_item(item)
                    else:
                        # Suppression could not be turned on: playing now could wake us. Drop it.
                        log.error("not playing %s %s: on_start failed", item.kind, _shown(item))
                    self._done_item()
                    try:
                        item = self._queue.get(timeout=self._tail_s)
                    except queue.Empty:
                        item = None
            finally:
                self._call(self._on_end, "on_end")
                with self._cv:
                    self._active = False
                    self._cv.notify_all()
            if item is _CLOSE:
                return

    def _done_item(self) -> None:
        with self._cv:
            self._pending -= 1
            self._cv.notify_all()

    @staticmethod
    def _call(callback: Callable[[], None] | None, what: str) -> bool:
        if callback is None:
            return True
        try:
            callback()
            return True
        except Exception:  # noqa: BLE001 - a callback's bug must not kill the speaker thread
            log.exception("speaker %s callback failed", what)
            return False

    def _current(self, item: _Item) -> bool:
        with self._cv:
            return item.generation == self._generation

    def _play_item(self, item: _Item) -> None:
        if not self._current(item):
            return  # stopped while queued
        try:
            if item.kind == "sound":
                self._play(self._sounds[item.payload], TONE_RATE, item)
            elif item.kind == "pcm":
                self._play(*item.payload, item)
            else:
                got = self._synth(item.payload, item)
                if got is not None:
                    self._play(got[0], got[1], item)
        except Exception as e:  # noqa: BLE001 - one bad utterance must not end the speaker
            self._fail(f"{item.kind} {_shown(item)} failed: {e}")

    def _fail(self, message: str) -> None:
        self.last_error = message
        log.error("speaker: %s", message)

    def _spawn(self, argv: list[str], item: _Item, **kw: Any) -> subprocess.Popen | None:
        """Start a child and register it for stop(); None when stopped meanwhile or missing."""
        try:
            # A process group of its own: a Ctrl-C at the terminal goes to the whole foreground group,
            # and would cut aplay mid-write into a logged "could not play" before the daemon even
            # begins to stop. The daemon stops its players itself (stop(), close()).
            proc = subprocess.Popen(argv, env=self._env, process_group=0, **kw)
        except FileNotFoundError:
            hint = "apt-get install espeak-ng" if argv[0].endswith("espeak-ng") else "apt-get install alsa-utils"
            self._fail(f"{argv[0]} not found ({hint})")
            return None
        with self._cv:
            self._proc = proc
            current = item.generation == self._generation
        if not current:
            self._kill(proc)
        return proc

    def _release(self) -> None:
        with self._cv:
            self._proc = None

    @staticmethod
    def _kill(proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def _synth(self, text: str, item: _Item) -> tuple[bytes, int] | None:
        """Text -> (s16le mono PCM, rate) with espeak-ng. The text goes in on stdin, never as an
        argument, so a reply that starts with '-' cannot be read as an option."""
        argv = [*self._synth_argv, "-v", self._cfg.voice, "-s", str(self._cfg.speed), "--stdout"]
        proc = self._spawn(argv, item, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc is None:
            return None
        try:
            out, err = proc.communicate(text.encode("utf-8"), timeout=self._synth_timeout_s)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            proc.communicate()
            self._fail(f"espeak-ng took over {self._synth_timeout_s:g} s for {text!r}")
            return None
        finally:
            self._release()
        if not self._current(item):
            return None
        if proc.returncode != 0:
            msg = _last_line(err) or f"exit status {proc.returncode}"
            self._fail(f"espeak-ng failed: {msg} (check reply.voice; `espeak-ng --voices` lists them)")
            return None
        try:
            # espeak-ng streams its WAV: the header's lengths are placeholders, so read what is there.
            with wave.open(io.BytesIO(out), "rb") as w:
                if w.getsampwidth() != 2 or w.getnchannels() != 1:
                    raise wave.Error(f"{w.getnchannels()} channel(s) of {8 * w.getsampwidth()} bits")
                rate = w.getframerate()
                pcm = w.readframes(w.getnframes())
        except (wave.Error, EOFError) as e:
            self._fail(f"espeak-ng gave audio we cannot play: {e}")
            return None
        return pcm, rate

    def _play(self, pcm: bytes, rate: int, item: _Item) -> None:
        argv = [*self._play_argv]
        if self._cfg.output_device:
            argv += ["-D", self._cfg.output_device]
        argv += ["-t", "raw", "-f", "S16_LE", "-r", str(rate), "-c", "1"]
        proc = self._spawn(argv, item, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc is None:
            return
        assert proc.stdin is not None and proc.stderr is not None  # set by Popen above
        ref = self._reference
        far = to_16k(pcm, rate) if ref is not None else None
        t0 = None
        try:
            step = rate // 10 * 2  # 100 ms per write, so a stop between writes is noticed soon
            for i in range(0, len(pcm), step):
                if not self._current(item):
                    break
                if ref is not None:
                    # Sample k of this sound is due to play at t0 + k / rate: aplay plays it without a
                    # gap from its first write on, however far ahead of the sound card these writes run.
                    # What lies between a write and the mic (buffers, air) the canceller measures.
                    t0 = time.monotonic() if t0 is None else t0
                    a, b = i * RATE // (2 * rate), min(len(far), (i + step) * RATE // (2 * rate))
                    ref.publish(far[a:b], t0 + a / RATE)
                proc.stdin.write(pcm[i : i + step])
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # aplay died (bad device) or was killed by stop(): its status says which
        try:
            # aplay drains the device before it exits, so its exit is the end of the sound.
            proc.wait(timeout=len(pcm) / (2 * rate) + 10)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            proc.wait()
            self._fail(f"aplay did not finish (output device {self._cfg.output_device or 'default'} stuck?)")
        finally:
            err = proc.stderr.read()
            proc.stderr.close()
            self._release()
        if proc.returncode != 0 and ref is not None:
            ref.cut(time.monotonic())  # cut short or failed: the rest never played
        if proc.returncode != 0 and self._current(item):
            msg = _last_line(err) or f"exit status {proc.returncode}"
            dev = self._cfg.output_device or "the default device"
            self._fail(f"aplay could not play on {dev}: {msg} (set reply.output_device; `aplay -L` lists devices)")


def _shown(item: _Item) -> str:
    """An item for the log: its text or sound name, or only the size of PCM."""
    return f"of {len(item.payload[0])} bytes" if item.kind == "pcm" else repr(item.payload)


def _last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""
