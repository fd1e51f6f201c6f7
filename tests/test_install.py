"""scripts/install.sh: --root DIR installs on this machine, and a real install in a debootstrap root.

The installer runs from a frozen copy of the checkout (other work in this tree must not change the
"second run changes nothing" answer half-way through). The --root runs install the real package and
its dependencies into DIR/opt/tallylight/venv with pip, so the module takes a minute or two.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from debian_root import chroot_env, debian_root

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def freeze_checkout(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("device", "config", "systemd"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    (dest / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "install.sh", dest / "scripts" / "install.sh")
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    if (REPO / "README.md").exists():
        shutil.copy2(REPO / "README.md", dest / "README.md")
    return dest


def seed_root(root: Path) -> Path:
    """A target root with this machine's user database (useradd --root edits it there)."""
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "shadow", "gshadow"):
        shutil.copy2(f"/etc/{f}", root / "etc" / f)
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "boot" / "firmware" / "config.txt").write_text("[all]\ndtparam=audio=on\n")
    return root


def install(checkout: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", str(checkout / "scripts" / "install.sh"), *args], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, f"install.sh {' '.join(args)} failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    return r


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path with its type, mode, owner, mtime and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            content = os.readlink(p)
        elif p.is_file():
            content = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            content = ""
        out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, content)
    return out


