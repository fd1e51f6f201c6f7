"""`tallylight uplink`: the uplink process. Runs the ESPHome API server for Home Assistant, announces it on
mDNS, and keeps the connection to the daemon's socket. It opens no audio device, ever (P6)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import os
import re
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path

from tallylight import __version__
from tallylight.errors import TallylightError
from tallylight.uplink.daemon_client import DaemonBridge, cancel_and_wait
from tallylight.uplink.home_assistant import HomeAssistantClient, HomeAssistantOptions
from tallylight.uplink.private_file import PrivateFileError, read_private
from tallylight.uplink.server import ApiServer, DeviceIdentity

_LOG = logging.getLogger(__name__)


class UplinkKeyError(TallylightError):
    """The API key file is missing, readable by others, or not a key."""

    exit_code = 78  # EX_CONFIG


@dataclass(frozen=True, slots=True)
class UplinkOptions:
    socket: Path
    host: str
    port: int
    key_file: Path | None  # None: plaintext, only when the owner asks for it
    name: str | None
    mdns: bool
    wake_words: tuple[tuple[str, str], ...]
    home_assistant: HomeAssistantOptions | None = None  # None: no conversation path (no url in the config)
    audio_mode: bool = False  # home_assistant.mode = "audio" in the config file (the daemon's Hello must agree)


def new_key(path: Path) -> str:
    """Write a fresh 32-byte key, readable by this user only; refuse to overwrite one. Returns its base64."""
    key = base64.b64encode(os.urandom(32)).decode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UplinkKeyError(f"{path} exists already: remove it first to make a new key "
                             "(Home Assistant then needs the new one)") from None
    except OSError as e:
        raise UplinkKeyError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def load_key(path: Path) -> bytes:
    """The PSK in a key file that only this user can read (the check names the fix when it fails)."""
    try:
        text = read_private(path, "API key", f"make one with `tallylight uplink --new-key --key-file {path}`, "
                            "or run with --plaintext", max_chars=200)
    except PrivateFileError as e:
        raise UplinkKeyError(str(e)) from None
    try:
        psk = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        psk = b""
    if len(psk) != 32:
        raise UplinkKeyError(f"{path} does not hold a base64 32-byte key: make a new one with --new-key")
    return psk


def identity(name: str | None, wake_words: tuple[tuple[str, str], ...]) -> DeviceIdentity:
    node = uuid.getnode()
    mac = ":".join(f"{(node >> s) & 0xFF:02X}" for s in range(40, -8, -8))
    if name is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", name):
        raise TallylightError(f"--name {name[:40]!r}: use 1-31 lowercase letters, digits and hyphens (it becomes "
                              "the device's mDNS host name)")
    node_name = name or f"tallylight-{mac.replace(':', '')[-6:].lower()}"
    return DeviceIdentity(node_name, name or f"tallylight {node_name[-6:]}", mac, __version__, wake_words)


def _addresses(host: str) -> list[str]:
    if host not in ("0.0.0.0", ""):
        return [host]
    import ifaddr

    return [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
            if isinstance(ip.ip, str) and not ip.ip.startswith("127.")]


async def serve(opts: UplinkOptions, ready: asyncio.Event | None = None) -> None:
    psk = load_key(opts.key_file) if opts.key_file is not None else None
    if psk is None:
        _LOG.warning("the ESPHome API runs in PLAINTEXT (--plaintext): anyone on the network can talk to it")
    ident = identity(opts.name, opts.wake_words)
    ha = HomeAssistantClient(opts.home_assistant) if opts.home_assistant is not None else None
    bridge = DaemonBridge(opts.socket, f"tallylight-uplink {__version__}", home_assistant=ha)
    server = ApiServer(ident, bridge, psk=psk, audio_mode=opts.audio_mode)
    bridge.server = server
    port = await server.start(opts.host, opts.port)
    zc = None
    if opts.mdns:
        from tallylight.uplink import mdns

        zc = await mdns.announce(mdns.service_info(ident, port, _addresses(opts.host), psk is not None))
        _LOG.info("announced %s on mDNS as %s", ident.name, mdns.SERVICE_TYPE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    link_task = asyncio.create_task(bridge.run())
    finder = None
    if ha is not None and not opts.home_assistant.device_id:
        finder = asyncio.create_task(_find_device(ha, ident.mac))
    # With a token, the names Home Assistant exposes to Assist extend the daemon's grammar.
    names_task = asyncio.create_task(bridge.follow_names()) if ha is not None else None
    print(f"tallylight uplink: {ident.name} on {opts.host}:{port}, daemon socket {opts.socket}", flush=True)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await cancel_and_wait(link_task)
        for task in (finder, names_task):
            if task is not None:
                await cancel_and_wait(task)
        await bridge.close()
        if zc is not None:
            await zc.async_close()
        await server.close()


async def _find_device(ha: HomeAssistantClient, mac: str) -> None:
    device_id = await ha.find_device_id(mac)
    if device_id is not None:
        ha.options = dataclasses.replace(ha.options, device_id=device_id)
        _LOG.info("Home Assistant knows this speaker as device %s: its area is the conversation's", device_id)


def run(opts: UplinkOptions) -> int:
    if opts.key_file is not None:
        load_key(opts.key_file)  # fail with the one-line error before anything starts
    try:
        asyncio.run(serve(opts))
    except OSError as e:
        raise TallylightError(f"the uplink cannot listen on {opts.host}:{opts.port}: {e.strerror}") from None
    return 0
