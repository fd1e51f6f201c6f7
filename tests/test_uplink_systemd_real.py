"""systemd/tallylight-uplink.service run for real under systemd (tests/systemd_rig.py), beside a stand-in
for the daemon's socket end, with Home Assistant's client library connecting over the rig's loopback.

Proves the shipped sandbox lets the uplink do its job (Noise handshake under MemoryDenyWriteExecute, TCP on
the local network, the daemon's socket through the `tallylight` group) and the daemon's SO_PEERCRED check
sees the uplink's own user. Changes to the unit, as in test_systemd_real.py: ExecStart points at this
checkout's venv, output goes to a file, and ProtectHome=tmpfs plus read-only binds show this venv's Python
(which lives under /root here; on a Pi it is /usr/bin/python3).
"""

from __future__ import annotations

import base64
import os
import sys
import time
from pathlib import Path

import pytest

from systemd_rig import SystemdRig, unavailable

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
UPLINK_UID = 61300
DAEMON_UID = 61234

pytestmark = [pytest.mark.slow, pytest.mark.skipif(unavailable() is not None, reason=f"systemd rig: {unavailable()}")]

FAKE_DAEMON = r"""
import pwd, time
from pathlib import Path
from tallylight.uplink import messages
from tallylight.uplink.link import UplinkLink
link = UplinkLink(Path("/run/tallylight/uplink.sock"), pwd.getpwnam("tallylight-uplink").pw_uid)
link.open()
told = 0
while True:
    for m in link.poll():
        print(repr(m), flush=True)
    if link.connections > told and link.connected:
        told = link.connections
        print(f"uplink connected as pid {link._peer.pid}", flush=True)
        link.send(messages.State("muted"))
    time.sleep(0.01)
"""

HOME_ASSISTANT = r"""
import asyncio, sys
from aioesphomeapi import APIClient
async def main():
    api = APIClient("127.0.0.1", 6053, None, noise_psk=sys.argv[1], client_info="rig")
    await api.connect(login=True)
    info = await api.device_info()
    states = {}
    api.subscribe_states(lambda s: states.__setitem__(s.key, s))
    async with asyncio.timeout(20):
        while not (len(states) == 3 and states[1].state):
            await asyncio.sleep(0.01)
    print(info.name, "muted" if states[1].state else "?", flush=True)
    await api.disconnect()
asyncio.run(main())
"""


def _visible() -> list[str]:
    extra = [f"BindReadOnlyPaths={REPO}"]
    python_home = Path(sys.base_prefix).resolve()
    if python_home.parts[1:2] in (("root",), ("home",)):
        extra.append(f"BindReadOnlyPaths={python_home}")
    return extra


def uplink_unit(rig: SystemdRig, log: Path) -> str:
    text = (REPO / "systemd" / "tallylight-uplink.service").read_text()
    old = "ExecStart=/opt/tallylight/venv/bin/tallylight uplink --config /etc/tallylight/tallylight.toml"
    assert old in text
    text = text.replace(old, f"ExecStart={VENV_BIN / 'tallylight'} uplink --config {REPO / 'config/tallylight.toml'}"
                             " --name tallylight-rig --no-mdns")
    text = text.replace("ProtectHome=yes", "ProtectHome=tmpfs")
    extra = [f"StandardOutput=append:{rig.inside(log)}", f"StandardError=append:{rig.inside(log)}", *_visible()]
    return text.replace("[Install]", "\n".join(extra) + "\n\n[Install]")


def daemon_unit(rig: SystemdRig, script: Path, log: Path) -> str:
    # The daemon's socket end as the daemon's unit sets it up: its user, its RuntimeDirectory (0750).
    return "\n".join([
        "[Service]", "User=tallylight", "Group=tallylight", "UMask=0077",
        "RuntimeDirectory=tallylight", "RuntimeDirectoryMode=0750", "ProtectHome=tmpfs", *_visible(),
        f"ExecStart={sys.executable} {rig.inside(script)}",
        f"StandardOutput=append:{rig.inside(log)}", f"StandardError=append:{rig.inside(log)}", ""])


def wait_for_text(path: Path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in (got := path.read_text()):
            return got
        time.sleep(0.2)
    return path.read_text() if path.exists() else "(no file)"


def test_the_shipped_sandbox_serves_home_assistant_and_reaches_the_daemons_socket(tmp_path):
    rig = SystemdRig(tmp_path)
    rig.add_user("tallylight", uid=DAEMON_UID)
    rig.add_user("tallylight-uplink", groups=["tallylight"], uid=UPLINK_UID)
    # The key as the installer will leave it: in the uplink's state folder, its own, mode 0600.
    key_dir = tmp_path / "var-lib" / "tallylight-uplink"
    key_dir.mkdir(mode=0o700)
    key = base64.b64encode(os.urandom(32)).decode()
    (key_dir / "api.key").write_text(key + "\n")
    (key_dir / "api.key").chmod(0o600)
    for p in (key_dir, key_dir / "api.key"):
        os.chown(p, UPLINK_UID, UPLINK_UID)
    script = tmp_path / "fake_daemon.py"
    script.write_text(FAKE_DAEMON)
    script.chmod(0o644)
    daemon_log, uplink_log = tmp_path / "daemon.log", tmp_path / "uplink.log"
    rig.add_unit("tallylight.service", daemon_unit(rig, script, daemon_log))
    rig.add_unit("tallylight-uplink.service", uplink_unit(rig, uplink_log))
    try:
        rig.boot()
        rig.run("ip", "link", "set", "lo", "up", check=True)
        rig.systemctl("start", "tallylight.service", check=True)
        rig.systemctl("start", "tallylight-uplink.service", check=True)
        got = wait_for_text(daemon_log, "uplink connected")
        state = rig.show("tallylight-uplink.service", "ActiveState", "MainPID")
        diag = f"\n--- uplink log ---\n{uplink_log.read_text() if uplink_log.exists() else ''}\n--- daemon ---\n{got}"
        assert state["ActiveState"] == "active", diag
        assert f"uplink connected as pid {state['MainPID']}" in got, diag
        assert "UplinkHello(software='tallylight-uplink" in got, diag
        ha = rig.run(sys.executable, "-c", HOME_ASSISTANT, key, timeout=60)
        assert ha.stdout.split() == ["tallylight-rig", "muted"], ha.stderr[-2000:] + diag
        assert "Traceback" not in uplink_log.read_text()
    finally:
        rig.close()
