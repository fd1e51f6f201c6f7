"""Where audio lives in RAM (P4): the pre-roll ring and the capture buffer. Besides these, only the
recognizer a capture is handed to keeps any: pocketsphinx holds the capture's first
`capture.preroll_s` (at least 0.3 s) in one buffer of its own until it has decoded them, then
zeroes it (speech/sphinx.py).

Both are fixed-size bytearrays allocated once and overwritten with zeros when they are done with, so
no copy of the audio lingers in memory after a mute or a hand-over.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path

from tallylight.pcm import BYTES_PER_SAMPLE, BYTES_PER_SECOND, RATE

MAX_RING_S = 2.0  # P4: the pre-roll ring never holds more than this


class PrerollRing:
    """The last `seconds` of audio heard while listening, so a capture can start shortly before the
    wake detector fired (detection comes 0.25-0.6 s after the wake word ends, and people say the
    command in the same breath)."""

    def __init__(self, seconds: float):
        if not 0 < seconds <= MAX_RING_S:
            raise ValueError(f"pre-roll ring must be 0-{MAX_RING_S} s, not {seconds}")
        self.capacity = int(seconds * BYTES_PER_SECOND) & ~1
        self._buf = bytearray(self.capacity)
        self._end = 0  # write position
        self._filled = 0

    def __len__(self) -> int:
        return self._filled

    def push(self, block: bytes) -> None:
        n, end, capacity = len(block), self._end, self.capacity
        if n <= capacity - end:
            # The common case, once per audio block: it fits before the end of the ring.
            self._buf[end:end + n] = block
            self._end = 0 if end + n == capacity else end + n
            if self._filled < capacity:
                self._filled = min(capacity, self._filled + n)
            return
        data = memoryview(block)[-capacity:]
        n = len(data)
        first = min(n, self.capacity - self._end)
        self._buf[self._end:self._end + first] = data[:first]
        self._buf[:n - first] = data[first:]
        self._end = (self._end + n) % self.capacity
        self._filled = min(self.capacity, self._filled + n)

    def tail(self, seconds: float) -> bytes:
        """A copy of the last `seconds` of audio (less if the ring holds less)."""
        n = min(self._filled, int(seconds * BYTES_PER_SECOND) & ~1)
        start = (self._end - n) % self.capacity
        if start + n <= self.capacity:
            return bytes(self._buf[start:start + n])
        return bytes(self._buf[start:]) + bytes(self._buf[:n - (self.capacity - start)])

    def wipe(self) -> None:
        """Zero every byte (on mute, and after a capture took its pre-roll)."""
        self._buf[:] = bytes(self.capacity)
        self._end = self._filled = 0

    def is_zeroed(self) -> bool:
        return self._filled == 0 and not any(self._buf)


class CaptureBuffer:
    """The audio of one utterance after the wake word, bounded by `max_s` plus the pre-roll."""

    def __init__(self, max_s: float, preroll_s: float):
        self.capacity = int((max_s + preroll_s) * BYTES_PER_SECOND) & ~1
        self._buf = bytearray(self.capacity)
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def duration_s(self) -> float:
        return self._len / BYTES_PER_SECOND

    @property
    def full(self) -> bool:
        return self._len >= self.capacity

    def append(self, block: bytes) -> None:
        n = min(len(block), self.capacity - self._len)
        self._buf[self._len:self._len + n] = memoryview(block)[:n]
        self._len += n

    def view(self) -> memoryview:
        """The utterance, without copying. Valid until `wipe()`."""
        return memoryview(self._buf)[:self._len]

    def wipe(self) -> None:
        self._buf[:self._len] = bytes(self._len)
        self._len = 0

    def is_zeroed(self) -> bool:
        return self._len == 0 and not any(self._buf)


class DebugRecorder:
    """The one code path that writes audio to disk: `debug.record_dir`, empty (off) by default. The
    gate shows its own light pattern while it is on and ledgers every file written."""

    def __init__(self, directory: str):
        self.directory = Path(directory).expanduser()
        self.count = 0

    def next_path(self) -> Path:
        """Where the next capture goes: the ledger names it before a byte is written."""
        self.count += 1
        return self.directory / f"capture-{time.strftime('%Y%m%d-%H%M%S')}-{self.count:04d}.wav"

    def write(self, path: Path, audio: memoryview) -> None:
        """Write one capture as a WAV file; on failure leave no part of it behind and raise OSError."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(BYTES_PER_SAMPLE)
                w.setframerate(RATE)
                w.writeframes(audio)
        except OSError:
            path.unlink(missing_ok=True)
            raise
