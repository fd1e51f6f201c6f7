"""Real capture devices for tests, on a machine with no sound card.

Two rigs, both driven through real PyAudio -> PortAudio -> ALSA:

- `file_mics(tmp, {"testmic": samples})`: ALSA `file` plugin capture devices that read raw s16le
  files. Instant (not paced), bit-exact, any channel count. After a file ends, ALSA keeps handing
  back stale buffers with no error, so the rig pads each file with `pad_s` of silence: read no more
  than the audio you put in plus that.
- `pulse_mic(tmp)`: a PulseAudio server with a null sink; its monitor is the ALSA device
  `virtmon`, paced in real time. `play()` feeds audio (written at real-time pace by a thread),
  `unplug()` unloads the sink and `kill()` stops the server: the next read then fails like a mic
  pulled out of its socket. Measured here: the server starts in ~0.15 s; the first block after
  opening takes up to ~1.7 s to arrive (the idle null sink works in large blocks), then one block
  per block time; the first ~100 ms played is lost; channel N arrives as channel N (the sink and
  player use ALSA's channel order, see `alsa_channel_map`).

Both yield an object whose `.env` holds the environment a subprocess needs, and (unless told not to)
set ALSA_CONFIG_PATH in this process while the `with` lasts, restoring it after. PortAudio reads the
ALSA config in Pa_Initialize, i.e. when a `pyaudio.PyAudio()` is created: create it inside the block,
and have no other PyAudio instance alive (a live one keeps PortAudio initialised with the old config).

pytest fixtures (`file_mic_rig`, `pulse_mic_rig`) wrap them in tests/rig_fixtures.py, which
tests/conftest.py makes every test module's (`pytest_plugins`); scripts/bench uses the rigs directly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ALSA_BASE = "/usr/share/alsa/alsa.conf"  # must come first in ALSA_CONFIG_PATH or PortAudio aborts


def tone(freq: float, seconds: float, rate: int = 16000, amplitude: int = 8000) -> np.ndarray:
    """A sine tone as int16 samples."""
    t = np.arange(int(round(seconds * rate))) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def interleave(*channels: np.ndarray) -> np.ndarray:
    """Equal-length int16 channels -> one (frames, channels) int16 array (interleaved when flattened)."""
    return np.stack(channels, axis=1).astype(np.int16)


def to_raw(samples: np.ndarray | bytes) -> bytes:
    """int16 samples (1-D mono or (frames, channels)) -> raw interleaved s16le bytes."""
    if isinstance(samples, (bytes, bytearray)):
        return bytes(samples)
    return np.ascontiguousarray(samples, dtype="<i2").tobytes()


@contextmanager
def alsa_config(conf: Path, apply: bool = True) -> Iterator[dict[str, str]]:
    """Point ALSA at `conf` (after the system alsa.conf); yields the env for subprocesses. With
    `apply`, sets ALSA_CONFIG_PATH in this process too and restores the old value on exit."""
    env = dict(os.environ, ALSA_CONFIG_PATH=f"{ALSA_BASE}:{conf}")
    old = os.environ.get("ALSA_CONFIG_PATH")
    if apply:
        os.environ["ALSA_CONFIG_PATH"] = env["ALSA_CONFIG_PATH"]
    try:
        yield env
    finally:
        if apply:
            if old is None:
                os.environ.pop("ALSA_CONFIG_PATH", None)
            else:
                os.environ["ALSA_CONFIG_PATH"] = old


@dataclass
class FileMics:
    """ALSA file-plugin capture devices: `names[i]` reads `raw_paths[i]`."""

    conf: Path
    raw_paths: dict[str, Path]
    env: dict[str, str] = field(default_factory=dict)
    pad_s: float = 1.0

    def feed(self, name: str, samples: np.ndarray | bytes, rate: int = 48000, channels: int = 1) -> None:
        """Replace what device `name` will deliver (before it is opened). `rate`/`channels` size the
        padding only: the plugin has no format of its own; the reader's rate/channels apply."""
        pad = bytes(int(self.pad_s * rate) * channels * 2)
        self.raw_paths[name].write_bytes(to_raw(samples) + pad)


