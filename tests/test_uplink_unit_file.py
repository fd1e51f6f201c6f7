"""systemd/tallylight-uplink.service: `systemd-analyze verify` prints nothing, exposure <= 2.0, network but
no devices and no audio/gpio/spi groups (P6), and it agrees with the CLI and the daemon's unit."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_unit_file import directives, exposure

from tallylight import cli, config

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "tallylight-uplink.service"
DAEMON_UNIT = REPO / "systemd" / "tallylight.service"
INSTALLED_EXEC = "/opt/tallylight/venv/bin/tallylight"
MAX_EXPOSURE = 2.0

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                reason="needs systemd-analyze (apt-get install systemd)")


@pytest.fixture
def unit_copy(tmp_path) -> Path:
    exe = Path(sys.executable).parent / "tallylight"
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_EXEC} " in text
    out = tmp_path / "tallylight-uplink.service"
    out.write_text(text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={exe} "))
    return out


def test_verify_prints_nothing(unit_copy):
    r = subprocess.run(["systemd-analyze", "verify", str(unit_copy)], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_exposure_is_at_most_2_0_and_the_score_is_sensitive(unit_copy, tmp_path):
    score = exposure(unit_copy)
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}"
    plain = tmp_path / "plain.service"
    plain.write_text("[Service]\n" + "".join(f"{k}={v}\n" for k, v in directives(unit_copy.read_text())
                                             if k in ("Type", "ExecStart", "User", "Group")))
    assert exposure(plain) > 5


def test_no_devices_and_no_audio_gpio_or_spi_group():
    d = directives(UNIT.read_text())
    keys = dict(d)
    assert keys["DevicePolicy"] == "closed" and keys["PrivateDevices"] == "yes"
    assert not any(k == "DeviceAllow" for k, _ in d)
    groups = " ".join(v for k, v in d if k in ("SupplementaryGroups", "Group")).split()
    assert groups == ["tallylight-uplink", "tallylight"] and not {"audio", "gpio", "spi"} & set(groups)
    assert keys["User"] == "tallylight-uplink" and "DynamicUser" not in keys
    assert keys["CapabilityBoundingSet"] == "" and keys["NoNewPrivileges"] == "yes"


def test_network_is_ip_and_local_only():
    d = directives(UNIT.read_text())
    families = [v for k, v in d if k == "RestrictAddressFamilies"]
    assert families == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert ("IPAddressDeny", "any") in d and "PrivateNetwork" not in dict(d)
    allow = " ".join(v for k, v in d if k == "IPAddressAllow").split()
    assert "any" not in allow and "localhost" in allow and "192.168.0.0/16" in allow


def test_it_agrees_with_the_cli_and_the_daemons_unit():
    keys = dict(directives(UNIT.read_text()))
    argv = keys["ExecStart"].split()
    assert argv[:2] == [INSTALLED_EXEC, "uplink"]
    args = cli._parser().parse_args(argv[1:])
    assert args.key_file == Path(f"/var/lib/{keys['StateDirectory']}/api.key")
    assert args.key_file == cli._parser().parse_args(["uplink"]).key_file  # the CLI default is the unit's
    daemon = dict(directives(DAEMON_UNIT.read_text()))
    # The daemon's socket (home_assistant.socket, read by both from the one config file) lives in its
    # RuntimeDirectory, whose group the uplink joins.
    assert Path(config.HomeAssistantConfig().socket).parent == Path("/run") / daemon["RuntimeDirectory"]
    assert not hasattr(args, "socket")
    assert keys["SupplementaryGroups"] == daemon["Group"]


def test_every_directive_has_a_comment_saying_why():
    lines = UNIT.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", "[")) and "=" in line:
            j = i - 1
            while j >= 0 and lines[j] and not lines[j].startswith(("#", "[")):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f"line {i + 1} ({line}) has no comment above it"
