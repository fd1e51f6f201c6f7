"""Table 2: mute latency, switch edge -> microphone stream closed, with a real-time PulseAudio mic and
real PyAudio."""

from __future__ import annotations

import random
import statistics
import threading
import time

from bench.common import Ctx, Table, pct, register, verdict, wait_for
from bench.inputs import MUTE_PIN, base_config, noise_pcm

# audio.block_ms values table 2 measures: the ends of the range the config accepts (10-20). The
# README promises the mic closed within 20 ms of the edge at any of them.
MUTE_BLOCK_MS = (10, 20)


@register(2, "mute", "Mute latency")
def table_mute(ctx: Ctx) -> Table:
    from testkit.audio_rigs import have_pulseaudio

    goal_ms = 20
    t = Table(2, "Mute latency: switch edge -> microphone stream closed (issue 2)",
              f"p99 <= {goal_ms} ms at every audio.block_ms ({', '.join(map(str, MUTE_BLOCK_MS))} measured)",
              ["what", "block ms", "mutes", "p50 ms", "p95 ms", "p99 ms", "max ms"])
    if not have_pulseaudio():
        t.verdict = "SKIPPED"
        t.notes.append("needs pulseaudio, pactl, pacat and libasound2-plugins (scripts/setup.sh test installs them)")
        return t
    ok = True
    for block_ms in MUTE_BLOCK_MS:
        lat_ms, close_ms, opens = _mute_latencies(ctx, block_ms)
        wait_ms = [a - b for a, b in zip(lat_ms, close_ms, strict=True)]
        ok = ok and pct(lat_ms, 99) <= goal_ms
        for label, xs in (("edge -> mic closed (the daemon's mute_latencies)", lat_ms),
                          ("  edge -> the loop noticed it (by difference)", wait_ms),
                          ("  MicSource.stop(): stream stopped and closed", close_ms)):
            t.rows.append([label, block_ms, len(xs), pct(xs, 50), pct(xs, 95), pct(xs, 99), max(xs)])
        t.notes.append(f"{block_ms} ms blocks: unmute -> listening again (mic reopened, 3 blocks read): median "
                       f"{statistics.median(opens) * 1000:.0f} ms (includes the 30 ms unmute debounce)")
    t.verdict = verdict(ok)
    t.notes.insert(0, "real Daemon in a thread, real PyAudio capturing from a PulseAudio null-sink monitor in real "
                      "time; the mute pin (MockFactory) driven at random moments from another thread; latency = the "
                      "daemon's mute_latencies (edge time -> MicSource.stop() returned)")
    return t


def _mute_latencies(ctx: Ctx, block_ms: int) -> tuple[list[float], list[float], list[float]]:
    """(edge -> mic closed, MicSource.stop() alone, unmute -> listening) for `block_ms` blocks, in ms, ms, s."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from tallylight.audio.device import MicSource
    from tallylight.daemon import Daemon
    from tallylight.notify import Notifier
    from testkit.audio_rigs import pulse_mic

    n = 5 if ctx.quick else 50
    audio = {"device": "virtmon", "channels": 1, "block_ms": block_ms}
    cfg = base_config(ctx.tmp / f"state-mute-{block_ms}", audio=audio)
    rng = random.Random(2)
    opens: list[float] = []
    with pulse_mic(ctx.tmp / f"pa-mute-{block_ms}", rate=16000, channels=1) as mic:
        # Keep the null sink busy (a faint hiss), as a room is: an idle sink hands out audio in large lumps.
        mic.play(noise_pcm(n * 2.0 + 30), lead_s=0.0)
        factory = MockFactory(pin_class=MockPWMPin)
        pin = factory.pin(MUTE_PIN)

        class TimedMicSource(MicSource):
            """The real MicSource; times its stop(): the stream's stop and close (PortAudio stays up)."""

            def stop(self):
                t0 = time.monotonic()
                super().stop()
                close_s.append(time.monotonic() - t0)

        close_s: list[float] = []

        def plug_in(audio_cfg):
            pin.drive_low()  # the switch in the listening position
            # As the daemon does: the mute control's edge ends a waiting read at once.
            return TimedMicSource(audio_cfg, interrupt=daemon.mute.edge_event)

        daemon = Daemon(cfg, pin_factory=factory, notifier=Notifier(env={}), source_factory=plug_in)
        errors: list[BaseException] = []

        def run():
            try:
                daemon.run()
            except BaseException as e:  # reported below
                errors.append(e)

        thread = threading.Thread(target=run, name="daemon", daemon=True)
        t_unmute = time.monotonic()
        thread.start()
        try:
            for i in range(n):
                # Listening: the mic is open and blocks are flowing again.
                start = daemon.blocks_read
                if not wait_for(lambda start=start: daemon.mic is not None and daemon.mic.is_open
                              and daemon.blocks_read >= start + 3, 15):
                    raise RuntimeError(f"the daemon did not listen again after mute {i} ({errors or 'no error'})")
                opens.append(time.monotonic() - t_unmute)
                # A random moment, at a random phase of the block (and inside it, for long blocks).
                time.sleep(rng.uniform(0.05, 0.05 + 2 * block_ms / 1000 + 0.2))
                pin.drive_high()  # open the switch: mute
                if not wait_for(lambda i=i: len(daemon.mute_latencies) > i, 5):
                    raise RuntimeError(f"mute {i} was not recorded ({errors or 'no error'})")
                time.sleep(0.02)
                t_unmute = time.monotonic()
                pin.drive_low()
        finally:
            daemon.request_stop()
            thread.join(15)
    lat_ms = [x * 1000 for x in daemon.mute_latencies]
    return lat_ms, [x * 1000 for x in close_s[:len(lat_ms)]], opens