@contextmanager
def file_mics(
    tmp: Path,
    devices: Mapping[str, np.ndarray | bytes],
    rate: int = 48000,
    channels: int = 8,
    pad_s: float = 1.0,
    apply: bool = True,
) -> Iterator[FileMics]:
    """ALSA capture devices named after the keys of `devices`, each reading its samples (int16 array,
    (frames, channels) for several channels, or raw s16le bytes), then `pad_s` of silence sized for
    up to `rate` Hz x `channels`."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    lines, raws = [], {}
    for name in devices:
        raw = tmp / f"{name}.raw"
        raws[name] = raw
        lines.append(
            f'pcm.{name} {{ type file slave.pcm "null" file "/dev/null" infile "{raw}" format "raw" }}'
        )
    conf = tmp / "file-mics.conf"
    conf.write_text("\n".join(lines) + "\n")
    mics = FileMics(conf, raws, pad_s=pad_s)
    for name, samples in devices.items():
        mics.feed(name, samples, rate, channels)
    with alsa_config(conf, apply) as env:
        mics.env = env
        yield mics


@contextmanager
def no_alsa_devices(tmp: Path, apply: bool = True) -> Iterator[dict[str, str]]:
    """An ALSA config that defines no capture device beyond the system's (none on a card-less box)."""
    conf = Path(tmp) / "empty.conf"
    conf.write_text("# no devices\n")
    with alsa_config(conf, apply) as env:
        yield env


# ALSA's channel order, which the ALSA pulse plugin asks PulseAudio for. The sink and the player use
# it too: with PulseAudio's own default order (AIFF) for 6 channels the server remixes them
# (5.1 -> 5.1 in another order, LFE low-passed) and channel N no longer arrives as channel N.
_ALSA_ORDER = ["front-left", "front-right", "rear-left", "rear-right", "front-center", "lfe",
               "side-left", "side-right"]


def alsa_channel_map(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels <= len(_ALSA_ORDER):
        return ",".join(_ALSA_ORDER[:channels])
    return ",".join(f"aux{i}" for i in range(channels))


class Player:
    """Writes audio into a pacat process from a thread, at `bytes_per_s` (0 = all at once), after
    `lead_s` of silence that is part of `raw`. `t0` is the monotonic time the first byte was due: paced,
    the byte at offset b is written no sooner than t0 + b / bytes_per_s, so `at(s)` tells when the
    sample `s` seconds into the audio after the lead was said (for end-of-speech latencies)."""

    def __init__(self, proc: subprocess.Popen, raw: bytes, bytes_per_s: int, lead_s: float = 0.0):
        self.proc = proc
        self.bytes_per_s = bytes_per_s
        self.lead_s = lead_s
        self._stop = threading.Event()
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._write, args=(raw, bytes_per_s), daemon=True)
        self._thread.start()

    def at(self, audio_s: float) -> float:
        """The monotonic time of the moment `audio_s` into the audio after the lead: when a person
        talking would have said it. The 20 ms pieces go out at their first sample's time, so the bytes
        up to that moment have all been written by then, give or take one piece."""
        if not self.bytes_per_s:
            raise ValueError("an unpaced player writes everything at once: it has no clock to tell")
        return self.t0 + self.lead_s + audio_s

    def _write(self, raw: bytes, bytes_per_s: int) -> None:
        stdin = self.proc.stdin
        step = max(2, bytes_per_s // 50) if bytes_per_s else len(raw)  # 20 ms pieces
        t0 = self.t0
        try:
            for pos in range(0, len(raw), step):
                if self._stop.is_set():
                    break
                if bytes_per_s:
                    delay = t0 + pos / bytes_per_s - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                stdin.write(raw[pos : pos + step])  # type: ignore[union-attr]
                stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError):  # pacat gone (server killed) or stdin closed
            pass
        finally:
            with contextlib.suppress(BrokenPipeError, OSError):
                stdin.close()  # type: ignore[union-attr]

    def wait(self, timeout: float = 30) -> None:
        """Until everything has been written and pacat has played it out."""
        self._thread.join(timeout)
        self.proc.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@dataclass
