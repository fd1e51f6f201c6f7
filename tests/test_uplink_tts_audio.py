"""The uplink's WAV decoder (tts_audio): the encodings Home Assistant's TTS engines write, streamed WAVs
whose header has no sizes, and everything else refused with one line; out comes 16 kHz mono s16le."""

import struct

import numpy as np
import pytest

from tallylight.uplink import tts_audio
from tallylight.uplink.messages import MAX_PCM_BYTES
from tallylight.uplink.tts_audio import AudioFormatError
from testkit.fake_home_assistant import wav_bytes


def riff(fmt_tag: int, channels: int, rate: int, bits: int, data: bytes, *, data_size: int | None = None,
         extensible: bool = False) -> bytes:
    width = bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else fmt_tag, channels, rate, rate * channels * width,
                      channels * width, bits)
    if extensible:
        sub = struct.pack("<H", fmt_tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, bits, 0) + sub
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF if data_size is not None else len(body)) + body


def tone(rate: int, seconds: float = 0.5) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * 300 * np.arange(int(rate * seconds)) / rate)


def peak_hz(pcm: bytes) -> float:
    x = np.frombuffer(pcm, "<i2").astype(float)
    return np.argmax(np.abs(np.fft.rfft(x))) * 16000 / len(x)


@pytest.mark.parametrize("encode", [
    lambda x: riff(1, 1, 24000, 16, (x * 32767).astype("<i2").tobytes()),
    lambda x: riff(1, 1, 24000, 8, (x * 127 + 128).astype(np.uint8).tobytes()),
    lambda x: riff(1, 1, 24000, 24, b"".join(int(v).to_bytes(3, "little", signed=True) for v in x * 8388607)),
    lambda x: riff(1, 1, 24000, 32, (x * 2147483647).astype("<i4").tobytes()),
    lambda x: riff(3, 1, 24000, 32, x.astype("<f4").tobytes()),
    lambda x: riff(1, 2, 24000, 16, np.repeat((x * 32767).astype("<i2"), 2).tobytes(), extensible=True),
    # Streamed through a pipe (Home Assistant's ffmpeg): no sizes in the header, the data runs to the end.
    lambda x: riff(1, 1, 24000, 16, (x * 32767).astype("<i2").tobytes(), data_size=0xFFFFFFFF),
    lambda x: riff(1, 1, 24000, 16, (x * 32767).astype("<i2").tobytes(), data_size=0),
])
def test_each_wav_encoding_becomes_the_same_16k_tone(encode):
    pcm = tts_audio.to_pcm16k(encode(tone(24000)))
    assert len(pcm) == pytest.approx(0.5 * 16000 * 2, abs=4)
    assert abs(peak_hz(pcm) - 300) < 3
    assert np.abs(np.frombuffer(pcm, "<i2")).max() == pytest.approx(0.5 * 32767, rel=0.03)


@pytest.mark.parametrize("data, words", [
    (b"ID3\x04" + b"\0" * 100, "is mp3, not WAV"),
    (b"\xff\xfb\x90\x00" + b"\0" * 100, "is mp3, not WAV"),
    (b"fLaC" + b"\0" * 100, "is flac, not WAV"),
    (b"<html>", "is unknown, not WAV"),
    (riff(2, 1, 22050, 4, b"\0" * 100), "format 2, 4 bits) is not PCM"),  # ADPCM
    (riff(1, 1, 1000, 16, b"\0" * 100), "rate is 1000 Hz"),
    (riff(1, 0, 22050, 16, b"\0" * 100), "has 0 channels"),
    (b"RIFF\0\0\0\0WAVEdata\x04\0\0\0\0\0\0\0", "data before its fmt"),
    (b"RIFF\0\0\0\0WAVEfmt \x02\0\0\0\0\0", "fmt chunk is too short"),
])
def test_what_is_not_usable_wav_is_one_line_naming_it(data, words):
    with pytest.raises(AudioFormatError, match=words.replace("(", r"\(").replace(")", r"\)")):
        tts_audio.to_pcm16k(data)


def test_a_header_claiming_hours_gives_at_most_max_seconds():
    long = riff(1, 1, 8000, 16, b"\0\1" * int(8000 * (tts_audio.MAX_SECONDS + 5)))
    assert len(tts_audio.to_pcm16k(long)) == int(tts_audio.MAX_SECONDS * 16000) * 2


def test_blocks_are_whole_samples_in_order_within_the_protocols_bound():
    pcm = tts_audio.to_pcm16k(wav_bytes(2.0))
    parts = tts_audio.blocks(pcm)
    assert b"".join(parts) == pcm and all(len(p) % 2 == 0 and len(p) <= MAX_PCM_BYTES for p in parts)
    assert tts_audio.blocks(b"") == []


def test_what_home_assistant_sends_when_asked_passes_through_byte_for_byte():
    """16 kHz mono 16-bit (what wav_url asks for) is what the socket carries: no conversion, no rounding,
    and a header claiming more than MAX_SECONDS is still cut there."""
    pcm = np.random.default_rng(3).integers(-32768, 32768, 16000, dtype="<i2").tobytes()
    assert tts_audio.to_pcm16k(riff(1, 1, 16000, 16, pcm)) == pcm
    assert tts_audio.to_pcm16k(riff(1, 1, 16000, 16, pcm + b"\x01")) == pcm  # half a sample is dropped
    long = riff(1, 1, 16000, 16, b"\0\1" * int(16000 * (tts_audio.MAX_SECONDS + 1)))
    assert len(tts_audio.to_pcm16k(long)) == int(tts_audio.MAX_SECONDS * 16000) * 2


def test_the_uplink_loads_no_numpy_until_a_reply_needs_converting(repo):
    """numpy and soxr are about 18 MiB of the uplink's memory (scripts/bench table 11): the uplink's
    modules, and the config it loads (with its checks), do not import them, and a reply Home Assistant
    converted as asked does not either."""
    import subprocess
    import sys

    code = ("import sys, struct\n"
            "import tallylight.uplink.main, tallylight.uplink.mdns\n"
            f"from tallylight import config; config.load({str(repo / 'config' / 'tallylight.toml')!r})\n"
            "from tallylight.uplink import tts_audio\n"
            "pcm = bytes(3200)\n"
            "fmt = struct.pack('<HHIIHH', 1, 1, 16000, 32000, 2, 16)\n"
            "wav = b'RIFF' + struct.pack('<I', 36 + len(pcm)) + b'WAVEfmt ' + struct.pack('<I', 16) + fmt"
            " + b'data' + struct.pack('<I', len(pcm)) + pcm\n"
            "assert tts_audio.to_pcm16k(wav) == pcm\n"
            "print(sorted(m for m in ('numpy', 'soxr') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
