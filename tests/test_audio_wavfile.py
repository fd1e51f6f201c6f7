"""WAV files in: WavFileSource, read_wav_16k_mono, and a clear AudioFileError for every broken file."""

import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tallylight.audio.wavfile import WavFileSource, read_wav_16k_mono, read_wav_info
from tallylight.errors import AudioFileError
from testkit import speech
from testkit.audio_rigs import interleave, tone


def samples(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<i2")


def write_wav(path: Path, frames: np.ndarray, rate: int, width: int = 2) -> Path:
    """A plain PCM WAV with Python's wave module (frames: int16 (n,) or (n, channels))."""
    frames = frames.reshape(len(frames), -1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(frames, dtype="<i2").tobytes())
    return path


def riff(fmt: bytes | None, data: bytes | None, data_size: int | None = None, extra: bytes = b"") -> bytes:
    """Build a RIFF/WAVE file by hand: fmt chunk body, extra chunks, data chunk (size may lie)."""
    body = b"WAVE"
    if fmt is not None:
        body += b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += extra
    if data is not None:
        body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(tag=1, channels=1, rate=16000, bits=16) -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)


def test_16k_mono_file_reads_back_bit_exact_in_blocks(tmp_path):
    x = (np.arange(16000 + 100) % 2000 - 1000).astype(np.int16)
    path = write_wav(tmp_path / "a.wav", x, 16000)
    with WavFileSource(path, block_ms=20) as src:
        assert src.block_samples == 320
        assert src.duration_s == pytest.approx(16100 / 16000)
        blocks = []
        while block := src.read():
            blocks.append(block)
        assert src.read() == b""
    assert all(len(b) == 640 for b in blocks)
    assert len(blocks) == 51  # 16100 samples -> 50 full blocks + 1 padded
    out = samples(b"".join(blocks))
    assert out[:16100].tolist() == x.tolist()
    assert not out[16100:].any()  # zero padding
    assert read_wav_16k_mono(path) == x.tobytes()


@pytest.mark.parametrize("rate,channels,bits", [(48000, 6, 24), (44100, 2, 16), (8000, 1, 8), (22050, 4, 32)])
def test_sox_files_of_any_rate_channels_and_width(tmp_path, rate, channels, bits):
    """sox writes WAVE_FORMAT_EXTENSIBLE for >2 channels or >16 bits: Python 3.11's wave refuses those."""
    path = tmp_path / f"t{rate}.wav"
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", str(channels), "-b", str(bits), str(path), "synth", "1.0", "sine", "1000",
         "vol", "0.5"],
        check=True,
    )
    info = read_wav_info(path)
    assert (info.rate, info.channels, info.sample_width, info.frames) == (rate, channels, bits // 8, rate)
    out = samples(read_wav_16k_mono(path))
    assert abs(len(out) - 16000) <= 2
    mid = out[2000:14000].astype(np.float64)
    spec = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    assert abs(np.argmax(spec) * 16000 / len(mid) - 1000) < 3
    assert 0.45 * 32768 < np.max(np.abs(mid)) < 0.55 * 32768
    with WavFileSource(path, block_ms=30) as src:
        got = b"".join(iter(src.read, b""))
    assert len(got) == 480 * 2 * int(np.ceil(len(out) / 480))
    # Streamed in blocks vs. in one go: soxr rounds differently at chunk edges, by at most an LSB or so.
    diff = samples(got[: len(out) * 2]).astype(np.int32) - out
    assert np.max(np.abs(diff)) <= 2


def test_channel_modes_on_a_stereo_file(tmp_path):
    left, right = tone(300, 0.5, amplitude=1000), tone(300, 0.5, amplitude=9000)
    path = write_wav(tmp_path / "st.wav", interleave(left, right), 16000)
    assert samples(read_wav_16k_mono(path, "single", 0)).tolist() == left.tolist()
    assert samples(read_wav_16k_mono(path, "loudest")).tolist() == right.tolist()
    mean = np.round((left.astype(np.int32) + right) / 2).astype(np.int16)
    assert samples(read_wav_16k_mono(path)).tolist() == mean.tolist()
    with pytest.raises(AudioFileError, match="channel"):
        WavFileSource(path, channel_mode="single", channel=2).open()


def test_espeak_speech_survives_conversion(tmp_path, synth):
    path = synth("okay nabu", rate=22050, channels=2)
    out = samples(read_wav_16k_mono(path))
    assert abs(len(out) / 16000 - speech.duration(path)) < 0.01
    assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) > 300  # speech, not silence


