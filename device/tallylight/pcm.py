"""The one audio format inside tallylight: 16 kHz, mono, signed 16-bit little-endian.

Every step after the audio source (wake word, VAD, capture, recognizers) takes this format; its
numbers are defined here only.
"""

RATE = 16000
BYTES_PER_SAMPLE = 2
BYTES_PER_SECOND = RATE * BYTES_PER_SAMPLE


def block_bytes(block_ms: int) -> int:
    """Bytes in one block of `block_ms` milliseconds."""
    return RATE * block_ms // 1000 * BYTES_PER_SAMPLE
