"""Pure audio conversion: any rate and channel count in, 16 kHz mono s16le out. No I/O.

Everything after the audio source (wake word, VAD, recognizer) takes 16 kHz mono signed 16-bit
little-endian ("s16le") in fixed blocks; these steps produce that from whatever a mic or file gives.
Channels are mixed down *before* resampling so a 6-channel 48 kHz array costs one resampler, not six.
"""

from __future__ import annotations

import numpy as np
import soxr

from tallylight.choices import ChannelMode
from tallylight.pcm import BYTES_PER_SAMPLE, RATE

# A channel must be this much louder (RMS ratio, ~1 dB) before "loudest" switches to it: mic-array
# channels are nearly equal most of the time and flapping between them every block adds clicks.
_LOUDEST_HYSTERESIS = 1.12


def to_s16(raw: bytes, width: int) -> bytes:
    """Little-endian integer PCM samples of `width` bytes (1 = unsigned 8-bit, 2, 3, 4 = signed) ->
    s16le, keeping the top 16 bits (truncation: the lost bits are below any mic's noise floor)."""
    if width == 2:
        return bytes(raw)
    if width == 1:
        a = np.frombuffer(raw, dtype=np.uint8).astype(np.int16)
        return ((a - 128) << 8).astype("<i2").tobytes()
    if width == 3:
        a = np.frombuffer(raw, dtype=np.uint8)[: len(raw) // 3 * 3].reshape(-1, 3)
        return np.ascontiguousarray(a[:, 1:3]).tobytes()  # bytes 1-2 of each LE sample are its top 16 bits
    if width == 4:
        a = np.frombuffer(raw, dtype="<i4")
        return (a >> 16).astype("<i2").tobytes()
    raise ValueError(f"sample width must be 1, 2, 3 or 4 bytes, not {width}")


class BlockConverter:
    """Raw interleaved s16le frames at any rate/channel count -> 16 kHz mono s16le.

    Streaming: `process()` takes chunks of any length (a partial frame is kept for the next call)
    and returns what is ready; the resampler holds back a few ms, which `flush()` releases at the end
    of a stream. Output length over a stream is round(frames * 16000 / in_rate) after `flush()`.

    channel_mode: "mean" averages all channels; "single" keeps channel `channel`; "loudest" keeps,
    per `process()` call, the channel with the highest RMS (with ~1 dB hysteresis), for mic arrays
    whose channels face different ways.
    """

    def __init__(self, in_rate: int, in_channels: int, channel_mode: str = ChannelMode.MEAN, channel: int = 0):
        if not isinstance(in_rate, int) or not 1000 <= in_rate <= 768000:
            raise ValueError(f"in_rate must be an integer from 1000 to 768000 Hz, not {in_rate!r}")
        if not isinstance(in_channels, int) or not 1 <= in_channels <= 256:
            raise ValueError(f"in_channels must be an integer from 1 to 256, not {in_channels!r}")
        if channel_mode not in ChannelMode.words():
            raise ValueError(f"channel_mode must be one of {', '.join(ChannelMode)}, not {channel_mode!r}")
        if channel_mode == ChannelMode.SINGLE and not 0 <= channel < in_channels:
            raise ValueError(f"channel {channel} does not exist in {in_channels}-channel input (0-{in_channels - 1})")
        self.in_rate = in_rate
        self.in_channels = in_channels
        self.channel_mode = ChannelMode(channel_mode)
        self.channel = channel
        self._frame_bytes = in_channels * BYTES_PER_SAMPLE
        self._partial = b""
        self._loudest = 0  # the channel "loudest" picked last, for hysteresis
        self._resampler = self._new_resampler()

    @property
    def passthrough(self) -> bool:
        """True when the input is already 16 kHz mono: bytes go through untouched."""
        return self.in_rate == RATE and self.in_channels == 1

    @property
    def loudest_channel(self) -> int:
        """The channel "loudest" mode used for the last block."""
        return self._loudest

    def _new_resampler(self) -> soxr.ResampleStream | None:
        if self.in_rate == RATE:
            return None
        # HQ: ~0.0025 CPU-s per audio-s for mono 48k->16k here, ~30 ms delay; plenty for speech.
        return soxr.ResampleStream(self.in_rate, RATE, 1, dtype="int16", quality="HQ")

    def process(self, raw: bytes) -> bytes:
        """Convert a chunk of interleaved s16le frames; returns the 16 kHz mono bytes ready so far."""
        if self.passthrough and not self._partial and len(raw) % 2 == 0:
            return bytes(raw)
        data = self._partial + bytes(raw)
        usable = len(data) - len(data) % self._frame_bytes
        self._partial = data[usable:]
        if usable == 0:
            return b""
        frames = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self.in_channels)
        mono = self._mix(frames)
        if self._resampler is None:
            return mono.astype("<i2").tobytes()
        return self._resampler.resample_chunk(mono).astype("<i2").tobytes()

    def _mix(self, frames: np.ndarray) -> np.ndarray:
        if self.in_channels == 1:
            return np.ascontiguousarray(frames[:, 0])
        if self.channel_mode == ChannelMode.SINGLE:
            return np.ascontiguousarray(frames[:, self.channel])
        if self.channel_mode == ChannelMode.LOUDEST:
            power = np.mean(frames.astype(np.float64) ** 2, axis=0)
            best = int(np.argmax(power))
            # Compare power (RMS squared), so the hysteresis ratio is squared too.
            if power[best] > power[self._loudest] * _LOUDEST_HYSTERESIS**2:
                self._loudest = best
            return np.ascontiguousarray(frames[:, self._loudest])
        # mean: sum in int32 (no overflow), then round to nearest.
        total = frames.sum(axis=1, dtype=np.int32)
        return np.round(total / self.in_channels).astype(np.int16)

    def flush(self) -> bytes:
        """End of stream: the resampler's held-back tail (a trailing partial frame is dropped)."""
        self._partial = b""
        if self._resampler is None:
            return b""
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        # The stream is finished; a fresh resampler lets the object be reused after flush().
        self._resampler = self._new_resampler()
        return tail.astype("<i2").tobytes()

    def reset(self) -> None:
        """Forget all held samples (after a mute or a device reopen)."""
        self._partial = b""
        self._loudest = 0
        self._resampler = self._new_resampler()


