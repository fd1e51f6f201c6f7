"""The one audio format inside tallylight: 16 kHz, mono, signed 16-bit little-endian."""

RATE = 16000
BYTES_PER_SAMPLE = 2
BYTES_PER_SECOND = RATE * BYTES_PER_SAMPLE


def block_bytes(block_ms: int) -> int:
    return RATE * block_ms // 1000 * BYTES_PER_SAMPLE