class PulseMic:
    """A running PulseAudio with a null sink; `alsa_name` is the ALSA capture device of its monitor."""

    alsa_name: str
    sink: str
    rate: int
    channels: int
    env: dict[str, str]
    proc: subprocess.Popen
    module_index: int
    log_path: Path
    _players: list[Player] = field(default_factory=list)

    def pactl(self, *args: str, timeout: float = 10) -> str:
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, check=True, timeout=timeout
        ).stdout

    def play(self, samples: np.ndarray | bytes, lead_s: float = 0.5, realtime: bool = True) -> Player:
        """Start feeding int16 samples ((frames, channels) at the sink's rate, or raw s16le) into the
        sink, in the background. `lead_s` of silence goes first: the first ~100 ms a monitor delivers
        is lost. With `realtime` the bytes are written at the audio's own pace, like a person talking:
        the null sink takes whatever pacat has as fast as it comes (3 s of audio reached the monitor
        in 10 ms when pacat was given it all at once)."""
        raw = bytes(int(lead_s * self.rate) * self.channels * 2) + to_raw(samples)
        proc = subprocess.Popen(
            ["pacat", "--playback", f"--device={self.sink}", "--raw", "--format=s16le",
             f"--rate={self.rate}", f"--channels={self.channels}",
             f"--channel-map={alsa_channel_map(self.channels)}", "--latency-msec=20"],
            stdin=subprocess.PIPE, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        player = Player(proc, raw, self.rate * self.channels * 2 if realtime else 0, lead_s)
        self._players.append(player)
        return player

    def unplug(self) -> None:
        """Unload the null sink: its monitor, i.e. the mic, disappears."""
        self.pactl("unload-module", str(self.module_index))

    def kill(self) -> None:
        """Kill the server outright."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        for p in self._players:
            p.stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


def have_pulseaudio() -> bool:
    """PulseAudio's server and tools, and the ALSA plugin that lets PortAudio capture from it."""
    tools = all(shutil.which(t) for t in ("pulseaudio", "pactl", "pacat"))
    plugin = any(Path("/usr/lib").glob("*/alsa-lib/libasound_module_pcm_pulse.so"))
    return tools and plugin


@contextmanager
def pulse_mic(
    tmp: Path,
    rate: int = 16000,
    channels: int = 6,
    alsa_name: str = "virtmon",
    startup_timeout_s: float = 15.0,
    apply: bool = True,
) -> Iterator[PulseMic]:
    """Start PulseAudio (a plain process, runtime/home dirs in `tmp`) with a null sink of `rate` Hz x
    `channels`; ALSA device `alsa_name` captures its monitor. The server is always stopped on exit."""
    # A short path: the unix socket path must fit in sun_path (108 bytes); pytest tmp paths may not.
    base = Path(tempfile.mkdtemp(prefix="tl-pa-"))
    run_dir, home = base / "run", base / "home"
    run_dir.mkdir(mode=0o700)
    home.mkdir()
    socket = run_dir / "pulse" / "native"
    client_conf = base / "client.conf"
    client_conf.write_text("autospawn = no\n")  # when the server dies, do not start another
    env = dict(
        os.environ,
        XDG_RUNTIME_DIR=str(run_dir),
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        PULSE_SERVER=f"unix:{socket}",
        PULSE_CLIENTCONFIG=str(client_conf),
    )
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    Path(tmp).mkdir(parents=True, exist_ok=True)
    log_path = Path(tmp) / "pulseaudio.log"
    sink = "virt"
    cmap = alsa_channel_map(channels)
    cmd = [
        "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
        "--use-pid-file=no", "--log-target=stderr",
        "-L", "module-native-protocol-unix auth-anonymous=1",
        "-L", f"module-null-sink sink_name={sink} rate={rate} channels={channels} channel_map={cmap}",
    ]
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    mic = None
    try:
        deadline = time.monotonic() + startup_timeout_s
        module_index = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            if socket.exists():
                r = subprocess.run(["pactl", "list", "short", "modules"], env=env, capture_output=True,
                                   text=True, timeout=5)
                for line in r.stdout.splitlines():
                    parts = line.split("\t")
                    if len(parts) > 1 and parts[1] == "module-null-sink":
                        module_index = int(parts[0])
                if module_index is not None:
                    break
            time.sleep(0.1)
        if module_index is None:
            raise RuntimeError(f"pulseaudio did not start in {startup_timeout_s} s: {log_path.read_text()[-2000:]}")
        conf = base / "pulse-mic.conf"
        conf.write_text(
            f'pcm.{alsa_name} {{ type pulse server "unix:{socket}" device "{sink}.monitor" }}\n'
        )
        with alsa_config(conf, apply) as alsa_env:
            env.update(ALSA_CONFIG_PATH=alsa_env["ALSA_CONFIG_PATH"])
            mic = PulseMic(alsa_name, sink, rate, channels, env, proc, module_index, log_path)
            # The ALSA pulse plugin in *this* process finds the client config through the env too.
            old_cc = os.environ.get("PULSE_CLIENTCONFIG")
            if apply:
                os.environ["PULSE_CLIENTCONFIG"] = str(client_conf)
            try:
                yield mic
            finally:
                if apply:
                    if old_cc is None:
                        os.environ.pop("PULSE_CLIENTCONFIG", None)
                    else:
                        os.environ["PULSE_CLIENTCONFIG"] = old_cc
    finally:
        if mic is not None:
            mic.stop()
        elif proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
