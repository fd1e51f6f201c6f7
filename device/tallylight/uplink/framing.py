"""Frames on the daemon <-> uplink unix socket: a fixed header, then a JSON object, then raw bytes.

    magic "TL" | version u8 | kind u8 | meta_len u16 | data_len u32 | meta (UTF-8 JSON) | data (PCM or nothing)

Every length is checked against a cap before a byte of the body is buffered, so a reader never holds more
than one header and one body (`MAX_FRAME_BYTES`), whatever the peer sends. A frame whose header is wrong
(bad magic, another protocol version, a length over its cap) leaves the stream with no trustworthy frame
boundary: that is a `FrameError`, and the reader drops the connection. A well-delimited frame whose body
is wrong is a `messages.MessageError`: that one frame is dropped and the stream goes on.

Big-endian integers; no compression, no optional fields, nothing negotiated: one version at a time, and
a peer of another version is refused at its first frame (the daemon and the uplink ship together).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tallylight.errors import TallylightError

MAGIC = b"TL"
VERSION = 1
HEADER = struct.Struct(">2sBBHI")
HEADER_BYTES = HEADER.size  # 10
# The JSON part holds ids, small numbers and at most a few texts of MAX_TEXT_CHARS (messages.py); 16 KiB
# leaves room for the worst case (4-byte UTF-8 characters), which tests/test_uplink_messages.py checks.
MAX_META_BYTES = 16 * 1024
# The data part is PCM, s16le mono 16 kHz: 32 KiB is 1.024 s, far more than one audio block (about 64 ms).
MAX_DATA_BYTES = 32 * 1024
MAX_FRAME_BYTES = HEADER_BYTES + MAX_META_BYTES + MAX_DATA_BYTES


class ProtocolError(TallylightError):
    """Something on the uplink socket broke the protocol. ``str(err)`` names what, in one line."""


class FrameError(ProtocolError):
    """The byte stream itself is broken (no frame boundary can be trusted): drop the connection."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One delimited frame, not yet checked beyond its header."""

    kind: int
    meta: bytes
    data: bytes


def encode_frame(kind: int, meta: bytes, data: bytes = b"") -> bytes:
    if not 0 <= kind <= 255:
        raise FrameError(f"frame kind {kind} is not a byte")
    if len(meta) > MAX_META_BYTES:
        raise FrameError(f"frame meta of {len(meta)} bytes is over the {MAX_META_BYTES}-byte cap")
    if len(data) > MAX_DATA_BYTES:
        raise FrameError(f"frame data of {len(data)} bytes is over the {MAX_DATA_BYTES}-byte cap")
    return HEADER.pack(MAGIC, VERSION, kind, len(meta), len(data)) + meta + data


def parse_header(header: bytes) -> tuple[int, int, int]:
    """(kind, meta_len, data_len) of a HEADER_BYTES-long header, or FrameError saying what is wrong."""
    magic, version, kind, meta_len, data_len = HEADER.unpack(header)
    if magic != MAGIC:
        raise FrameError(f"bad frame magic {magic!r} (expected {MAGIC!r}): the peer does not speak this protocol")
    if version != VERSION:
        raise FrameError(f"frame version {version}, this side speaks {VERSION}: install the same tallylight on both")
    if meta_len > MAX_META_BYTES:
        raise FrameError(f"frame meta_len {meta_len} is over the {MAX_META_BYTES}-byte cap")
    if data_len > MAX_DATA_BYTES:
        raise FrameError(f"frame data_len {data_len} is over the {MAX_DATA_BYTES}-byte cap")
    return kind, meta_len, data_len


class FrameSplitter:
    """Cuts a byte stream into frames; push bytes in with `feed`, take whole frames out.

    A plain step with no I/O: the caller reads without blocking and feeds whatever arrived, so a peer that
    sends half a frame and stalls only leaves those bytes here (at most MAX_FRAME_BYTES), it blocks nobody.
    After a FrameError the splitter stays broken (every later feed raises it again): the stream is lost.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need: tuple[int, int, int] | None = None  # the current frame's parsed header
        self._broken: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (never more than MAX_FRAME_BYTES)."""
        return len(self._buf)

    @property
    def partial(self) -> bool:
        return bool(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken is not None:
            raise self._broken
        frames: list[Frame] = []
        view = memoryview(data)
        while view:
            # Take only what the current frame still needs, so the buffer never exceeds one frame.
            want = self._wanted() - len(self._buf)
            self._buf += view[:want]
            view = view[want:]
            if len(self._buf) < self._wanted():
                break
            if self._need is None:
                try:
                    self._need = parse_header(bytes(self._buf[:HEADER_BYTES]))
                except FrameError as e:
                    self._broken = e
                    self._buf.clear()
                    raise
                if self._wanted() > len(self._buf):
                    continue
            kind, meta_len, data_len = self._need
            body = bytes(self._buf[HEADER_BYTES:])
            frames.append(Frame(kind, body[:meta_len], body[meta_len:meta_len + data_len]))
            self._buf.clear()
            self._need = None
        return frames

    def _wanted(self) -> int:
        if self._need is None:
            return HEADER_BYTES
        return HEADER_BYTES + self._need[1] + self._need[2]
