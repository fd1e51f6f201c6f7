"""WAV files in: any rate, any channel count, 8/16/24/32-bit integer PCM -> 16 kHz mono s16le.

The RIFF header is parsed here rather than with Python's `wave` module: on Python 3.11 `wave`
rejects WAVE_FORMAT_EXTENSIBLE, which sox and most recorders write for every 24-bit or
more-than-2-channel file, and its errors on a damaged header are bare (`RuntimeError()` with no
message, or `EOFError`). Every problem becomes an `AudioFileError` naming the file and the fix.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tallylight.audio.convert import BlockConverter, Reblocker, to_s16
from tallylight.choices import ChannelMode
from tallylight.errors import AudioFileError
from tallylight.pcm import RATE

log = logging.getLogger(__name__)

_FIX = f"convert it with: sox in.wav -r {RATE} -c 1 -b 16 out.wav"
_REDO = "record or export the audio again"
_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_KNOWN_CODECS = {
    0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10", 0x0055: "MP3", 0x00FF: "AAC", 0x2000: "AC-3",
}
_MIN_RATE, _MAX_RATE = 1000, 768000
_MAX_CHANNELS = 64


@dataclass(frozen=True)
class WavInfo:
    """What a WAV header says, checked against the file's real size."""

    path: Path
    rate: int
    channels: int
    sample_width: int  # bytes per sample in the file (1, 2, 3 or 4)
    frames: int
    data_offset: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate


def read_wav_info(path: str | os.PathLike) -> WavInfo:
    """Parse and check a WAV header. Raises AudioFileError with one line on anything we cannot read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return _parse(path, f, size)
    except FileNotFoundError:
        raise AudioFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AudioFileError(f"{path}: is a folder, not a WAV file") from None
    except PermissionError:
        raise AudioFileError(f"{path}: not readable by this user (check its permissions)") from None
    except OSError as e:
        raise AudioFileError(f"{path}: cannot be read ({e.strerror or e})") from None


def _other_format(head: bytes) -> str | None:
    """The audio format a non-WAV file's first bytes announce, for a fix that fits (else None)."""
    if head.startswith(b"fLaC"):
        return "FLAC audio"
    if head.startswith(b"OggS"):
        return "Ogg audio (Vorbis or Opus)"
    # An MPEG frame header: 11 sync bits, a layer (not 00) and a bitrate index (not 1111).
    if head.startswith(b"ID3") or (len(head) > 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
                                   and head[1] & 0x06 and head[2] & 0xF0 != 0xF0):
        return "MP3 audio"
    if head[4:8] == b"ftyp":
        return "MP4/M4A audio"
    if head.startswith((b"FORM", b".snd")):
        return "AIFF or AU audio"
    return None


def _parse(path: Path, f: BinaryIO, size: int) -> WavInfo:
    def bad(what: str) -> AudioFileError:
        return AudioFileError(f"{path}: {what}")

    if size == 0:
        raise bad(f"is empty (0 bytes); {_REDO}")
    head = f.read(12)
    if head[:4] in (b"RIFX", b"RF64", b"BW64"):
        raise bad(f"is a {head[:4].decode()} WAV variant, which is not supported; {_FIX}")
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        if head[:4] == b"RIFF":
            raise bad(f"is a RIFF file but not a WAV (type {head[8:12]!r}); {_FIX}")
        kind = _other_format(head)
        if kind:
            raise bad(f"is {kind}, not WAV; convert it: ffmpeg -i {path.name} -ar {RATE} -ac 1 out.wav "
                      "(or sox, for FLAC and Ogg)")
        raise bad(
            "is not a WAV file (no RIFF/WAVE header); if it is raw 16 kHz mono 16-bit audio, wrap it with: "
            f"sox -t raw -r {RATE} -e signed -b 16 -c 1 in.raw out.wav"
        )

    fmt: bytes | None = None
    pos = 12
    while True:
        if pos + 8 > size:
            if fmt is None:
                raise bad(f"has no 'fmt ' chunk (the header is damaged or cut short); {_REDO}")
            raise bad(f"has no audio data (no 'data' chunk: the file holds a header only); {_REDO}")
        f.seek(pos)
        cid, csize = struct.unpack("<4sI", f.read(8))
        body = pos + 8
        name = cid.decode("latin-1")
        if cid == b"fmt ":
            if csize < 16 or body + csize > size:
                raise bad(
                    f"the 'fmt ' chunk is damaged (says {csize} bytes, the file has {size}): the header is broken; {_REDO}"
                )
            fmt = f.read(csize)
        elif cid == b"data":
            if fmt is None:
                raise bad(f"the 'data' chunk comes before the 'fmt ' chunk: the header is damaged; {_REDO}")
            info = _check_fmt(path, fmt, bad)
            rate, channels, width, align = info
            have = size - body
            if csize > have:
                raise bad(
                    f"is cut short: its data chunk says {csize} bytes but only {have} are there; "
                    "repair it with: sox --ignore-length in.wav out.wav"
                )
            frames = csize // align
            if frames == 0:
                raise bad(f"has no audio (its data chunk is empty: a header only); {_REDO}")
            if csize % align:
                log.debug("%s: %d stray bytes after the last whole frame ignored", path, csize % align)
            return WavInfo(path, rate, channels, width, frames, body)
        elif body + csize > size:
            raise bad(
                f"the header is damaged: chunk '{name}' says {csize} bytes but the file has only {size}, "
                f"and no audio data was found before it; {_REDO}"
            )
        pos = body + csize + (csize & 1)  # chunks are padded to an even length


