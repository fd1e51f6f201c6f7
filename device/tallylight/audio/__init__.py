"""Audio in: microphones (PyAudio) and WAV files, converted to 16 kHz mono s16le blocks.

- `convert`: pure conversion (`BlockConverter`, `Reblocker`, `to_s16`), no I/O.
- `device`: `MicSource`, device listing/choice (`list_input_devices`, `choose_device`,
  `devices_report`, `open_pyaudio`).
- `wavfile`: `WavFileSource`, `read_wav_16k_mono`, `read_wav_info`.

Both sources share one contract: `open()`, `read()` -> exactly `block_samples * 2` bytes (a
WavFileSource returns b"" at its end), `close()` (safe twice), `is_open`, and `with` support.
PyAudio is imported only when a microphone is opened, so files work without it.
"""

from tallylight.audio.convert import BlockConverter, Reblocker
from tallylight.audio.device import (
    InputDevice,
    MicSource,
    choose_device,
    devices_report,
    list_input_devices,
    open_pyaudio,
)
from tallylight.audio.wavfile import WavFileSource, read_wav_16k_mono, read_wav_info

__all__ = [
    "BlockConverter", "Reblocker", "InputDevice", "MicSource", "choose_device", "devices_report",
    "list_input_devices", "open_pyaudio", "WavFileSource", "read_wav_16k_mono", "read_wav_info",
]
