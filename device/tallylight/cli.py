"""The `tallylight` command: run, listen, check, ledger, devices, models, uplink.

Every verb takes `--config F`. Errors a user can cause are one line on stderr and an exit code
(78 for config), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tallylight import __version__
from tallylight import config as config_mod
from tallylight.choices import HomeAssistantMode, LogLevel
from tallylight.errors import TallylightError

_LOG = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="F", type=Path,
                        help="config file (default: /etc/tallylight/tallylight.toml if it exists, else config/tallylight.toml)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    p = argparse.ArgumentParser(prog="tallylight", description="An offline smart speaker whose light never lies.")
    p.add_argument("--version", action="version", version=f"tallylight {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    sub.add_parser("run", parents=[common], help="run the speaker (the audio daemon)")
    listen = sub.add_parser("listen", parents=[common], help="run the same pipeline on recordings, as fast as possible")
    listen.add_argument("files", nargs="+", metavar="FILE", type=Path, help="WAV files, any rate and channel count")
    listen.add_argument("--json", action="store_true", help="one JSON object per event and line")
    listen.add_argument("--act", action="store_true", help="carry out the actions of recognized commands")
    sub.add_parser("check", parents=[common], help="check the config, audio devices, GPIO and engines")
    ledger = sub.add_parser("ledger", parents=[common], help="show when the mic was muted, listening, capturing or uploading")
    ledger.add_argument("--verify", action="store_true", help="check the hash chain: detects edits, deletions and truncation")
    ledger.add_argument("--file", type=Path, help="a ledger file (default: ledger.jsonl in the configured state directory)")
    view = ledger.add_mutually_exclusive_group()
    view.add_argument("--html", metavar="PAGE", type=Path,
                      help="write one self-contained page: a timeline per day, every capture and upload, the verification")
    view.add_argument("--follow", action="store_true", help="print the ledger, then each change as it happens (Ctrl-C ends)")
    sub.add_parser("devices", parents=[common], help="list audio input devices")
    models = sub.add_parser("models", parents=[common], help="speech models")
    msub = models.add_subparsers(dest="models_verb", required=True, metavar="ACTION")
    # The same options after the action too (`models download NAME --config F`); SUPPRESS keeps an
    # option given before the action from being reset to its default by this second parser.
    again = argparse.ArgumentParser(add_help=False)
    again.add_argument("--config", metavar="F", type=Path, default=argparse.SUPPRESS, help="config file")
    again.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    dl = msub.add_parser("download", parents=[again], help="download and check a vosk model")
    dl.add_argument("name", help="model name, e.g. small-en-us")
    dl.add_argument("--dest", type=Path, help="folder to unpack into (default: <state dir>/models)")
    up = sub.add_parser("uplink", parents=[common], help="the Home Assistant uplink (a separate process with network)")
    up.add_argument("--host", default="0.0.0.0", help="address for the ESPHome API (default: all)")
    up.add_argument("--port", type=int, default=6053, help="ESPHome API port (default 6053)")
    up.add_argument("--key-file", type=Path, default=Path("/var/lib/tallylight-uplink/api.key"),
                    help="the API's Noise key (only this user may read it)")
    up.add_argument("--new-key", action="store_true", help="write a new key to --key-file, print it and exit")
    up.add_argument("--plaintext", action="store_true", help="no encryption (anyone on the network can connect)")
    up.add_argument("--name", help="the device's name in Home Assistant and on mDNS")
    up.add_argument("--no-mdns", action="store_true", help="do not announce the device on the network")
    msub.add_parser("list", parents=[again], help="the known vosk models, and where each is installed")
    return p


def _load_config(args: argparse.Namespace) -> config_mod.Config:
    path = args.config or config_mod.default_path()
    return config_mod.load(path)


def _setup_logging(level: str) -> None:
    # journald adds the time; keep lines short and greppable.
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper()),
                        format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = _load_config(args)
        _setup_logging(LogLevel.DEBUG if args.verbose else cfg.daemon.log_level)
        for key, written, full in cfg.relative_paths:
            _LOG.info("%s = %r is relative to the config file's folder: using %s", key, written, full)
        return _VERBS[args.verb](cfg, args)
    except TallylightError as e:
        print(f"tallylight: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def cmd_run(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from tallylight.daemon import Daemon

    daemon = Daemon(cfg, consumer_factory=_consumer_factory(cfg), respond=True)
    daemon.install_signal_handlers()
    return daemon.run()


def _consumer_factory(cfg: config_mod.Config):
    """The recognizer + command matcher, when the speech module is installed."""
    try:
        from tallylight.speech.understand import make_understander
    except ImportError:
        return None
    # exposed: Home Assistant's names, when the uplink sends them (the daemon rebuilds its grammar with them).
    return lambda exposed=None: make_understander(cfg, exposed)


def cmd_listen(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from tallylight.listen import listen_files

    return listen_files(cfg, args.files, as_json=args.json, act=args.act, consumer_factory=_consumer_factory(cfg))


def cmd_ledger(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from tallylight import ledger

    path = args.file or cfg.state_dir / "ledger.jsonl"
    if args.verify and not args.html:
        result = ledger.verify(path)
        print(result.summary(path))
        return 0 if result.ok else 1
    if not path.exists() and not args.follow:
        # With a witness, a missing ledger is not "not yet": verify says what was lost.
        gone = ledger.verify(path).problems[0] if ledger.witness_path(path).exists() else None
        print(f"tallylight: {gone or f'no ledger at {path} yet (it is written by `tallylight run`)'}", file=sys.stderr)
        return 1
    if path.exists() and not path.is_file():
        print(f"tallylight: {path} is not a ledger file (give the ledger.jsonl in daemon.state_dir)", file=sys.stderr)
        return 1
    try:
        if args.html:
            return _ledger_page(path, args.html)
        if args.follow:
            return _ledger_follow(path)
        for line in ledger.timeline(path):
            print(line)
    except OSError as e:
        print(f"tallylight: cannot read the ledger {path}: {e.strerror} (check its permissions)", file=sys.stderr)
        return 1
    return 0


def _ledger_page(path: Path, page: Path) -> int:
    from tallylight import ledger_page

    if page.is_dir():
        print(f"tallylight: --html {page} is a folder: give a file name such as {page / 'ledger.html'}", file=sys.stderr)
        return 1
    try:
        ledger_page.write(path, page)
    except OSError as e:
        print(f"tallylight: cannot write {page}: {e.strerror} (choose a folder you can write to)", file=sys.stderr)
        return 1
    print(f"wrote {page}: open it in a browser (it loads nothing from the network)")
    return 0


def _ledger_follow(path: Path) -> int:
    import threading

    from tallylight import ledger_page
    from tallylight.signals import call_on_signals

    stop = threading.Event()
    call_on_signals(lambda _signum: stop.set())  # not stop.set in a handler: see tallylight.signals
    if not path.exists():
        print(f"-- no ledger at {path} yet: waiting for `tallylight run` to write one", flush=True)
    ledger_page.follow(path, sys.stdout, stop)
    return 0


def cmd_devices(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from tallylight.audio.device import devices_report, list_input_devices, open_pyaudio, plan_capture
    from tallylight.errors import AudioDeviceError

    with open_pyaudio() as pa:
        print(devices_report(pa))
        if not list_input_devices(pa):
            return 0  # the report already says there is none and what to do
        try:
            plan = plan_capture(pa, cfg.audio)
        except AudioDeviceError as e:
            print(f"with this config: {e}")
            return 1
    print(f"with this config, `tallylight run` captures from {plan.describe()}")
    return 0


def cmd_check(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from tallylight.check import run_checks

    return run_checks(cfg, out=sys.stdout)


def cmd_models(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from tallylight.speech.models import download_model, models_report

    if args.models_verb == "list":
        print("\n".join(models_report(cfg.state_dir, cfg.recognizer.vosk_model)))
        return 0
    dest = args.dest or cfg.state_dir / "models"
    path = download_model(args.name, dest)
    print(f"model ready: {path}")
    print(f"set recognizer.vosk_model = \"{path}\" in {cfg.path or 'your config'}")
    return 0


def cmd_uplink(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from tallylight.uplink import main as uplink

    if args.new_key:
        print(f"API encryption key (enter it in Home Assistant): {uplink.new_key(args.key_file)}")
        return 0
    wake = ((cfg.wake.model, cfg.wake.model.replace("_", " ").title()),)
    if not cfg.home_assistant.enabled:
        # The daemon reads the same file: with this false it opens no socket, and the uplink waits for one.
        _LOG.warning("%s: home_assistant.enabled is false, so the daemon opens no socket for the uplink: "
                     "set it to true and restart tallylight", cfg.path or "the config")
    # The daemon's socket comes from the config file both processes read (home_assistant.socket), never
    # from a second setting that could disagree with it.
    return uplink.run(uplink.UplinkOptions(Path(cfg.home_assistant.socket), args.host, args.port, None if args.plaintext else args.key_file,
                                           args.name, not args.no_mdns, wake, _home_assistant(cfg),
                                           cfg.home_assistant.mode == HomeAssistantMode.AUDIO))


def _home_assistant(cfg: config_mod.Config):  # -> HomeAssistantOptions | None (its module needs aiohttp)
    ha = cfg.home_assistant
    if not ha.url:
        return None
    from tallylight.uplink import home_assistant

    return home_assistant.HomeAssistantOptions(
        home_assistant.check_url(ha.url), home_assistant.load_token(Path(ha.token_file)),
        ha.device_id or None, ha.pipeline or None, ha.timeout_s)


_VERBS = {"run": cmd_run, "listen": cmd_listen, "check": cmd_check, "ledger": cmd_ledger,
          "devices": cmd_devices, "models": cmd_models, "uplink": cmd_uplink}


if __name__ == "__main__":
    raise SystemExit(main())
