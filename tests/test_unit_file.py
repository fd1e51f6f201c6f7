"""systemd/tallylight.service: `systemd-analyze verify` prints nothing, exposure <= 0.7, P6 directives.

verify checks that ExecStart's program exists, so it runs on a copy whose ExecStart points at the
checkout's .venv/bin/tallylight (the only line changed). Unknown keys and bad values are only warnings
with exit 0, so any output at all fails the test.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "tallylight.service"
INSTALLED_EXEC = "/opt/tallylight/venv/bin/tallylight"
MAX_EXPOSURE = 0.7

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                reason="needs systemd-analyze (apt-get install systemd)")


def directives(text: str) -> list[tuple[str, str]]:
    """(key, value) for every directive, in order, without comments."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.append((key.strip(), value.strip()))
    return out


@pytest.fixture
def unit_copy(tmp_path) -> Path:
    exe = Path(sys.executable).parent / "tallylight"
    assert exe.exists(), f"{exe} missing: the package must be installed in this venv"
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_EXEC} " in text
    out = tmp_path / "tallylight.service"
    out.write_text(text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={exe} "))
    return out


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=120)


def test_verify_prints_nothing(unit_copy):
    r = analyze("verify", str(unit_copy))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_verify_would_catch_a_typo(unit_copy):
    # The negative control: the check above is only worth something if verify complains about this.
    unit_copy.write_text(unit_copy.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    r = analyze("verify", str(unit_copy))
    assert "ProtectSytem" in r.stdout + r.stderr


def exposure(unit: Path) -> float:
    r = analyze("security", "--offline=true", str(unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, f"no exposure line in:\n{r.stdout}\n{r.stderr}"
    return float(m.group(1))


def test_exposure_is_at_most_0_7(unit_copy):
    score = exposure(unit_copy)
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}"
    # And systemd's own threshold check agrees (its scale is 0-100).
    r = analyze("security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(unit_copy))
    assert r.returncode == 0, r.stdout[-2000:]


def test_exposure_score_is_sensitive(tmp_path, unit_copy):
    # Negative control: the same unit without its sandbox scores far worse, so the parse is real.
    kept = ("Type", "ExecStart", "User", "Group")
    plain = "[Service]\n" + "".join(f"{k}={v}\n" for k, v in directives(unit_copy.read_text()) if k in kept)
    p = tmp_path / "plain.service"
    p.write_text(plain)
    assert exposure(p) > 5


def test_no_network_directives_p6():
    d = directives(UNIT.read_text())
    assert ("PrivateNetwork", "yes") in d
    assert ("RestrictAddressFamilies", "AF_UNIX") in d
    assert [v for k, v in d if k == "RestrictAddressFamilies"] == ["AF_UNIX"]
    assert ("IPAddressDeny", "any") in d
    assert not any(k == "IPAddressAllow" for k, _ in d)


def test_notify_watchdog_and_restart():
    d = dict(directives(UNIT.read_text()))
    assert d["Type"] == "notify" and d["NotifyAccess"] == "main"
    assert d["WatchdogSec"].endswith("s") and d["Restart"] == "on-failure"
    assert d["ExecStart"] == f"{INSTALLED_EXEC} run --config /etc/tallylight/tallylight.toml"


def test_sandbox_directives():
    d = directives(UNIT.read_text())
    keys = dict(d)
    assert keys["User"] == "tallylight" and "DynamicUser" not in keys
    assert keys["SupplementaryGroups"].split() == ["audio", "gpio"]
    assert keys["DevicePolicy"] == "closed"
    allowed = [v for k, v in d if k == "DeviceAllow"]
    assert allowed == ["char-alsa rw", "char-gpiochip rw"]  # spidev only by the installer's drop-in
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "StateDirectory": "tallylight tallylight-witness", "RuntimeDirectory": "tallylight",
                       "ConfigurationDirectory": "tallylight", "CapabilityBoundingSet": "",
                       "NoNewPrivileges": "yes", "RestrictNamespaces": "yes",
                       "MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native",
                       "UMask": "0077", "ProtectProc": "invisible"}.items():
        assert keys.get(key) == value, key


def test_every_directive_has_a_comment_saying_why():
    lines = UNIT.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", "[")) and "=" in line:
            # Walk back over directives of the same group to the comment that explains them.
            j = i - 1
            while j >= 0 and lines[j] and not lines[j].startswith(("#", "[")):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f"line {i + 1} ({line}) has no comment above it"
