"""MicSource and device choice through real PyAudio: ALSA file-plugin mics and a PulseAudio null sink."""

import json
import os
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pyaudio
import pytest

from tallylight.audio.device import (
    InputDevice,
    MicSource,
    auto_channels,
    choose_device,
    devices_report,
    list_input_devices,
    open_pyaudio,
)
from tallylight.config import AudioConfig
from tallylight.errors import AudioDeviceError
from testkit.audio_rigs import Player, file_mics, interleave, no_alsa_devices, tone

TONES = [250, 500, 1000, 2000, 3000, 4000]  # Hz, one per channel; all whole cycles in a 20 ms block


def samples(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<i2")


def peak_hz(x: np.ndarray, rate: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def capture(cfg: AudioConfig, seconds: float, module=None) -> tuple[np.ndarray, MicSource]:
    src = MicSource(cfg, module)
    with src:
        n = int(round(seconds * 1000 / cfg.block_ms))
        blocks = [src.read() for _ in range(n)]
    assert all(len(b) == src.block_samples * 2 for b in blocks)
    return samples(b"".join(blocks)), src


def channels_of(n: int, seconds: float = 1.0, rate: int = 16000) -> list[np.ndarray]:
    return [tone(TONES[i], seconds, rate, amplitude=1500 * (i + 1)) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_multichannel_capture_mixes_to_16k_mono(file_mic_rig, n):
    chans = channels_of(n)
    file_mic_rig({"testmic": interleave(*chans)}, rate=16000, channels=n)
    expected = {
        "mean": np.round(np.sum(chans, axis=0, dtype=np.int32) / n).astype(np.int16),
        "loudest": chans[-1],  # the last channel has the largest amplitude
        "single": chans[n // 2],
    }
    for mode, want in expected.items():
        cfg = AudioConfig(device="testmic", channels=n, channel_mode=mode, channel=n // 2)
        got, src = capture(cfg, 1.0)
        assert (src.rate, src.channels) == (16000, n)
        assert got.tolist() == want.tolist(), mode


@pytest.mark.parametrize("rate", [48000, 44100])
def test_48k_and_44k_devices_are_resampled_to_16k(file_mic_rig, rate):
    chans = [tone(1000, 1.5, rate, amplitude=6000), tone(1000, 1.5, rate, amplitude=2000)]
    file_mic_rig({"usbmic": interleave(*chans)}, rate=rate, channels=2)
    got, src = capture(AudioConfig(device="usbmic", sample_rate=rate, channels=2, block_ms=30), 1.2)
    assert src.rate == rate
    assert len(got) == int(1.2 * 16000)
    assert abs(peak_hz(got[1600:]) - 1000) < 3
    assert abs(np.max(np.abs(got[1600:])) - 4000) < 80  # the mean of 6000 and 2000


def _refusing_16k() -> types.SimpleNamespace:
    """The real pyaudio module, except that every device refuses 16 kHz, as many USB mics and
    HATs do (44.1/48 kHz only). ALSA plugin devices here accept any rate, so this is the only way
    to reach the fallback on this machine; capture itself is real."""

    class PyAudioNo16k(pyaudio.PyAudio):
        def is_format_supported(self, rate, *args, **kw):
            if rate == 16000:
                raise ValueError("Invalid sample rate", -9997)
            return super().is_format_supported(rate, *args, **kw)

    return types.SimpleNamespace(PyAudio=PyAudioNo16k, paInt16=pyaudio.paInt16)


def test_device_without_16k_is_opened_at_its_default_rate_and_resampled(file_mic_rig):
    x = tone(1000, 1.5, 44100, amplitude=5000)  # PortAudio's default rate for ALSA plugin devices
    file_mic_rig({"testmic": x}, rate=44100, channels=1)
    got, src = capture(AudioConfig(device="testmic"), 1.0, _refusing_16k())
    assert (src.rate, src.channels) == (src.device.default_rate, 1) == (44100, 1)
    assert abs(peak_hz(got[1600:]) - 1000) < 3
    module = _refusing_16k()
    pa = module.PyAudio()
    try:
        assert "no (resampled)" in devices_report(pa, module)
    finally:
        pa.terminate()  # a live PyAudio keeps PortAudio (and its ALSA config) for the next test


def test_16k_is_preferred_when_supported(file_mic_rig):
    x = tone(500, 1.0)
    file_mic_rig({"testmic": x}, rate=16000, channels=1)
    got, src = capture(AudioConfig(device=""), 0.5)
    assert (src.rate, src.channels) == (16000, 1)  # software device: 128 "channels" -> 1
    assert got.tolist() == x[:8000].tolist()


def test_choose_by_name_substring_and_by_index(file_mic_rig):
    a, b = tone(500, 0.5), tone(2000, 0.5)
    file_mic_rig({"alphamic": a, "betamic": b}, rate=16000, channels=1)
    pa = pyaudio.PyAudio()
    try:
        devices = list_input_devices(pa)
        names = [d.name for d in devices]
        assert names == ["alphamic", "betamic"]
        assert choose_device(pa, "BETA").name == "betamic"
        assert choose_device(pa, "alphamic").name == "alphamic"
        assert choose_device(pa, "mic").name == "alphamic"  # several match: the first
        assert choose_device(pa, devices[1].index).name == "betamic"
        assert choose_device(pa, str(devices[1].index)).name == "betamic"
        assert choose_device(pa, "").index == pa.get_default_input_device_info()["index"]
        for wanted in (99, -1, "gamma"):
            with pytest.raises(AudioDeviceError) as e:
                choose_device(pa, wanted)
            msg = str(e.value)
            assert "\n" not in msg and "0 'alphamic', 1 'betamic'" in msg and "tallylight devices" in msg
    finally:
        pa.terminate()
    got, src = capture(AudioConfig(device=1), 0.5)
    assert src.device.name == "betamic"
    assert abs(peak_hz(got) - 2000) < 3


def test_bad_index_survives_where_pyaudio_would_segfault(file_mic_rig):
    """PyAudio's open() with a missing index segfaults: MicSource must refuse first. In a subprocess
    so that a crash fails this test instead of killing the test run."""
    mics = file_mic_rig({"testmic": tone(500, 0.5)}, rate=16000, channels=1)
    code = textwrap.dedent(
        """
        from tallylight.audio.device import MicSource
        from tallylight.config import AudioConfig
        from tallylight.errors import AudioDeviceError
        for wanted in (7, 128, "nosuchmic"):
            try:
                MicSource(AudioConfig(device=wanted)).open()
            except AudioDeviceError as e:
                print("ERR", e)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], env=mics.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("ERR")]
    assert len(lines) == 3
    assert "index 7" in lines[0] and "index 128" in lines[1] and "named 'nosuchmic'" in lines[2]


def test_no_input_device_at_all_gives_one_line_with_the_fix(tmp_path):
    with no_alsa_devices(tmp_path):
        pa = pyaudio.PyAudio()
        try:
            if list_input_devices(pa):
                pytest.skip("this machine has real capture devices, so 'no device' cannot be shown here")
            assert "no audio input device found" in devices_report(pa)
        finally:
            pa.terminate()
        src = MicSource(AudioConfig())
        with pytest.raises(AudioDeviceError) as e:
            src.open()
        msg = str(e.value)
        assert "\n" not in msg and "arecord -l" in msg and "'audio' group" in msg
        assert not src.is_open


def test_config_that_does_not_fit_the_device(file_mic_rig):
    file_mic_rig({"testmic": tone(500, 0.5)}, rate=16000, channels=2)
    for cfg, words in [
        (AudioConfig(device="testmic", channels=2, channel_mode="single", channel=2), "audio.channel = 2"),
        (AudioConfig(device="testmic", channels=129), "at most 128"),
        (AudioConfig(device="testmic", sample_rate=1), "audio.sample_rate = 1 Hz"),
    ]:
        src = MicSource(cfg)
        with pytest.raises(AudioDeviceError, match=words):
            src.open()
        assert not src.is_open


def test_close_is_safe_twice_and_read_after_close_fails(file_mic_rig):
    file_mic_rig({"testmic": tone(500, 0.5)}, rate=16000, channels=1)
    src = MicSource(AudioConfig(device="testmic", block_ms=10))
    assert src.block_samples == 160 and src.device is None and not src.is_open
    src.open()
    assert src.is_open and src.device.name == "testmic"
    assert len(src.read()) == 320
    src.close()
    src.close()
    assert not src.is_open
    with pytest.raises(AudioDeviceError, match="not open"):
        src.read()
    src.open()  # and it opens again
    assert len(src.read()) == 320
    src.close()


def test_auto_channels():
    assert auto_channels(InputDevice(0, "seeed-4mic-voicecard", 4, 16000)) == 4
    assert auto_channels(InputDevice(1, "ReSpeaker 4 Mic Array (UAC1.0)", 6, 16000)) == 6
    assert auto_channels(InputDevice(2, "default", 128, 44100)) == 1
    assert auto_channels(InputDevice(3, "pulse", 32, 44100)) == 1


def test_devices_report_lists_every_input(file_mic_rig):
    file_mic_rig({"alphamic": tone(500, 0.1), "betamic": tone(500, 0.1)}, rate=16000, channels=1)
    with open_pyaudio() as pa:
        report = devices_report(pa)
    lines = report.splitlines()
    assert "index" in lines[0] and "16 kHz" in lines[0]
    assert lines[1].split() == ["*", "0", "alphamic", "128", "44100", "Hz", "yes"]
    assert lines[2].split() == ["1", "betamic", "128", "44100", "Hz", "yes"]


def test_env_does_not_leak(tmp_path):
    before = os.environ.get("ALSA_CONFIG_PATH")
    with file_mics(tmp_path, {"testmic": tone(500, 0.1)}) as mics:
        assert os.environ["ALSA_CONFIG_PATH"] == mics.env["ALSA_CONFIG_PATH"]
    assert os.environ.get("ALSA_CONFIG_PATH") == before


# --- PulseAudio null sink: paced, real-time, and a mic that can be pulled out -----------------------


def test_a_paced_player_writes_no_byte_before_its_clock_says_it_was_said():
    # Player.at() dates the end of speech for scripts/bench's latencies: a clock later than the bytes it
    # dates would make them come out too short. The player writes into `cat` here, read back as it comes.
    bps, lead = 32000, 0.1  # 16 kHz mono s16le
    raw = bytes(int(0.7 * bps))
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    before = time.monotonic()
    player = Player(proc, raw, bps, lead_s=lead)
    after = time.monotonic()
    assert before <= player.t0 <= after
    step = bps // 50  # the player's 20 ms pieces
    got = 0
    while chunk := proc.stdout.read1(65536):
        arrived = time.monotonic()
        piece_start = got // step * step  # the first byte of this read came with the piece that holds it
        assert arrived >= player.at(piece_start / bps - lead), (got, arrived - player.t0)
        got += len(chunk)
    player.wait()
    assert got == len(raw)
    with pytest.raises(ValueError, match="no clock"):
        Player(subprocess.Popen(["true"], stdin=subprocess.PIPE), b"", 0).at(0.0)


def test_pulse_six_channel_capture_is_paced_and_exact(pulse_mic_rig):
    mic = pulse_mic_rig
    chans = channels_of(6, seconds=2.0)
    src = MicSource(AudioConfig(device=mic.alsa_name, channels=6, channel_mode="single", channel=3))
    with src:
        assert (src.rate, src.channels) == (16000, 6)
        mic.play(interleave(*chans))
        t = time.monotonic()
        got = samples(b"".join(src.read() for _ in range(125)))  # 2.5 s: 0.5 s lead + the tone
        elapsed = time.monotonic() - t
    assert elapsed > 1.5  # paced by the audio's clock, not read as fast as the CPU allows
    loud = np.abs(got) > 1000
    assert loud.sum() > 16000  # over half of the 2 s tone arrived (its start is lost, its end may be late)
    assert abs(peak_hz(got[loud.argmax():][:8000]) - TONES[3]) < 3
    # Channel 3 arrives as channel 3: its amplitude, not another channel's (no server-side remix).
    assert abs(np.max(np.abs(got)) - 1500 * 4) < 50


@pytest.mark.parametrize("how", ["unplug", "kill"])
def test_pulse_mic_lost_mid_read_raises_one_line(pulse_mic_rig, how):
    mic = pulse_mic_rig
    src = MicSource(AudioConfig(device=mic.alsa_name, channels=2), stall_timeout_s=3.0)
    src.open()
    for _ in range(60):
        src.read()
    getattr(mic, how)()
    t = time.monotonic()
    with pytest.raises(AudioDeviceError) as e:
        for _ in range(1000):
            src.read()
    assert time.monotonic() - t < 10
    msg = str(e.value)
    assert msg.startswith("lost the microphone 'virtmon' (") and "tallylight retries" in msg and "\n" not in msg
    assert not src.is_open
    src.close()  # still safe
    with pytest.raises(AudioDeviceError):  # retrying finds no such device now
        src.open()
    assert not src.is_open


_UNLOAD_PROBE = textwrap.dedent("""
    import json, sys
    import pyaudio
    from tallylight.audio.device import MicSource
    from tallylight.config import AudioConfig

    def loaded(module):
        return module in open("/proc/self/maps").read()

    probe = pyaudio.PyAudio()  # PortAudio's probe opens every PCM ALSA defines
    out = {"probe_loads_a52": loaded("libasound_module_pcm_a52")}
    probe.terminate()
    src = MicSource(AudioConfig(device=sys.argv[1], channels=1))
    src.open()
    out["a52_after_open"] = loaded("libasound_module_pcm_a52")
    out["pulse_after_open"] = loaded("libasound_module_pcm_pulse")
    sizes = [len(src.read()) for _ in range(10)]
    src.stop()
    src.open()  # PortAudio kept initialised; ALSA reads its config again
    sizes += [len(src.read()) for _ in range(10)]
    src.close()
    out["sizes"] = sorted(set(sizes))
    print(json.dumps(out))
""")


def test_plugins_loaded_only_by_portaudios_probe_are_unloaded_after_open(pulse_mic_rig):
    """PyAudio() loads every ALSA plugin module the config names (the a52 encoder from
    libasound2-plugins brings libavcodec and ~90 libraries, ~14 MiB); once the mic is open, only the
    module the stream uses may stay. A fresh process, so no other test's PyAudio holds the cache."""
    mic = pulse_mic_rig
    r = subprocess.run([sys.executable, "-c", _UNLOAD_PROBE, mic.alsa_name], env=mic.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if not out["probe_loads_a52"]:
        pytest.skip("ALSA's a52 plugin (libasound2-plugins) is not configured here: nothing to unload")
    assert out["a52_after_open"] is False
    assert out["pulse_after_open"] is True  # the module the open stream uses stays
    assert out["sizes"] == [640]  # reading goes on, also after stop() and open() again


@pytest.mark.parametrize("audio, opens, words", [
    ('device = "testmic"', (16000, 1), "1 channel(s) at 16000 Hz, mono, nothing to mix"),
    ('device = "testmic"\nchannels = 4\nchannel_mode = "single"\nchannel = 2', (16000, 4),
     "4 channel(s) at 16000 Hz, channel 2 of 4 kept"),
    ('device = "testmic"\nchannels = 2\nsample_rate = 48000', (48000, 2),
     "2 channel(s) at 48000 Hz, 2 channels averaged, resampled to 16 kHz"),
])
def test_devices_and_check_say_what_the_daemon_opens(file_mic_rig, tmp_path, audio, opens, words):
    """The file plugin reports 128 input channels, as ALSA's "default" and "pulse" do: `devices` and
    `check` once said "(128 channels)" while the daemon opened 1. Both now show the format MicSource
    really opens."""
    mics = file_mic_rig({"testmic": tone(500, 0.5)}, rate=48000, channels=4)
    conf = tmp_path / "t.toml"
    conf.write_text(f'[audio]\n{audio}\n[gpio]\npin_factory = "mock"\n[indicator]\nkind = "terminal"\n'
                    f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n')
    from tallylight import config

    src = MicSource(config.load(conf).audio)
    with src:
        assert (src.rate, src.channels) == opens
    devices = subprocess.run([sys.executable, "-m", "tallylight", "devices", "--config", str(conf)],
                             capture_output=True, text=True, timeout=60, env=mics.env)
    assert devices.returncode == 0, devices.stderr
    said = devices.stdout.splitlines()[-1]
    assert said == f"with this config, `tallylight run` captures from 'testmic' (index 0): {words}"
    check = subprocess.run([sys.executable, "-m", "tallylight", "check", "--config", str(conf)],
                           capture_output=True, text=True, timeout=120, env=mics.env)
    line = next(x for x in check.stdout.splitlines() if "audio input" in x)
    assert line == f"  ok       audio input: will capture from 'testmic' (index 0): {words}"


def test_devices_names_a_config_the_device_cannot_take(file_mic_rig, tmp_path):
    mics = file_mic_rig({"testmic": tone(500, 0.5)}, rate=16000, channels=1)
    conf = tmp_path / "t.toml"
    conf.write_text('[audio]\ndevice = "testmic"\nchannels = 2\nchannel_mode = "single"\nchannel = 5\n')
    r = subprocess.run([sys.executable, "-m", "tallylight", "devices", "--config", str(conf)],
                       capture_output=True, text=True, timeout=60, env=mics.env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stdout.splitlines()[-1].startswith("with this config: audio.channel = 5, but 'testmic'")