def _bad_files(tmp: Path) -> dict[str, tuple[bytes, str]]:
    pcm = bytes(3200)
    return {
        "empty.wav": (b"", "empty"),
        "header_only.wav": (riff(fmt_chunk(), None), "no audio"),
        "zero_data.wav": (riff(fmt_chunk(), b""), "no audio"),
        "not_riff.wav": (b"hello, this is text" * 10, "not a WAV"),
        "speech.raw": (pcm, "not a WAV"),
        "float.wav": (riff(fmt_chunk(tag=3, bits=32), pcm), "floating-point"),
        "mulaw.wav": (riff(fmt_chunk(tag=7, bits=8), pcm), "mu-law"),
        "zero_channels.wav": (riff(struct.pack("<HHIIHH", 1, 0, 16000, 32000, 2, 16), pcm), "0 channels"),
        "absurd_rate.wav": (riff(fmt_chunk(rate=5_000_000), pcm), "sample rate"),
        "truncated.wav": (riff(fmt_chunk(), pcm, data_size=64000), "cut short"),
        "fmt_damaged.wav": (riff(fmt_chunk(), pcm)[:20] + b"\xff\xff", "damaged"),
        "riff_only.wav": (b"RIFF", "not a WAV"),
        "no_fmt.wav": (riff(None, pcm), "before the 'fmt ' chunk"),
        "bad_width.wav": (riff(struct.pack("<HHIIHH", 1, 1, 16000, 80000, 5, 40), pcm), "not supported"),
        "huge_chunk.wav": (riff(fmt_chunk(), None, extra=b"JUNK" + struct.pack("<I", 10**9)), "damaged"),
        "rf64.wav": (b"RF64" + bytes(40), "RF64"),
        "flac_renamed.wav": (b"fLaC\x00\x00\x00\x22" + bytes(40), "is FLAC audio, not WAV; convert it"),
        "mp3_renamed.wav": (b"ID3\x04\x00" + bytes(40), "is MP3 audio"),
        "ogg_renamed.wav": (b"OggS\x00\x02" + bytes(40), "is Ogg audio"),
    }


@pytest.mark.parametrize("name", sorted(_bad_files(Path("."))))
def test_broken_files_give_one_line_errors(tmp_path, name):
    content, expected = _bad_files(tmp_path)[name]
    path = tmp_path / name
    path.write_bytes(content)
    for load in (read_wav_info, read_wav_16k_mono, lambda p: WavFileSource(p).open()):
        with pytest.raises(AudioFileError) as e:
            load(path)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg and expected in msg


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(AudioFileError, match="no such file"):
        read_wav_info(tmp_path / "nope.wav")
    with pytest.raises(AudioFileError, match="folder"):
        WavFileSource(tmp_path).open()


def test_odd_chunks_before_data_are_skipped(tmp_path):
    x = np.arange(101, dtype=np.int16)
    # An odd-length LIST chunk carries a pad byte; the data chunk comes after it.
    content = riff(fmt_chunk(), x.tobytes(), extra=b"LIST" + struct.pack("<I", 3) + b"abc\x00")
    path = tmp_path / "chunks.wav"
    path.write_bytes(content)
    assert read_wav_16k_mono(path) == x.tobytes()


def test_read_before_open_and_close_twice(tmp_path):
    src = WavFileSource(write_wav(tmp_path / "a.wav", np.zeros(10, np.int16), 16000))
    with pytest.raises(AudioFileError, match="open"):
        src.read()
    src.open()
    assert src.is_open
    src.close()
    src.close()
    assert not src.is_open


def test_shared_bad_files_give_clear_errors(shared_speech):
    bad = sorted((shared_speech / "pocketsphinx" / "bad").glob("*.wav"))
    assert len(bad) >= 4
    for path in bad:
        try:
            out = read_wav_16k_mono(path)
        except AudioFileError as e:
            assert "\n" not in str(e) and path.name in str(e)
        else:  # handled: then it must have given real audio
            assert len(out) > 0


def test_shared_raw_file_is_not_a_wav(shared_speech):
    with pytest.raises(AudioFileError, match="not a WAV.*sox -t raw"):
        read_wav_info(shared_speech / "pocketsphinx" / "goforward.raw")


def test_shared_real_speech_reads(shared_speech):
    path = shared_speech / "vosk" / "test.wav"
    with WavFileSource(path) as src:
        n = sum(1 for _ in iter(src.read, b""))
    assert n == int(np.ceil(src.duration_s * 16000 / 320))