def steps(stdout: str) -> dict[str, str]:
    """'tallylight install: step:   result' lines as {step: result}."""
    out = {}
    for line in stdout.splitlines():
        assert line.startswith("tallylight install: "), f"stray output line: {line!r}"
        step, _, result = line[len("tallylight install: "):].partition(":")
        out[step] = result.strip()
    return out


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return freeze_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="module")
def installed(checkout, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("useradd --root needs root (CI runs as root)")
    root = seed_root(tmp_path_factory.mktemp("root") / "r")
    t0 = time.monotonic()
    r = install(checkout, "--root", str(root), "--no-vosk")
    print(f"\nfresh --root install took {time.monotonic() - t0:.0f} s")
    return root, r


def test_fresh_install_lays_out_the_files(installed, checkout):
    root, r = installed
    s = steps(r.stdout)
    assert s["venv"] == "create /opt/tallylight/venv and install tallylight"
    assert s["user"].startswith("create system user tallylight")
    exe = root / "opt/tallylight/venv/bin/tallylight"
    v = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0 and "0." in v.stdout + v.stderr
    # Not editable: the package lives in the venv, not in the checkout.
    found = subprocess.run([str(root / "opt/tallylight/venv/bin/python"), "-c", "import tallylight; print(tallylight.__file__)"],
                           capture_output=True, text=True, timeout=60).stdout.strip()
    assert found.startswith(str(root / "opt/tallylight/venv/lib"))
    config = root / "etc/tallylight/tallylight.toml"
    assert config.read_bytes() == (checkout / "config/tallylight.toml").read_bytes()
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    for prof in (checkout / "config/profiles").glob("*.toml"):
        assert (root / "etc/tallylight/profiles" / prof.name).read_bytes() == prof.read_bytes()
    assert (root / "etc/systemd/system/tallylight.service").read_bytes() == (checkout / "systemd/tallylight.service").read_bytes()
    wants = root / "etc/systemd/system/multi-user.target.wants/tallylight.service"
    assert wants.is_symlink()
    assert not (root / "etc/systemd/system/tallylight.service.d/50-spi.conf").exists()  # default light is not SPI
    passwd = (root / "etc/passwd").read_text()
    assert any(line.startswith("tallylight:") and line.endswith(":/usr/sbin/nologin") for line in passwd.splitlines())
    groups = {line.split(":")[0]: line.split(":")[3].split(",") for line in (root / "etc/group").read_text().splitlines()}
    assert all("tallylight" in groups[g] for g in ("audio", "gpio", "spi"))
    assert "--root" in s["start"] or "not running" in s["start"]


def test_second_run_changes_nothing(installed, checkout):
    root, _ = installed
    before = snapshot(root)
    r = install(checkout, "--root", str(root), "--no-vosk")
    assert snapshot(root) == before
    for step, result in steps(r.stdout).items():
        assert result.startswith(("nothing to do", "skipped")), f"{step}: {result}"


def test_dry_run_changes_nothing(installed, checkout, tmp_path):
    root, _ = installed
    before = snapshot(root)
    r = install(checkout, "--root", str(root), "--no-vosk", "--dry-run", "--profile", "respeaker-2mic")
    assert snapshot(root) == before, r.stdout
    empty = seed_root(tmp_path / "empty")
    before = snapshot(empty)
    r = install(checkout, "--root", str(empty), "--no-vosk", "--dry-run")
    assert snapshot(empty) == before
    s = steps(r.stdout)
    assert s["venv"].startswith("would create") and s["unit"].startswith("would install")
    assert s["config"].startswith("would write") and s["enable"].startswith("would enable")


def test_unknown_profile_is_one_line_naming_the_choices(installed, checkout):
    root, _ = installed
    r = install(checkout, "--root", str(root), "--profile", "respeaker-9mic", check=False)
    assert r.returncode != 0 and r.stderr.count("\n") == 1
    assert "no profile 'respeaker-9mic'" in r.stderr and "respeaker-2mic" in r.stderr


def test_upgrade_keeps_the_owners_config_and_ledger(installed, checkout):
    root, _ = installed
    config = root / "etc/tallylight/tallylight.toml"
    config.write_text(config.read_text().replace('log_level = "info"', 'log_level = "debug"'))
    ledger = root / "var/lib/tallylight/ledger.jsonl"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_text('{"event":"start","seq":0}\n')
    kept = {p: p.read_bytes() for p in (config, ledger)}
    # A new version of the code: the installer must notice and upgrade the venv.
    init = checkout / "device/tallylight/__init__.py"
    init.write_text(init.read_text() + "\n# upgrade marker\n")
    r = install(checkout, "--root", str(root), "--no-vosk")
    s = steps(r.stdout)
    assert s["venv"] == "upgrade tallylight in /opt/tallylight/venv"
    assert s["config"].startswith("nothing to do (kept your")
    assert {p: p.read_bytes() for p in kept} == kept
    marker = subprocess.run([str(root / "opt/tallylight/venv/bin/python"), "-c",
                             "import tallylight, pathlib; print('upgrade marker' in pathlib.Path(tallylight.__file__).read_text())"],
                            capture_output=True, text=True, timeout=60).stdout.strip()
    assert marker == "True"


def test_profile_on_first_config_fills_in_the_profile_and_enables_spi(installed, checkout):
    root, _ = installed
    config = root / "etc/tallylight/tallylight.toml"
    saved = config.read_bytes()
    config.unlink()
    try:
        r = install(checkout, "--root", str(root), "--no-vosk", "--profile", "respeaker-2mic")
        s = steps(r.stdout)
        assert s["config"] == "write /etc/tallylight/tallylight.toml (profile respeaker-2mic)"
        merged = tomllib.loads(config.read_text())
        profile = tomllib.loads((checkout / "config/profiles/respeaker-2mic.toml").read_text())
        for section, keys in profile.items():
            for key, value in keys.items():
                assert merged[section][key] == value, f"{section}.{key}"
        # Still the commented default file, and a config tallylight accepts.
        assert config.read_text().count("\n#") >= (checkout / "config/tallylight.toml").read_text().count("\n#")
        sys.path.insert(0, str(checkout / "device"))
        check = subprocess.run([sys.executable, "-c", "import sys; from tallylight.config import load; load(sys.argv[1])", str(config)],
                               capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(checkout / "device")))
        assert check.returncode == 0, check.stderr
        dropin = root / "etc/systemd/system/tallylight.service.d/50-spi.conf"
        assert "DeviceAllow=char-spi rw" in dropin.read_text()
        assert "dtparam=spi=on" in (root / "boot/firmware/config.txt").read_text().splitlines()
        again = steps(install(checkout, "--root", str(root), "--no-vosk").stdout)
        assert again["spi unit"] == "nothing to do" and again["spi"] == "nothing to do (enabled)"
    finally:
        config.write_bytes(saved)
    # Back on a non-SPI light, the drop-in goes.
    s = steps(install(checkout, "--root", str(root), "--no-vosk").stdout)
    assert s["spi unit"].startswith("remove") and not dropin.exists()


def test_home_assistant_adds_the_uplink_user_key_and_unit_and_says_what_to_enter(installed, checkout):
    root, _ = installed
    assert not (root / "etc/systemd/system/tallylight-uplink.service").exists()  # only when asked for
    r = install(checkout, "--root", str(root), "--no-vosk", "--home-assistant")
    s = steps(r.stdout)
    assert s["uplink user"].startswith("create system user tallylight-uplink")
    assert s["venv"] == "upgrade tallylight in /opt/tallylight/venv"  # now with the uplink extra
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    uid = int(users["tallylight-uplink"][2])
    assert users["tallylight-uplink"][6] == "/usr/sbin/nologin"
    groups = {line.split(":")[0]: line.split(":")[3].split(",") for line in (root / "etc/group").read_text().splitlines()}
    assert "tallylight-uplink" in groups["tallylight"]
    assert not any("tallylight-uplink" in groups[g] for g in ("audio", "gpio", "spi"))
    key = root / "var/lib/tallylight-uplink/api.key"
    st = key.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, uid)
    assert (key.parent.stat().st_mode & 0o777, key.parent.stat().st_uid) == (0o700, uid)
    assert len(base64.b64decode(key.read_text().strip(), validate=True)) == 32
    assert (root / "etc/systemd/system/tallylight-uplink.service").read_bytes() == \
        (checkout / "systemd/tallylight-uplink.service").read_bytes()
    assert (root / "etc/systemd/system/multi-user.target.wants/tallylight-uplink.service").is_symlink()
    # What to enter in Home Assistant: the integration, the port and this key.
    assert "Add integration > ESPHome" in r.stdout and "port 6053" in r.stdout
    assert f"encryption key: {key.read_text().strip()}" in r.stdout
    py = root / "opt/tallylight/venv/bin/python"
    imp = subprocess.run([str(py), "-c", "import aioesphomeapi, aiohttp, hassil, home_assistant_intents"],
                         capture_output=True, text=True, timeout=60)
    assert imp.returncode == 0, imp.stderr
    # Again: nothing changes, and the key is kept (Home Assistant holds it), not printed again.
    before = snapshot(root)
    again = install(checkout, "--root", str(root), "--no-vosk", "--home-assistant")
    assert snapshot(root) == before
    for step, result in steps(again.stdout).items():
        assert result.startswith(("nothing to do", "skipped")), f"{step}: {result}"
    assert key.read_text().strip() not in again.stdout


