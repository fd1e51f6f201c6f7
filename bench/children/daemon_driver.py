"""The real Daemon with microWakeWord only (no recognizer) and simulated pins, listening on the
configured mic; READY=1 goes to NOTIFY_SOCKET. Table 4's "microWakeWord only" process.

    python -m bench.children.daemon_driver CONFIG
"""

import logging
import sys

from gpiozero.pins.mock import MockFactory, MockPWMPin

from tallylight import config
from tallylight.daemon import Daemon


def main(config_path: str) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config.load(config_path)
    factory = MockFactory(pin_class=MockPWMPin)

    def plug_in(audio_cfg):
        from tallylight.audio.device import MicSource

        factory.pin(cfg.mute.pin).drive_low()  # the switch in the listening position
        return MicSource(audio_cfg)

    daemon = Daemon(cfg, pin_factory=factory, source_factory=plug_in)
    daemon.install_signal_handlers()
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