class Reblocker:
    """Cuts a byte stream into blocks of exactly `n` bytes; a partial block waits for more input."""

    def __init__(self, n: int):
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"block size must be a positive number of bytes, not {n!r}")
        self.n = n
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole block."""
        return len(self._buf)

    def process(self, data: bytes) -> list[bytes]:
        """Add bytes; return every whole block now available, in order."""
        self._buf += data
        whole = len(self._buf) // self.n * self.n
        if whole == 0:
            return []
        out = [bytes(self._buf[i : i + self.n]) for i in range(0, whole, self.n)]
        del self._buf[:whole]
        return out

    def pop(self) -> bytes | None:
        """One whole block if there is one, else None (for callers that want one block at a time)."""
        if len(self._buf) < self.n:
            return None
        block = bytes(self._buf[: self.n])
        del self._buf[: self.n]
        return block

    def feed(self, data: bytes) -> None:
        """Add bytes without taking blocks out (pair with `pop()`)."""
        self._buf += data

    def flush(self, pad: bool = False) -> bytes:
        """The held partial block (zero-padded to a whole block if `pad` and not empty); clears it."""
        rest = bytes(self._buf)
        self._buf.clear()
        if pad and rest:
            rest += bytes(self.n - len(rest))
        return rest

    def reset(self) -> None:
        # Overwrite before dropping: the held bytes may be audio, and audio lives in RAM only briefly.
        self._buf[:] = bytes(len(self._buf))
        self._buf.clear()
