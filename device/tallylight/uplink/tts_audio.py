"""Speech audio from Home Assistant made ready for the daemon: WAV bytes in, 16 kHz mono s16le blocks out.

Only WAV is decoded, by a small RIFF reader of our own (PCM 8/16/24/32-bit integers and 32-bit float,
plain or WAVE_FORMAT_EXTENSIBLE). MP3 and FLAC would need a decoder that the uplink's sandbox does not
have (no ffmpeg or sox in it, and nothing may be downloaded at run time), so the uplink asks Home
Assistant for WAV instead (`home_assistant.HomeAssistantClient.wav_url`), and Home Assistant converts.

A WAV written to a pipe (Home Assistant's ffmpeg conversion streams it) has no real sizes in its header:
the RIFF and data lengths are 0 or 0xFFFFFFFF. The data then runs to the end of the file, which is
what is read here (`wave` in Python 3.11 would read no frames from such a file).

Bounded: at most `MAX_SECONDS` of audio come out of one file, whatever its header claims.

numpy and soxr are imported only for a WAV that needs converting: they are about 18 MiB of the
uplink's memory, and what Home Assistant sends when asked (16 kHz mono 16-bit) is already what the
socket carries, so the usual reply passes through untouched and the uplink stays small.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tallylight.errors import TallylightError
from tallylight.uplink.messages import MAX_PCM_BYTES, PCM_RATE

if TYPE_CHECKING:
    import numpy as np

MAX_SECONDS = 120.0  # a long weather report is under a minute; more is a mistake or an attack
BLOCK_BYTES = MAX_PCM_BYTES // 2  # 0.512 s a ReplyAudio: small enough to start playing soon
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
_KSDATAFORMAT_PCM = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_KSDATAFORMAT_FLOAT = b"\x03\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


class AudioFormatError(TallylightError):
    """The speech audio cannot be used (not WAV, an encoding we do not decode, a broken header)."""


def sniff(data: bytes) -> str:
    """What the bytes look like: "wav", "mp3", "flac", "ogg" or "unknown" (for the log line)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    return "unknown"


def _chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(id, offset of its body, declared size) of each RIFF chunk after the WAVE header."""
    pos = 12
    while pos + 8 <= len(data):
        cid, size = struct.unpack_from("<4sI", data, pos)
        yield cid, pos + 8, size
        pos += 8 + size + (size & 1)


def _wav_data(data: bytes) -> tuple[bytes, int, int, int, int]:
    """The checked sample bytes (at most MAX_SECONDS, whole frames) and (tag, channels, rate, bits).
    AudioFormatError says what is wrong."""
    kind = sniff(data)
    if kind != "wav":
        raise AudioFormatError(f"the speech audio is {kind}, not WAV (only WAV is decoded here)")
    fmt: tuple[int, int, int, int] | None = None
    for cid, body, size in _chunks(data):
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise AudioFormatError("the WAV's fmt chunk is too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == _EXTENSIBLE:
                if size < 40 or body + 40 > len(data):
                    raise AudioFormatError("the WAV's extensible fmt chunk is too short")
                sub = data[body + 24:body + 40]
                tag = _PCM if sub == _KSDATAFORMAT_PCM else _FLOAT if sub == _KSDATAFORMAT_FLOAT else -1
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                raise AudioFormatError("the WAV has its data before its fmt chunk")
            # 0 and 0xFFFFFFFF are the sizes of a WAV streamed through a pipe: the data runs to the end.
            end = len(data) if size in (0, 0xFFFFFFFF) else min(body + size, len(data))
            return _checked(data[body:end], *fmt)
    raise AudioFormatError("the WAV has no fmt or no data chunk")


def _checked(raw: bytes, tag: int, channels: int, rate: int, bits: int) -> tuple[bytes, int, int, int, int]:
    if not 1 <= channels <= 8:
        raise AudioFormatError(f"the WAV has {channels} channels (1-8 are decoded)")
    if not 8000 <= rate <= 192000:
        raise AudioFormatError(f"the WAV's rate is {rate} Hz (8000-192000 are decoded)")
    width = bits // 8
    if not ((tag == _PCM and bits in (8, 16, 24, 32)) or (tag == _FLOAT and bits == 32)):
        raise AudioFormatError(f"the WAV's encoding (format {tag}, {bits} bits) is not PCM or 32-bit float")
    frame = width * channels
    frames = min(len(raw) // frame, int(MAX_SECONDS * rate))
    return raw[:frames * frame], tag, channels, rate, bits


def _samples(raw: bytes, tag: int, channels: int, rate: int, bits: int) -> tuple[np.ndarray, int]:
    """float32 samples of checked WAV data, mixed to mono, and their rate."""
    import numpy as np

    width = bits // 8
    if tag == _FLOAT:
        x = np.frombuffer(raw, "<f4").astype(np.float32)
    elif width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    else:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    x = x.reshape(-1, channels).mean(axis=1) if channels > 1 else x
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), rate


def to_pcm16k(data: bytes) -> bytes:
    """A WAV file's audio as s16le mono at the socket's rate (messages.PCM_RATE)."""
    raw, tag, channels, rate, bits = _wav_data(data)
    if (tag, channels, rate, bits) == (_PCM, 1, PCM_RATE, 16):
        return raw  # already what the socket carries (WAV is little-endian, as s16le is)
    import numpy as np
    import soxr

    x, rate = _samples(raw, tag, channels, rate, bits)
    if rate != PCM_RATE and len(x):
        x = soxr.resample(x, rate, PCM_RATE, quality="HQ")
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def blocks(pcm: bytes, size: int = BLOCK_BYTES) -> list[bytes]:
    """The PCM cut into ReplyAudio-sized pieces (even sizes: whole samples), in order."""
    size -= size % 2
    return [pcm[i:i + size] for i in range(0, len(pcm), size)]
