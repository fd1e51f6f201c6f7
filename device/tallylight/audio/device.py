"""Microphones through PyAudio (PortAudio): listing, choosing, and capturing 16 kHz mono s16le.

The seam is the `pyaudio` module passed to `MicSource` (default: the real one). Tests pass the real
module too, with ALSA configured to read a file or a PulseAudio null sink (testkit/audio_rigs.py).

PyAudio segfaults when `open()` gets a device index that does not exist (it does not check
`Pa_GetDeviceInfo()` for NULL), so every index is validated against the device list first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

from tallylight.audio.convert import BlockConverter, Reblocker
from tallylight.choices import ChannelMode
from tallylight.config import AudioConfig
from tallylight.errors import AudioDeviceError
from tallylight.pcm import RATE

log = logging.getLogger(__name__)

# Real mic arrays have at most 8 channels (ReSpeaker 6-mic: 8, USB 4-mic array: 6). Software
# devices (ALSA "default", "pulse", "sysdefault", plugins) report 32 or 128, which says nothing
# about the mic behind them: with audio.channels = 0 we capture 1 channel from those.
_MAX_REAL_CHANNELS = 8
# PortAudio error codes (PaErrorCode) that read() can meet.
_PA_INPUT_OVERFLOWED = -9981
_PA_ERRORS = {-9999: "Unanticipated host error", -9996: "Invalid device", -9987: "Timed out",
              -9986: "Internal error", -9985: "Device unavailable", -9983: "Stream is stopped",
              -9981: "Input overflowed"}
# Tried in order when neither 16 kHz nor the device's default rate can be opened.
_FALLBACK_RATES = (48000, 44100, 32000, 22050, 96000, 8000)

_NO_DEVICES = (
    "no audio input device found: plug in a USB microphone or fit the mic HAT, check that "
    "`arecord -l` lists it, and that this user is in the 'audio' group (sudo usermod -aG audio $USER)"
)


@dataclass(frozen=True)
class InputDevice:
    """One capture device as PortAudio lists it."""

    index: int
    name: str
    max_input_channels: int
    default_rate: int


def _pyaudio_module(module: ModuleType | None) -> ModuleType:
    if module is not None:
        return module
    try:
        import pyaudio
    except ImportError as e:  # PyAudio builds from source on Linux: PortAudio's headers are needed.
        raise AudioDeviceError(
            f"PyAudio is not installed ({e}): run scripts/setup.sh, or apt-get install portaudio19-dev "
            "and pip install pyaudio"
        ) from None
    return pyaudio


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence what ALSA, JACK and OSS print on file descriptor 2 while PortAudio probes devices
    (dozens of "ALSA lib ... Unknown PCM" lines on every start). PortAudio still returns its errors
    to us as exceptions, which we turn into one-line messages. Only used in the audio thread."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def release_alsa_probe_cache() -> bool:
    """Let ALSA unload the plugin modules PortAudio's device probe loaded and no open stream uses.

    PyAudio() opens every PCM the ALSA configuration defines, to list devices. ALSA keeps each
    plugin module it loaded (and its libraries) cached: the a52 encoder from libasound2-plugins
    alone holds libavcodec and some 90 libraries, about 14 MiB resident, for the daemon's whole
    life. snd_config_update_free_global() drops ALSA's global config and that cache (PortAudio calls
    it in Pa_Terminate too); modules an open stream uses stay loaded, and the next open reads the
    config again. Returns False where there is no ALSA (the call is then a no-op)."""
    import ctypes

    try:
        # The soname PortAudio itself links: dlopen hands back the library already loaded.
        asound = ctypes.CDLL("libasound.so.2")
        return asound.snd_config_update_free_global() == 0
    except (OSError, AttributeError) as e:
        log.debug("could not release ALSA's config cache: %s", e)
        return False


@contextmanager
def open_pyaudio(pyaudio_module: ModuleType | None = None) -> Iterator[Any]:
    """A PyAudio instance, terminated on exit (a live one pins PortAudio's device list and config)."""
    module = _pyaudio_module(pyaudio_module)
    with quiet_stderr():
        pa = module.PyAudio()
    try:
        yield pa
    finally:
        pa.terminate()


def list_input_devices(pa: Any) -> list[InputDevice]:
    """Every device with at least one input channel, in PortAudio's order."""
    devices = []
    for i in range(pa.get_device_count()):
        try:
            info = pa.get_device_info_by_index(i)
        except OSError as e:  # a device vanished between count and lookup
            log.debug("device %d: %s", i, e)
            continue
        if int(info.get("maxInputChannels", 0)) > 0:
            devices.append(
                InputDevice(
                    index=i,
                    name=str(info.get("name", f"device {i}")),
                    max_input_channels=int(info["maxInputChannels"]),
                    default_rate=int(round(float(info.get("defaultSampleRate", 0) or 0))),
                )
            )
    return devices


def _device_list_text(devices: list[InputDevice]) -> str:
    return ", ".join(f"{d.index} {d.name!r}" for d in devices)


def _default_input_index(pa: Any) -> int | None:
    try:
        return int(pa.get_default_input_device_info()["index"])
    except (OSError, KeyError, ValueError):
        return None


def choose_device(pa: Any, wanted: str | int) -> InputDevice:
    """The input device `wanted` names: "" = the system default, an int (or a string of digits) = a
    PortAudio index, other strings = a case-insensitive substring of the name (an exact name wins,
    else the first match). Raises AudioDeviceError naming the devices there are."""
    devices = list_input_devices(pa)
    if not devices:
        raise AudioDeviceError(_NO_DEVICES)
    fix = "(set audio.device in the config; `tallylight devices` lists them)"
    if isinstance(wanted, bool):
        raise AudioDeviceError(f"audio.device must be a name or an index, not {wanted!r} {fix}")
    if isinstance(wanted, str) and wanted.strip().isdigit():
        wanted = int(wanted.strip())
    if isinstance(wanted, int):
        for d in devices:
            if d.index == wanted:
                return d
        raise AudioDeviceError(
            f"no audio input device with index {wanted}; devices: {_device_list_text(devices)} {fix}"
        )
    name = wanted.strip().lower()
    if not name:
        default = _default_input_index(pa)
        for d in devices:
            if d.index == default:
                return d
        log.info("no default input device; using the first one, %r", devices[0].name)
        return devices[0]
    exact = [d for d in devices if d.name.lower() == name]
    if exact:
        return exact[0]
    matches = [d for d in devices if name in d.name.lower()]
    if not matches:
        raise AudioDeviceError(
            f"no audio input device named {wanted!r}; devices: {_device_list_text(devices)} {fix}"
        )
    if len(matches) > 1:
        log.info("audio.device %r matches %s; using %r", wanted, _device_list_text(matches), matches[0].name)
    return matches[0]


def supports(pa: Any, device: InputDevice, rate: int, channels: int, pyaudio_module: ModuleType) -> bool:
    """Whether PortAudio says it can capture s16 at `rate` Hz with `channels` from `device`."""
    try:
        return bool(
            pa.is_format_supported(
                rate, input_device=device.index, input_channels=channels, input_format=pyaudio_module.paInt16
            )
        )
    except (ValueError, OSError):  # PyAudio raises ValueError(msg, code) for "not supported"
        return False


def auto_channels(device: InputDevice) -> int:
    """audio.channels = 0: all of a real device's channels; 1 from a software device (see above)."""
    if device.max_input_channels > _MAX_REAL_CHANNELS:
        return 1
    return device.max_input_channels


def choose_format(pa: Any, device: InputDevice, cfg: AudioConfig, pyaudio_module: ModuleType) -> tuple[int, int]:
    """(rate, channels) to open `device` with. 16 kHz when supported (no resampling), else the device's
    default rate, else a common rate; raises AudioDeviceError when the config asks for the impossible."""
    name = device.name
    channels = cfg.channels or auto_channels(device)
    if channels > device.max_input_channels:
        raise AudioDeviceError(
            f"audio.channels = {channels}, but {name!r} has at most {device.max_input_channels} input "
            f"channel(s): set audio.channels to {device.max_input_channels} or less, or 0 for automatic"
        )
    if cfg.channel_mode == ChannelMode.SINGLE and cfg.channel >= channels:
        raise AudioDeviceError(
            f"audio.channel = {cfg.channel}, but {name!r} is captured with {channels} channel(s) "
            f"(0-{channels - 1}): set audio.channel lower, or audio.channels higher"
        )
    if cfg.sample_rate:
        if supports(pa, device, cfg.sample_rate, channels, pyaudio_module):
            return cfg.sample_rate, channels
        raise AudioDeviceError(
            f"{name!r} cannot capture at audio.sample_rate = {cfg.sample_rate} Hz with {channels} channel(s) "
            f"(its default is {device.default_rate} Hz): set audio.sample_rate = 0 to choose automatically"
        )
    candidates = [RATE, device.default_rate, *_FALLBACK_RATES]
    for rate in dict.fromkeys(r for r in candidates if r > 0):
        if supports(pa, device, rate, channels, pyaudio_module):
            return rate, channels
    raise AudioDeviceError(
        f"{name!r} cannot capture 16-bit audio with {channels} channel(s) at any common rate: "
        "set audio.channels (try 1 or 2), or choose another audio.device (`tallylight devices` lists them)"
    )


@dataclass(frozen=True)
class CapturePlan:
    """What `MicSource.open()` opens for a config: the device, its format, and how it is mixed down.
    `tallylight devices` and `tallylight check` show this same plan, so what they say is what runs."""

    device: InputDevice
    rate: int
    channels: int
    channel_mode: str
    channel: int

    def mixing(self) -> str:
        if self.channels == 1:
            return "mono, nothing to mix"
        if self.channel_mode == ChannelMode.SINGLE:
            return f"channel {self.channel} of {self.channels} kept"
        if self.channel_mode == ChannelMode.LOUDEST:
            return f"the loudest of {self.channels} channels kept, block by block"
        return f"{self.channels} channels averaged"

    def describe(self) -> str:
        resample = "" if self.rate == RATE else ", resampled to 16 kHz"
        return (f"{self.device.name!r} (index {self.device.index}): {self.channels} channel(s) at {self.rate} Hz, "
                f"{self.mixing()}{resample}")


def plan_capture(pa: Any, cfg: AudioConfig, pyaudio_module: ModuleType | None = None) -> CapturePlan:
    """The device and format `cfg` opens (AudioDeviceError when it cannot be opened as configured)."""
    module = _pyaudio_module(pyaudio_module)
    device = choose_device(pa, cfg.device)
    rate, channels = choose_format(pa, device, cfg, module)
    return CapturePlan(device, rate, channels, cfg.channel_mode, cfg.channel)


def devices_report(pa: Any, pyaudio_module: ModuleType | None = None) -> str:
    """A table of input devices for `tallylight devices` / `tallylight check`: index, name, input
    channels, default rate, and whether 16 kHz mono can be captured without resampling."""
    pyaudio_module = _pyaudio_module(pyaudio_module)
    devices = list_input_devices(pa)
    if not devices:
        return _NO_DEVICES
    default = _default_input_index(pa)
    width = max(4, *(len(d.name) for d in devices))
    lines = [f"  {'index':>5}  {'name':<{width}}  {'inputs':>6}  {'default rate':>12}  16 kHz"]
    for d in devices:
        ok = "yes" if supports(pa, d, RATE, 1, pyaudio_module) else "no (resampled)"
        mark = "*" if d.index == default else " "
        lines.append(f"{mark} {d.index:>5}  {d.name:<{width}}  {d.max_input_channels:>6}  {d.default_rate:>9} Hz  {ok}")
    lines.append("* = the system default; choose one with audio.device = name or index")
    return "\n".join(lines)


def _oserror_text(e: BaseException) -> str:
    if isinstance(e, OSError) and len(e.args) >= 2 and isinstance(e.args[1], int):
        return f"OSError {e.args[1]} {e.args[0]}"  # PyAudio: OSError(message, code)
    if isinstance(e, OSError) and len(e.args) >= 2:
        return f"OSError {e.args[0]} {e.args[1]}"
    return f"{type(e).__name__} {e}"


class MicSource:
    """Capture from a PyAudio input device; yields 16 kHz mono s16le blocks.

    `read()` blocks until one block (`block_samples` samples) is ready. Call `read()` and `close()`
    from the same thread: PortAudio streams are not safe to close while another thread reads them;
    the capture loop closes within one block of being told to (privacy invariant P1).
    """

    def __init__(self, cfg: AudioConfig, pyaudio_module: ModuleType | None = None, stall_timeout_s: float = 5.0,
                 interrupt: threading.Event | None = None):
        self.cfg = cfg
        # Set by another thread (the mute control's edge callback) to make a waiting read() return
        # b"" at once, so a mute never waits for the block in progress (P1).
        self._interrupt = interrupt
        self.stall_timeout_s = stall_timeout_s
        self._pyaudio_arg = pyaudio_module
        self.block_samples = RATE * cfg.block_ms // 1000
        self.device: InputDevice | None = None
        self.rate = 0  # the rate the device is opened at
        self.channels = 0
        self._pa: Any = None
        self._stream: Any = None
        self._converter: BlockConverter | None = None
        self._blocks = Reblocker(self.block_samples * 2)
        self._in_frames = 0

    @property
    def is_open(self) -> bool:
        return self._stream is not None

    def open(self) -> None:
        """Choose and validate the device and format, then open a blocking input stream."""
        if self._stream is not None:
            return
        pyaudio = _pyaudio_module(self._pyaudio_arg)
        pa = self._pa  # kept across stop()/open(): Pa_Initialize and Pa_Terminate cost ~5-200 ms
        if pa is None:
            with quiet_stderr():
                pa = pyaudio.PyAudio()
        try:
            plan = plan_capture(pa, self.cfg, pyaudio)
            device, rate, channels = plan.device, plan.rate, plan.channels
            # One device period per output block: read() then returns about once per block.
            in_frames = max(1, rate * self.cfg.block_ms // 1000)
            try:
                with quiet_stderr():
                    stream = pa.open(
                        format=pyaudio.paInt16,
                        channels=channels,
                        rate=rate,
                        input=True,
                        input_device_index=device.index,
                        frames_per_buffer=in_frames,
                    )
            except (OSError, ValueError) as e:
                raise AudioDeviceError(
                    f"cannot open the microphone {device.name!r} ({_oserror_text(e)}): is another program "
                    "using it? check `arecord -l` and audio.device"
                ) from None
        except BaseException:
            self._pa = None
            pa.terminate()  # next open() enumerates the devices afresh
            raise
        if self._pa is None:  # a fresh PyAudio() probed every ALSA PCM: let the unused plugins go
            release_alsa_probe_cache()
        self._pa, self._stream, self.device = pa, stream, device
        self.rate, self.channels, self._in_frames = rate, channels, in_frames
        self._converter = BlockConverter(rate, channels, self.cfg.channel_mode, self.cfg.channel)
        self._blocks.reset()
        log.info("microphone %s, %d ms blocks", plan.describe(), self.cfg.block_ms)

    def read(self) -> bytes:
        """Exactly `block_samples * 2` bytes of 16 kHz mono s16le, or b"" when `interrupt` was set while
        waiting. AudioDeviceError (and the source closes itself) when the device is lost or delivers
        nothing for `stall_timeout_s`; open() again to retry."""
        if self._stream is None or self._converter is None:
            raise AudioDeviceError("the microphone is not open (call open() first, or use `with`)")
        while True:
            block = self._blocks.pop()
            if block is not None:
                return block
            if not self._wait_for_input():
                return b""
            try:
                # Overflow (we fell behind) is not an error worth stopping for: the samples are gone
                # either way, and raising would drop the block PyAudio did read.
                raw = self._stream.read(self._in_frames, exception_on_overflow=False)
            except OSError as e:
                self._lost(_oserror_text(e))
            data = self._converter.process(raw)
            if len(data) == self._blocks.n and not self._blocks.pending:
                return data  # exactly one block and nothing held (16 kHz mono): no re-cutting
            self._blocks.feed(data)

    def _wait_for_input(self) -> bool:
        """Sleep until a whole device period is ready, instead of blocking in stream.read(): when a
        PulseAudio/PipeWire server dies, a blocking PortAudio read never returns (seen here), while
        the available count turns into an error code or stays at 0 (caught by the stall timeout)."""
        deadline = time.monotonic() + self.stall_timeout_s
        while True:
            avail = self._stream.get_read_available()
            if avail >= self._in_frames:
                return True
            if avail < 0 and avail != _PA_INPUT_OVERFLOWED:  # PyAudio hands PaError codes back as values
                self._lost(f"PaError {avail} {_PA_ERRORS.get(avail, 'host error')}")
            if time.monotonic() > deadline:
                self._lost(f"no audio for {self.stall_timeout_s:g} s")
            # Sleep about as long as the missing frames take to arrive (at least 2 ms).
            missing = self._in_frames - max(avail, 0)
            pause = max(0.002, min(0.05, missing / self.rate))
            if self._interrupt is None:
                time.sleep(pause)
            elif self._interrupt.wait(pause):
                return False

    def _lost(self, why: str) -> NoReturn:
        name = self.device.name if self.device else "?"
        self.close()
        raise AudioDeviceError(f"lost the microphone {name!r} ({why}): check the cable/USB; tallylight retries")

    def stop(self) -> None:
        """Stop and close the stream but keep PortAudio initialised, so the mic closes in ~1-2 ms and
        reopens quickly. Safe to call twice."""
        self._close_stream()

    def close(self) -> None:
        """Stop and close the stream and release PortAudio; safe to call twice."""
        self._close_stream()
        pa, self._pa = self._pa, None
        if pa is not None:
            pa.terminate()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            for step in (stream.stop_stream, stream.close):
                try:
                    step()
                except OSError as e:  # the device may already be gone
                    log.debug("closing the stream: %s", e)
        if self._converter is not None:
            self._converter.reset()
        self._blocks.reset()

    def __enter__(self) -> MicSource:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
