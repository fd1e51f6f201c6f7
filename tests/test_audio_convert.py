"""BlockConverter / Reblocker / to_s16: pure conversion to 16 kHz mono s16le."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallylight.audio.convert import BlockConverter, Reblocker, to_s16
from tallylight.pcm import block_bytes
from testkit.audio_rigs import interleave, tone


def pcm(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<i2").tobytes()


def samples(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<i2")


def peak_hz(x: np.ndarray, rate: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def feed(conv: BlockConverter, raw: bytes, cuts: list[int]) -> bytes:
    out, pos = [], 0
    for cut in sorted(set(c % (len(raw) + 1) for c in cuts)) + [len(raw)]:
        out.append(conv.process(raw[pos:cut]))
        pos = cut
    return b"".join(out) + conv.flush()


def test_16k_mono_passes_through_untouched():
    x = pcm(np.arange(-500, 500, dtype=np.int16) * 31)
    conv = BlockConverter(16000, 1)
    assert conv.passthrough
    assert conv.process(x) == x
    assert conv.flush() == b""


def test_mean_single_and_loudest_on_known_samples():
    a = np.array([100, -200, 300, 32767], dtype=np.int16)
    b = np.array([300, 200, -301, 32767], dtype=np.int16)
    c = np.array([-1000, 4000, 9000, -32768], dtype=np.int16)
    raw = pcm(interleave(a, b, c))
    # mean: (100+300-1000)/3 = -200, (-200+200+4000)/3 = 1333.3, (300-301+9000)/3 = 2999.67, 10922.3
    assert samples(BlockConverter(16000, 3, "mean").process(raw)).tolist() == [-200, 1333, 3000, 10922]
    assert samples(BlockConverter(16000, 3, "single", 1).process(raw)).tolist() == b.tolist()
    # loudest: c has by far the most power (the 32767s in a and b are matched by c's -32768).
    quiet = pcm(interleave(a[:3], b[:3], c[:3]))
    assert samples(BlockConverter(16000, 3, "loudest").process(quiet)).tolist() == c[:3].tolist()


def test_mean_of_full_scale_channels_does_not_overflow():
    full = np.full(64, 32767, dtype=np.int16)
    raw = pcm(interleave(full, full, full, full, full, full))
    assert set(samples(BlockConverter(16000, 6).process(raw)).tolist()) == {32767}


def test_loudest_follows_the_loudest_channel_block_by_block_with_hysteresis():
    conv = BlockConverter(16000, 4, "loudest")
    quiet, loud = tone(400, 0.02, amplitude=500), tone(400, 0.02, amplitude=8000)
    silent = np.zeros_like(quiet)
    conv.process(pcm(interleave(quiet, quiet, loud, quiet)))
    assert conv.loudest_channel == 2
    conv.process(pcm(interleave(loud, quiet, quiet, quiet)))
    assert conv.loudest_channel == 0
    # Channel 3 only 0.5 dB louder than channel 0: not enough to switch (no flapping).
    nearly = (loud.astype(np.float64) * 10 ** (0.5 / 20)).astype(np.int16)
    out = conv.process(pcm(interleave(loud, silent, silent, nearly)))
    assert conv.loudest_channel == 0
    assert samples(out).tolist() == loud.tolist()
    conv.reset()
    assert conv.loudest_channel == 0


@pytest.mark.parametrize("rate", [48000, 44100, 22050, 8000])
def test_resampled_tone_keeps_its_pitch_and_length(rate):
    x = tone(1000, 1.0, rate)
    conv = BlockConverter(rate, 1)
    out = samples(conv.process(pcm(x)) + conv.flush())
    assert abs(len(out) - 16000) <= 2
    assert abs(peak_hz(out[2000:14000]) - 1000) < 3
    # Amplitude survives the resampler (within 1 %), away from the edges.
    assert abs(np.max(np.abs(out[2000:14000])) - 8000) < 80


def test_48k_six_channels_mixed_then_resampled():
    chans = [tone(1000, 0.5, 48000, amplitude=6000) for _ in range(6)]
    conv = BlockConverter(48000, 6)
    out = samples(conv.process(pcm(interleave(*chans))) + conv.flush())
    assert abs(len(out) - 8000) <= 2
    assert abs(peak_hz(out[1000:7000]) - 1000) < 3


def test_partial_frames_are_kept_for_the_next_chunk():
    x = pcm(interleave(np.arange(10, dtype=np.int16), -np.arange(10, dtype=np.int16)))
    conv = BlockConverter(16000, 2, "single", 1)
    out = conv.process(x[:3]) + conv.process(x[3:7]) + conv.process(x[7:])
    assert samples(out).tolist() == (-np.arange(10)).tolist()


def test_reset_drops_held_samples_and_resampler_state():
    conv = BlockConverter(48000, 1)
    conv.process(pcm(tone(1000, 0.1, 48000)) + b"\x01")
    conv.reset()
    assert conv.flush() == b""  # nothing held any more


@pytest.mark.parametrize(
    "args",
    [(0, 1), (16000, 0), (16000, 2, "loud"), (16000, 2, "single", 2), (16000.5, 1), (10**6, 1)],
)
def test_bad_arguments_are_refused(args):
    with pytest.raises(ValueError):
        BlockConverter(*args)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.integers(-32768, 32767), min_size=0, max_size=600),
    channels=st.sampled_from([1, 2, 4, 6]),
    mode=st.sampled_from(["mean", "single"]),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_chunk_splits_do_not_change_16k_output(data, channels, mode, cuts):
    n = len(data) // channels * channels
    raw = pcm(np.array(data[:n], dtype=np.int16))
    whole = feed(BlockConverter(16000, channels, mode, channels - 1), raw, [])
    split = feed(BlockConverter(16000, channels, mode, channels - 1), raw, cuts)
    assert split == whole
    assert len(whole) == len(raw) // channels


@settings(max_examples=25, deadline=None)
@given(
    rate=st.sampled_from([48000, 44100, 32000, 8000]),
    channels=st.sampled_from([1, 2, 6]),
    frames=st.integers(100, 6000),
    cuts=st.lists(st.integers(0, 80000), max_size=10),
    seed=st.integers(0, 2**16),
)
def test_chunk_splits_of_resampled_input_give_the_same_length(rate, channels, frames, cuts, seed):
    rng = np.random.default_rng(seed)
    raw = pcm(rng.integers(-8000, 8000, size=frames * channels).astype(np.int16))
    whole = feed(BlockConverter(rate, channels), raw, [])
    split = feed(BlockConverter(rate, channels), raw, cuts)
    expected = frames * 16000 / rate
    assert abs(len(whole) // 2 - expected) <= 2
    assert abs(len(split) // 2 - len(whole) // 2) <= 2


def test_to_s16_widths():
    assert to_s16(bytes([0, 128, 255]), 1) == pcm(np.array([-32768, 0, 127 << 8], dtype=np.int16))
    # 24-bit LE 0x123456 -> top 16 bits 0x1234; -1 (0xffffff) -> -1
    assert samples(to_s16(bytes([0x56, 0x34, 0x12, 0xFF, 0xFF, 0xFF]), 3)).tolist() == [0x1234, -1]
    assert samples(to_s16(np.array([0x12345678, -65536], dtype="<i4").tobytes(), 4)).tolist() == [0x1234, -1]
    assert to_s16(b"\x01\x02", 2) == b"\x01\x02"
    with pytest.raises(ValueError):
        to_s16(b"", 5)


def test_reblocker_cuts_exact_blocks_and_keeps_the_rest():
    r = Reblocker(4)
    assert r.process(b"abc") == []
    assert r.process(b"defghij") == [b"abcd", b"efgh"]
    assert r.pending == 2
    r.feed(b"kl")
    assert r.pop() == b"ijkl"
    assert r.pop() is None
    r.feed(b"x")
    assert r.flush(pad=True) == b"x\x00\x00\x00"
    assert r.flush() == b""
    r.feed(b"yy")
    r.reset()
    assert r.pending == 0
    with pytest.raises(ValueError):
        Reblocker(0)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), n=st.integers(1, 40), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_reblocker_any_split_gives_the_same_blocks(data, n, cuts):
    r, out, pos = Reblocker(n), [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        out += r.process(data[pos:cut])
        pos = cut
    assert all(len(b) == n for b in out)
    assert b"".join(out) + r.flush() == data


def test_block_bytes():
    assert block_bytes(20) == 640
