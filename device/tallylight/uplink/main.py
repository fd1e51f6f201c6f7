"""`tallylight uplink`: the uplink process. Runs the ESPHome API server for Home Assistant, announces it on
mDNS, and keeps the connection to the daemon's socket. It opens no audio device, ever (P6)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import signal
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from tallylight import __version__
from tallylight.errors import TallylightError
from tallylight.uplink.daemon_client import DaemonBridge, cancel_and_wait
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
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise UplinkKeyError(f"no API key at {path}: make one with `tallylight uplink --new-key --key-file "
                             f"{path}`, or run with --plaintext") from None
    except OSError as e:
        raise UplinkKeyError(f"cannot open the API key {path}: {e.strerror}") from None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UplinkKeyError(f"{path} is not a file")
        if st.st_uid != os.geteuid():
            raise UplinkKeyError(f"{path} belongs to uid {st.st_uid}, not to the uplink's user (uid {os.geteuid()}): "
                                 "chown it")
        if st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise UplinkKeyError(f"{path} can be read by others (mode {mode:04o}): chmod 600 {path}")
        text = f.read(200).strip()
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
    bridge = DaemonBridge(opts.socket, f"tallylight-uplink {__version__}")
    server = ApiServer(ident, bridge, psk=psk)
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
    print(f"tallylight uplink: {ident.name} on {opts.host}:{port}, daemon socket {opts.socket}", flush=True)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await cancel_and_wait(link_task)
        if zc is not None:
            await zc.async_close()
        await server.close()


def run(opts: UplinkOptions) -> int:
    if opts.key_file is not None:
        load_key(opts.key_file)  # fail with the one-line error before anything starts
    try:
        asyncio.run(serve(opts))
    except OSError as e:
        raise TallylightError(f"the uplink cannot listen on {opts.host}:{opts.port}: {e.strerror}") from None
    return 0
