"""P4: the pre-roll ring is bounded (<= 2 s) and zeroed on wipe; the capture buffer is bounded."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallylight.capture import MAX_RING_S, CaptureBuffer, PrerollRing
from tallylight.pcm import BYTES_PER_SECOND


def test_ring_is_bounded_to_two_seconds():
    with pytest.raises(ValueError):
        PrerollRing(MAX_RING_S + 0.01)
    ring = PrerollRing(2.0)
    for _ in range(500):
        ring.push(b"\x01\x02" * 320)
    assert len(ring) == ring.capacity == 2 * BYTES_PER_SECOND


@given(st.lists(st.binary(min_size=0, max_size=3000).map(lambda b: b[: len(b) & ~1]), max_size=40),
       st.floats(0.0, 0.2))
def test_ring_tail_is_the_most_recent_audio(blocks, seconds):
    ring = PrerollRing(0.1)
    stream = b""
    for b in blocks:
        ring.push(b)
        stream += b
    n = min(len(stream), ring.capacity, int(seconds * BYTES_PER_SECOND) & ~1)
    assert ring.tail(seconds) == (stream[len(stream) - n:] if n else b"")


def test_wipe_zeroes_every_byte():
    ring = PrerollRing(0.5)
    ring.push(b"\x7f\x7f" * 5000)
    ring.wipe()
    assert ring.is_zeroed() and ring.tail(1) == b""
    buf = CaptureBuffer(1.0, 0.3)
    buf.append(b"\x55\x55" * 4000)
    assert buf.duration_s == 0.25
    buf.wipe()
    assert buf.is_zeroed()


def test_capture_buffer_is_bounded():
    buf = CaptureBuffer(1.0, 0.5)
    for _ in range(200):
        buf.append(b"\x01\x00" * 320)
    assert buf.full and len(buf) == int(1.5 * BYTES_PER_SECOND)
