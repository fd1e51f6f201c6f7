"""Echo cancellation: take what our own speaker played out of what the microphone hears.

Two plain parts, no thread and no I/O of their own:

- `ReferenceRing`: the far end. The speaker's thread publishes every block it hands to aplay, at
  16 kHz, on the monotonic clock's timeline (the time each sample is due to play). Bounded (at most
  `max_s` of audio, older blocks are dropped), in RAM only, zeroed by `wipe()` (P4: the gate's wipe
  on a mute or an error reaches it through the pipeline's `forget`).
- `EchoCanceller`: `process(block, t_end)` takes a mic block whose last sample was read at `t_end`
  (monotonic seconds), fetches the far-end samples that were playing `delay` earlier, and runs
  speexdsp's echo canceller (MDF adaptive filter) and its residual-echo suppressor over each 10 ms
  frame. While nothing has played for a while it passes blocks through untouched, so listening
  costs nothing more.

The delay from "written to aplay" to "back in the mic" (aplay and the sound server's buffers, the
air, the mic's own buffer) is not known in advance and differs per device: with `delay_ms = -1` it
is estimated from the audio by cross-correlating the mic with the reference (GCC-PHAT) while the
speaker plays, and the adaptive filter (`tail_ms` long) covers the room's echo after that point.

speexdsp is the Xiph library PulseAudio's `module-echo-cancel aec_method=speex` uses: Debian's
`libspeexdsp1` (its C API has not changed since 2008), loaded with ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from tallylight.errors import EngineError
from tallylight.pcm import RATE

_LOG = logging.getLogger(__name__)

FRAME = RATE // 100  # speexdsp works on 10 ms frames here (160 samples), so 10 and 20 ms blocks both fit

# speex_echo.h / speex_preprocess.h request numbers
_ECHO_SET_SAMPLING_RATE = 24
_PRE_SET_DENOISE = 0
_PRE_SET_AGC = 2
_PRE_SET_DEREVERB = 8
_PRE_SET_ECHO_STATE = 24
_PRE_SET_ECHO_SUPPRESS = 26
_PRE_SET_ECHO_SUPPRESS_ACTIVE = 28

_LIB: ctypes.CDLL | None = None
_I16P = ctypes.POINTER(ctypes.c_int16)

INSTALL_HINT = "apt-get install libspeexdsp1 (scripts/setup.sh does), or set [frontend] echo_cancel = false"


def load_speexdsp() -> ctypes.CDLL:
    """Debian's libspeexdsp, with the prototypes set. EngineError (one line) if it is missing."""
    global _LIB
    if _LIB is not None:
        return _LIB
    names = [n for n in (ctypes.util.find_library("speexdsp"), "libspeexdsp.so.1") if n]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "speex_echo_state_init") and hasattr(lib, "speex_preprocess_state_init"):
            break
    else:
        raise EngineError(f"echo cancellation needs libspeexdsp, which was not found: {INSTALL_HINT}")
    vp, ci = ctypes.c_void_p, ctypes.c_int
    for fn, res, args in (
        ("speex_echo_state_init", vp, [ci, ci]),
        ("speex_echo_state_destroy", None, [vp]),
        ("speex_echo_state_reset", None, [vp]),
        ("speex_echo_cancellation", None, [vp, _I16P, _I16P, _I16P]),
        ("speex_echo_ctl", ci, [vp, ci, vp]),
        ("speex_preprocess_state_init", vp, [ci, ci]),
        ("speex_preprocess_state_destroy", None, [vp]),
        ("speex_preprocess_run", ci, [vp, _I16P]),
        ("speex_preprocess_ctl", ci, [vp, ci, vp]),
    ):
        f = getattr(lib, fn)
        f.restype, f.argtypes = res, args
    _LIB = lib
    return lib


def to_16k(pcm: bytes, rate: int) -> np.ndarray:
    """s16le mono at `rate` -> int16 samples at 16 kHz (the speaker's sounds and espeak-ng are 22.05 kHz)."""
    x = np.frombuffer(pcm, dtype="<i2")
    if rate == RATE or not len(x):
        return x.astype(np.int16)
    import soxr

    return soxr.resample(x, rate, RATE, quality="HQ").astype(np.int16)