def test_uninstall_needs_a_choice_without_a_terminal(installed, checkout):
    root, _ = installed
    r = install(checkout, "--root", str(root), "--uninstall", check=False)
    assert r.returncode != 0 and "--keep-data" in r.stderr and "--purge" in r.stderr
    assert (root / "opt/tallylight/venv").exists()


def test_uninstall_keep_data_then_purge(installed, checkout):
    root, _ = installed
    ledger = root / "var/lib/tallylight/ledger.jsonl"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_text('{"event":"start","seq":0}\n')
    witness = root / "var/lib/tallylight-witness/ledger.witness"
    witness.parent.mkdir(parents=True, exist_ok=True)
    witness.write_text('{"seq":0,"hash":"x"}\n')
    install(checkout, "--root", str(root), "--uninstall", "--keep-data")
    assert not (root / "opt/tallylight").exists()
    assert not (root / "etc/systemd/system/tallylight.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/tallylight.service").exists()
    assert (root / "etc/tallylight/tallylight.toml").exists() and ledger.exists() and witness.exists()
    r = install(checkout, "--root", str(root), "--uninstall", "--purge")
    assert not (root / "etc/tallylight").exists() and not (root / "var/lib/tallylight").exists()
    assert not witness.parent.exists()
    assert "tallylight:" not in (root / "etc/passwd").read_text()
    assert steps(r.stdout)["venv"].startswith("nothing to do")


# ---- a real install in a Debian root ---------------------------------------------------------------


@pytest.fixture
def bookworm_root(tmp_path):
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        pytest.skip("needs root and debootstrap (scripts/test installs it; CI runs as root)")
    root = tmp_path / "bookworm"
    with debian_root(root) as took:
        print(f"\ndebootstrap took {took:.0f} s")
        yield root


@pytest.mark.heavy_root
def test_real_install_in_a_debian_bookworm_root(bookworm_root, checkout, synth):
    root = bookworm_root
    shutil.copytree(checkout, root / "root/tallylight")
    wav = synth("okay nabu", lead_s=0.5, tail_s=1.0)
    shutil.copy(wav, root / "root/okay-nabu.wav")

    def chroot(*cmd: str, timeout: float = 1500) -> subprocess.CompletedProcess:
        return subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, timeout=timeout,
                              env=chroot_env(), stdin=subprocess.DEVNULL)

    t0 = time.monotonic()
    r = chroot("bash", "/root/tallylight/scripts/install.sh", "--no-vosk")
    took = time.monotonic() - t0
    print(f"\ninstall.sh in the bookworm root took {took:.0f} s")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    s = steps(r.stdout)
    assert s["packages"].startswith("apt-get install") and s["venv"].startswith("create")
    assert s["start"].startswith("skipped (systemd is not running")
    again = chroot("bash", "/root/tallylight/scripts/install.sh", "--no-vosk")
    assert again.returncode == 0, again.stderr
    for step, result in steps(again.stdout).items():
        assert result.startswith(("nothing to do", "skipped")), f"{step}: {result}"
    # The installed unit verifies cleanly there: the real ExecStart, user and groups exist.
    v = chroot("systemd-analyze", "verify", "/etc/systemd/system/tallylight.service")
    assert (v.returncode, v.stdout, v.stderr) == (0, "", "")
    # And the installed daemon's pipeline hears the wake word with Debian's own Python.
    heard = chroot("/opt/tallylight/venv/bin/tallylight", "listen", "--json", "/root/okay-nabu.wav",
                   "--config", "/etc/tallylight/tallylight.toml", timeout=300)
    assert heard.returncode == 0 and '"wake"' in heard.stdout, heard.stdout + heard.stderr
