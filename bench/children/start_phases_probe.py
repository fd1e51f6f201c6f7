"""The steps of `tallylight run`'s start-up, in the order Daemon._bring_up takes them, each timed
(table 5's breakdown). Prints one JSON line: [[step, monotonic time at its end], ...].

    python -m bench.children.start_phases_probe CONFIG
"""

import time

STARTED = time.monotonic()  # the first line run: the end of Python's own start-up


def main(config_path: str) -> None:
    marks = [("python start-up", STARTED)]
    # What `run` imports, timed as a step of its own: hence imported here, not at the top.
    import functools
    import io
    import json

    from tallylight import cli, config, daemon, pipeline, responder, vad, wake  # noqa: F401 - imported to be timed
    from tallylight.audio import device
    from tallylight.hardware import indicator, mute, pins
    from tallylight.speech import understand

    marks.append(("imports", time.monotonic()))
    cfg = config.load(config_path)
    from tallylight.gate import PrivacyGate
    from tallylight.ledger import Ledger

    factory = pins.make_pin_factory(cfg.gpio.pin_factory)
    light = indicator.make_indicator(cfg.indicator, pin_factory=factory, out=io.StringIO())
    make_gate = functools.partial(PrivacyGate, light, Ledger(cfg.state_dir / "ledger.jsonl"))
    control = mute.MuteControl(cfg.mute, pin_factory=factory, initially_muted=False)
    marks.append(("config, ledger, light, mute control", time.monotonic()))
    consumer = understand.make_understander(cfg)
    marks.append(("recognizer + grammar (make_understander)", time.monotonic()))
    pipe = daemon.build_pipeline(cfg, make_gate, consumer)
    marks.append(("wake engine + VAD (build_pipeline)", time.monotonic()))
    resp = responder.Responder(cfg, pipe, voice_mute=lambda: None, pin_factory=factory)
    marks.append(("responder (actions, reply speaker)", time.monotonic()))
    mic = device.MicSource(cfg.audio)
    mic.open()
    marks.append(("PortAudio init + device choice + open (MicSource.open)", time.monotonic()))
    mic.read()
    marks.append(("first 20 ms block (MicSource.read)", time.monotonic()))
    mic.close()
    resp.close()
    control.close()
    print(json.dumps(marks))


if __name__ == "__main__":
    import sys

    main(sys.argv[1])