class ReferenceRing:
    """What the speaker plays, by the time it plays: thread-safe, bounded, RAM only."""

    def __init__(self, max_s: float = 6.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_samples = int(max_s * RATE)
        self._clock = clock
        self._lock = threading.Lock()
        self._blocks: list[tuple[int, np.ndarray]] = []  # (first sample's index on the 16 kHz timeline, samples)
        self._held = 0
        self.last_end = -1  # timeline index just past the last sample published (or cut)

    @staticmethod
    def index(t: float) -> int:
        return int(round(t * RATE))

    def publish(self, samples: np.ndarray, t_start: float) -> None:
        """Speaker thread: 16 kHz int16 `samples`, due to play from monotonic time `t_start` on."""
        if not len(samples):
            return
        start = self.index(t_start)
        block = np.array(samples, dtype=np.int16)  # a copy the ring owns, so wipe() zeroes the only one
        with self._lock:
            self._blocks.append((start, block))
            self._held += len(block)
            self.last_end = max(self.last_end, start + len(block))
            while self._held > self.max_samples and len(self._blocks) > 1:
                _, old = self._blocks.pop(0)
                self._held -= len(old)
                old.fill(0)

    def cut(self, t: float) -> None:
        """Playback stopped at `t`: drop what was queued to play after it (it never reached the air)."""
        end = self.index(t)
        with self._lock:
            keep = []
            for start, block in self._blocks:
                if start >= end:
                    block.fill(0)
                    self._held -= len(block)
                    continue
                if start + len(block) > end:
                    block[end - start:] = 0
                keep.append((start, block))
            self._blocks = keep
            self.last_end = min(self.last_end, end)

    def read(self, start: int, n: int) -> np.ndarray | None:
        """The samples from timeline index `start`, `n` of them (zeros where nothing played); None when
        nothing at all played in that span. Blocks wholly in the past beyond a second are let go."""
        out = None
        horizon = start - RATE
        with self._lock:
            while self._blocks and self._blocks[0][0] + len(self._blocks[0][1]) < horizon:
                _, old = self._blocks.pop(0)
                self._held -= len(old)
                old.fill(0)
            for b0, block in self._blocks:
                lo, hi = max(start, b0), min(start + n, b0 + len(block))
                if lo >= hi:
                    continue
                if out is None:
                    out = np.zeros(n, dtype=np.int16)
                out[lo - start:hi - start] = block[lo - b0:hi - b0]
        return out

    def wipe(self) -> None:
        """Zero and drop everything (P4)."""
        with self._lock:
            for _, block in self._blocks:
                block.fill(0)
            self._blocks = []
            self._held = 0


class DelayEstimator:
    """Where the reference's echo lies in the mic, by GCC-PHAT over the last `window_s` while playing.

    `offer(mic, ref)` takes equal-length aligned-at-zero-delay runs of the mic (before cancelling)
    and the reference extended `max_lag` samples into the past; it returns a delay in samples once two
    estimates in a row agree within 2 ms, else None. Holds at most `window_s` of mic audio (zeroed by
    `reset`)."""

    def __init__(self, max_delay_ms: int = 500, window_s: float = 1.0) -> None:
        self.max_lag = RATE * max_delay_ms // 1000
        self.window = int(window_s * RATE)
        self._last: int | None = None

    def estimate(self, mic: np.ndarray, ref: np.ndarray) -> tuple[int, float] | None:
        """mic: `window` samples; ref: `window + max_lag` samples ending where mic ends. (lag, peak ratio)."""
        if float(np.dot(ref.astype(np.float64), ref)) < len(ref) * 100.0**2:  # too quiet to tell (under -50 dBFS)
            return None
        n = 1 << int(np.ceil(np.log2(len(ref) + len(mic))))
        m = np.fft.rfft(mic.astype(np.float64), n)
        r = np.fft.rfft(ref.astype(np.float64), n)
        g = m * np.conj(r)
        g /= np.abs(g) + 1e-9
        cc = np.fft.irfft(g, n)
        # irfft(M conj R)[k] = sum_i mic[i + k] ref[i] (circularly). The mic's sample i is ref's sample
        # i + max_lag played `lag` samples earlier, so an echo `lag` late peaks at k = lag - max_lag.
        lags = np.arange(self.max_lag + 1)
        vals = cc[(lags - self.max_lag) % n]
        best = int(np.argmax(vals))
        ratio = float(vals[best] / (np.median(np.abs(vals)) + 1e-12))
        return best, ratio

    def offer(self, mic: np.ndarray, ref: np.ndarray) -> int | None:
        got = self.estimate(mic, ref)
        if got is None or got[1] < 8.0:
            return None
        lag = got[0]
        agreed = self._last is not None and abs(lag - self._last) <= RATE // 500
        self._last = lag
        return lag if agreed else None

    def reset(self) -> None:
        self._last = None


class EchoCanceller:
    """The front end's first step: speexdsp AEC + residual echo suppression, fed by a ReferenceRing."""

    def __init__(self, ring: ReferenceRing, *, tail_ms: int = 200, delay_ms: int = -1, suppress_db: int = -40,
                 active_suppress_db: int = -15, margin_ms: int = 10) -> None:
        self.lib = load_speexdsp()
        self.ring = ring
        self.tail = RATE * tail_ms // 1000
        self.fixed_delay = delay_ms >= 0
        self.margin = RATE * margin_ms // 1000
        self.delay = RATE * delay_ms // 1000 if delay_ms >= 0 else RATE * 60 // 1000  # until estimated
        self._suppress = (suppress_db, active_suppress_db)
        self._estimator = DelayEstimator()
        self._echo = self._pre = None
        self._make()
        self._pending = np.zeros(0, dtype=np.int16)  # under one frame of mic audio waiting
        self._pending_ref = np.zeros(0, dtype=np.int16)
        self._out = np.zeros(FRAME, dtype=np.int16)
        self._mic_hist = np.zeros(self._estimator.window, dtype=np.int16)  # for the delay estimate only
        self._hist_fill = 0
        self._since_estimate = 0
        self._locked = False  # an estimate was confirmed: check it less often
        self._mic_end: int | None = None  # the last block's end on the timeline (see _timeline)
        self._busy_until = -1  # timeline index until which frames are cancelled (far end + tail)
        self.frames_cancelled = 0
        self._closed = False

    def _make(self) -> None:
        lib = self.lib
        self._echo = lib.speex_echo_state_init(FRAME, self.tail)
        self._pre = lib.speex_preprocess_state_init(FRAME, RATE)
        if not self._echo or not self._pre:
            raise EngineError("speexdsp could not make an echo canceller (out of memory?)")
        rate = ctypes.c_int(RATE)
        lib.speex_echo_ctl(self._echo, _ECHO_SET_SAMPLING_RATE, ctypes.byref(rate))
        self._configure_pre()

    @property
    def delay_ms(self) -> float:
        return self.delay * 1000 / RATE

    def process(self, block: bytes, t_end: float) -> bytes:
        """A mic block (16 kHz s16le) whose last sample was read at monotonic `t_end`: the block with
        the speaker's echo taken out. Same length out as in (up to 10 ms later while cancelling)."""
        if self._closed:
            raise EngineError("the echo canceller was used after close()")
        mic = np.frombuffer(block, dtype="<i2")
        n = len(mic)
        end = self._timeline(ReferenceRing.index(t_end), n)
        start = end - n  # the block's first sample on the timeline
        ref = self.ring.read(start - self.delay, n)
        if ref is not None:
            self._busy_until = max(self._busy_until, self.ring.last_end + self.delay + self.tail + RATE // 2)
        if start >= self._busy_until and not len(self._pending):
            self._hist_fill = 0
            return block  # nothing playing, nor its echo: untouched, and no CPU spent
        if ref is None:
            ref = np.zeros(n, dtype=np.int16)
        if not self.fixed_delay:
            self._track_delay(mic, end)
        return self._cancel(mic, ref)

    def _timeline(self, end: int, n: int) -> int:
        """Where the block ends on the timeline. A read's return time jitters (blocks come in bursts:
        45 ms here at the 99th percentile), which would shift the reference against the mic from block
        to block; the mic's own samples do not. So the timeline advances by the samples read, moved
        earlier whenever a block comes sooner than that predicts (it was read late before), and set
        anew after a gap of more than 0.2 s (the stream was reopened)."""
        if self._mic_end is not None:
            predicted = self._mic_end + n
            if predicted - RATE // 5 <= end <= predicted + RATE // 5:
                end = min(end, predicted)
        self._mic_end = end
        return end

    def _cancel(self, mic: np.ndarray, ref: np.ndarray) -> bytes:
        # Frames of 160: a 20 ms block is two; a remainder waits for the next block (the reference is
        # cut to match, so the two stay aligned sample for sample).
        if len(self._pending):
            mic = np.concatenate([self._pending, mic])
            ref = np.concatenate([self._pending_ref, ref])
        usable = len(mic) - len(mic) % FRAME
        self._pending, self._pending_ref = mic[usable:].copy(), ref[usable:].copy()
        mic = np.ascontiguousarray(mic[:usable], dtype=np.int16)
        ref = np.ascontiguousarray(ref[:usable], dtype=np.int16)
        out = np.empty(usable, dtype=np.int16)
        lib, out_frame = self.lib, self._out
        optr = out_frame.ctypes.data_as(_I16P)
        for i in range(0, usable, FRAME):
            lib.speex_echo_cancellation(self._echo, mic[i:].ctypes.data_as(_I16P), ref[i:].ctypes.data_as(_I16P), optr)
            lib.speex_preprocess_run(self._pre, optr)
            out[i:i + FRAME] = out_frame
        self.frames_cancelled += usable // FRAME
        return out.astype("<i2").tobytes()

    def _track_delay(self, mic: np.ndarray, end: int) -> None:
        hist = self._mic_hist
        n = min(len(mic), len(hist))
        hist[:-n] = hist[n:]
        hist[-n:] = mic[-n:]
        self._hist_fill = min(len(hist), self._hist_fill + n)
        self._since_estimate += n
        # Twice a second until two estimates agree, then every 4 s (each costs three 64k-point FFTs).
        every = 4 * RATE if self._locked else RATE // 2
        if self._hist_fill < len(hist) or self._since_estimate < every:
            return
        self._since_estimate = 0
        est = self._estimator
        ref = self.ring.read(end - len(hist) - est.max_lag, len(hist) + est.max_lag)
        if ref is None:
            return
        lag = est.offer(hist, ref)
        if lag is None:
            return
        self._locked = True
        new = max(0, lag - self.margin)
        if abs(new - self.delay) > RATE // 250:  # more than 4 ms off: realign, and let the filter adapt anew
            _LOG.info("echo delay estimated at %.0f ms (was %.0f ms)", lag * 1000 / RATE, self.delay_ms)
            self.delay = new
            self.lib.speex_echo_state_reset(self._echo)

    def reset(self) -> None:
        """Forget all audio (mute, error): the reference ring, the mic history, the filter's state.
        The estimated delay is kept: it is a property of the device, not of what was said."""
        self.ring.wipe()
        self._mic_hist.fill(0)
        self._hist_fill = 0
        self._pending = np.zeros(0, dtype=np.int16)
        self._pending_ref = np.zeros(0, dtype=np.int16)
        self._out.fill(0)
        self._busy_until = -1
        self._mic_end = None
        self._estimator.reset()
        if not self._closed:
            self.lib.speex_echo_state_reset(self._echo)
            self.lib.speex_preprocess_state_destroy(self._pre)
            self._pre = self.lib.speex_preprocess_state_init(FRAME, RATE)
            self._configure_pre()

    def _configure_pre(self) -> None:
        lib = self.lib
        off = ctypes.c_int(0)
        # Its VAD is off by default (setting it only prints a warning). WebRTC NS comes after.
        for req in (_PRE_SET_DENOISE, _PRE_SET_AGC, _PRE_SET_DEREVERB):
            lib.speex_preprocess_ctl(self._pre, req, ctypes.byref(off))
        lib.speex_preprocess_ctl(self._pre, _PRE_SET_ECHO_STATE, ctypes.c_void_p(self._echo))
        for req, db in zip((_PRE_SET_ECHO_SUPPRESS, _PRE_SET_ECHO_SUPPRESS_ACTIVE), self._suppress):
            v = ctypes.c_int(db)
            lib.speex_preprocess_ctl(self._pre, req, ctypes.byref(v))

    def close(self) -> None:
        """Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.ring.wipe()
        self._mic_hist.fill(0)
        self.lib.speex_preprocess_state_destroy(self._pre)
        self.lib.speex_echo_state_destroy(self._echo)
        self._pre = self._echo = None