def _check_fmt(path: Path, fmt: bytes, bad) -> tuple[int, int, int, int]:
    """(rate, channels, sample width in bytes, bytes per frame) from a 'fmt ' chunk, or AudioFileError."""
    tag, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the first two bytes of the sub-format GUID
    if tag == _FLOAT:
        raise bad(f"holds {bits}-bit floating-point samples, which are not supported; {_FIX}")
    if tag != _PCM:
        codec = _KNOWN_CODECS.get(tag, f"format 0x{tag:04x}")
        raise bad(f"is compressed ({codec}), not plain PCM; {_FIX}")
    if channels == 0:
        raise bad(f"says it has 0 channels: the header is damaged; {_REDO}")
    if channels > _MAX_CHANNELS:
        raise bad(f"says it has {channels} channels (at most {_MAX_CHANNELS} supported); {_FIX}")
    if not _MIN_RATE <= rate <= _MAX_RATE:
        hint = ""
        if align and byte_rate % align == 0 and _MIN_RATE <= byte_rate // align <= _MAX_RATE:
            hint = f" (its byte rate suggests {byte_rate // align} Hz)"
        raise bad(f"says its sample rate is {rate} Hz{hint}: the header is damaged; {_REDO}")
    width = align // channels if align % channels == 0 else 0
    if width not in (1, 2, 3, 4) or not 1 <= bits <= 8 * width:
        raise bad(f"has {bits}-bit samples in {align}-byte frames of {channels} channels, which is not supported; {_FIX}")
    return rate, channels, width, align


class WavFileSource:
    """A WAV file as an audio source: the same open()/read()/close()/block_samples contract as
    MicSource. `read()` returns exactly one block of 16 kHz mono s16le, the last one zero-padded,
    then b"" at the end."""

    def __init__(self, path: str | os.PathLike, block_ms: int = 20, channel_mode: str = ChannelMode.MEAN, channel: int = 0):
        if not isinstance(block_ms, int) or block_ms <= 0:
            raise ValueError(f"block_ms must be a positive integer, not {block_ms!r}")
        self.path = Path(path)
        self.block_ms = block_ms
        self.channel_mode = channel_mode
        self.channel = channel
        self.block_samples = RATE * block_ms // 1000
        self.info: WavInfo | None = None
        self._file: BinaryIO | None = None
        self._frames_left = 0
        self._converter: BlockConverter | None = None
        self._blocks = Reblocker(self.block_samples * 2)
        self._ended = False

    def open(self) -> None:
        """Parse the header (AudioFileError on anything unreadable) and get ready to read."""
        if self._file is not None:
            return
        info = read_wav_info(self.path)
        if self.channel_mode == ChannelMode.SINGLE and self.channel >= info.channels:
            raise AudioFileError(
                f"{self.path}: audio.channel = {self.channel}, but the file has {info.channels} "
                f"channel(s) (0-{info.channels - 1}): set audio.channel or use channel_mode 'mean'"
            )
        self._converter = BlockConverter(info.rate, info.channels, self.channel_mode, self.channel)
        self._file = open(self.path, "rb")  # noqa: SIM115 (read block by block until close())
        self._file.seek(info.data_offset)
        self.info = info
        self._frames_left = info.frames
        self._blocks.reset()
        self._ended = False

    @property
    def is_open(self) -> bool:
        return self._file is not None

    @property
    def duration_s(self) -> float:
        """Length of the file's audio in seconds (reads the header if not open yet)."""
        info = self.info or read_wav_info(self.path)
        return info.duration_s

    def read(self) -> bytes:
        """One block of 16 kHz mono s16le (block_samples * 2 bytes), or b"" at the end of the file."""
        if self._file is None or self._converter is None or self.info is None:
            raise AudioFileError(f"{self.path}: read() before open() (call open() or use `with`)")
        info = self.info
        # Read about one output block's worth of input at a time: bounded memory for long files.
        chunk_frames = max(1, info.rate * self.block_ms // 1000)
        while True:
            block = self._blocks.pop()
            if block is not None:
                return block
            if self._ended:
                return self._blocks.flush(pad=True)
            n = min(chunk_frames, self._frames_left)
            raw = self._file.read(n * info.channels * info.sample_width) if n else b""
            if n and len(raw) < n * info.channels * info.sample_width:
                # The header was checked against the size at open(); the file shrank since.
                raise AudioFileError(f"{self.path}: ended early while reading (was it changed while in use?)")
            self._frames_left -= n
            if raw:
                data = self._converter.process(to_s16(raw, info.sample_width))
                if self._frames_left and len(data) == self._blocks.n and not self._blocks.pending:
                    return data  # exactly one block and nothing held (a 16 kHz mono file): no re-cutting
                self._blocks.feed(data)
            if self._frames_left == 0:
                self._blocks.feed(self._converter.flush())
                self._ended = True

    def close(self) -> None:
        """Close the file; safe to call twice."""
        f, self._file = self._file, None
        if f is not None:
            f.close()
        self._blocks.reset()

    def __enter__(self) -> WavFileSource:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_wav_16k_mono(path: str | os.PathLike, channel_mode: str = ChannelMode.MEAN, channel: int = 0) -> bytes:
    """A whole WAV file converted to 16 kHz mono s16le (not padded). For tests and `listen`."""
    info = read_wav_info(path)
    if channel_mode == ChannelMode.SINGLE and channel >= info.channels:
        raise AudioFileError(f"{info.path}: channel {channel} does not exist (the file has {info.channels})")
    with open(info.path, "rb") as f:
        f.seek(info.data_offset)
        raw = f.read(info.frames * info.channels * info.sample_width)
    conv = BlockConverter(info.rate, info.channels, channel_mode, channel)
    return conv.process(to_s16(raw, info.sample_width)) + conv.flush()
