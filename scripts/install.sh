#!/usr/bin/env bash
# Install tallylight as a service on Raspberry Pi OS (Bookworm/Trixie, 64-bit) or Debian.
#
#   sudo scripts/install.sh [--profile NAME] [--no-vosk]      install or upgrade (idempotent)
#   sudo scripts/install.sh --home-assistant ...              also the uplink to Home Assistant (its own unit)
#   sudo scripts/install.sh --dry-run ...                     print every step, change nothing
#   sudo scripts/install.sh --uninstall [--keep-data|--purge] remove (asks which when neither is given)
#   scripts/install.sh --root DIR ...                         install into DIR as a root prefix (tests)
#
# What it lays out: Debian packages; a system user `tallylight` (groups audio, gpio, spi);
# /opt/tallylight/venv with this checkout installed (not editable); /etc/tallylight/tallylight.toml
# (only when absent: an upgrade keeps yours) and /etc/tallylight/profiles/; the vosk model in
# /var/lib/tallylight/models; /etc/systemd/system/tallylight.service, enabled and started. The ledger
# in /var/lib/tallylight (and its witness in /var/lib/tallylight-witness) is never touched except by
# --uninstall --purge.
# --home-assistant adds the uplink (README "Home Assistant"): a second system user `tallylight-uplink`
# (group tallylight only: no audio, gpio or spi), the venv's uplink extra, its Noise key in
# /var/lib/tallylight-uplink/api.key (0600, that user's), and tallylight-uplink.service, enabled; it
# prints what to enter in Home Assistant. Without it nothing of the uplink is installed.
# Each step prints one line: what it did, "nothing to do", or (with --dry-run) what it would do.
set -euo pipefail

CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APT_PACKAGES=(python3-venv python3-dev gcc portaudio19-dev espeak-ng alsa-utils libatomic1 libspeexdsp1 ca-certificates)
# APA102 LED rings on SPI need the spidev module; the profile decides (indicator.kind = "apa102").

ROOT="" PROFILE="" VOSK=1 DRY=0 UNINSTALL=0 KEEP="" YES=0 HA=0
usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$(realpath -m "${2:?--root needs a folder}"); shift ;;
    --root=*) ROOT=$(realpath -m "${1#--root=}") ;;
    --profile) PROFILE=${2:?--profile needs a name}; shift ;;
    --profile=*) PROFILE=${1#--profile=} ;;
    --no-vosk) VOSK=0 ;;
    --home-assistant) HA=1 ;;
    --dry-run) DRY=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --keep-data) KEEP=keep ;;
    --purge) KEEP=purge ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
  esac
  shift
done

VENV=/opt/tallylight/venv
ETC=/etc/tallylight
STATE=/var/lib/tallylight
UNIT_DIR=/etc/systemd/system
UNIT=$UNIT_DIR/tallylight.service
DROPIN=$UNIT_DIR/tallylight.service.d/50-spi.conf
UPLINK_UNIT=$UNIT_DIR/tallylight-uplink.service
UPLINK_STATE=/var/lib/tallylight-uplink
UPLINK_KEY=$UPLINK_STATE/api.key
R() { printf '%s%s' "$ROOT" "$1"; }  # a system path inside the target root

say() { printf 'tallylight install: %-14s %s\n' "$1:" "$2"; }
die() { printf 'tallylight install: %s\n' "$*" >&2; exit 1; }
# do_or_say STEP WHAT CMD...: run CMD (or, with --dry-run, only say so), then one line.
do_or_say() {
  local step=$1 what=$2; shift 2
  if [ "$DRY" = 1 ]; then say "$step" "would $what"; return 0; fi
  "$@" || die "$step: failed to $what (the lines above say why)"
  say "$step" "$what"
}

[ "$(id -u)" -eq 0 ] || [ -n "$ROOT" ] || [ "$DRY" = 1 ] || die "run it as root: sudo $0 $*"
if [ -n "$PROFILE" ] && [ ! -f "$CHECKOUT/config/profiles/$PROFILE.toml" ]; then
  die "no profile '$PROFILE'; choose one of: $(cd "$CHECKOUT/config/profiles" && ls ./*.toml | sed 's#^\./##; s#\.toml$##' | tr '\n' ' ')"
fi
# systemctl talks to the running systemd only on a real system (not in --root, not in a chroot).
systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }
sysctl_() { if [ -n "$ROOT" ]; then systemctl --root="$ROOT" "$@"; else systemctl "$@"; fi; }

# ---- uninstall ---------------------------------------------------------------------------------
if [ "$UNINSTALL" = 1 ]; then
  if [ -z "$KEEP" ]; then
    if [ -t 0 ] && [ "$DRY" = 0 ]; then
      read -r -p "Also delete your config ($ETC) and ledger ($STATE)? [y/N] " a
      case "$a" in [yY]*) KEEP=purge ;; *) KEEP=keep ;; esac
    else
      die "--uninstall needs --keep-data (keep config and ledger) or --purge (delete them)"
    fi
  fi
  if systemd_running && systemctl is-active -q tallylight 2>/dev/null; then
    do_or_say service "stop tallylight.service" systemctl stop tallylight
  else say service "nothing to do (not running)"; fi
  if [ -L "$(R $UNIT_DIR/multi-user.target.wants/tallylight.service)" ]; then
    do_or_say enable "disable tallylight.service" sysctl_ disable -q tallylight
  else say enable "nothing to do (not enabled)"; fi
  if [ -e "$(R $UNIT)" ] || [ -d "$(R $UNIT_DIR/tallylight.service.d)" ]; then
    do_or_say unit "remove $UNIT" rm -rf "$(R $UNIT)" "$(R $UNIT_DIR/tallylight.service.d)"
    if systemd_running; then do_or_say reload "systemctl daemon-reload" systemctl daemon-reload; fi
  else say unit "nothing to do (no unit file)"; fi
  if [ -e "$(R $UPLINK_UNIT)" ]; then
    if systemd_running && systemctl is-active -q tallylight-uplink 2>/dev/null; then
      do_or_say uplink "stop tallylight-uplink.service" systemctl stop tallylight-uplink
    fi
    do_or_say uplink "disable and remove $UPLINK_UNIT" sh -c 'rm -f "$1" "$2"' _ \
      "$(R $UNIT_DIR/multi-user.target.wants/tallylight-uplink.service)" "$(R $UPLINK_UNIT)"
  fi
  if [ -d "$(R /opt/tallylight)" ]; then do_or_say venv "remove /opt/tallylight" rm -rf "$(R /opt/tallylight)"
  else say venv "nothing to do (no /opt/tallylight)"; fi
  if [ "$KEEP" = purge ]; then
    for d in $ETC $STATE $STATE-witness $UPLINK_STATE; do
      if [ -e "$(R $d)" ]; then do_or_say data "delete $d" rm -rf "$(R $d)"; else say data "nothing to do (no $d)"; fi
    done
    if grep -q '^tallylight:' "$(R /etc/passwd)" 2>/dev/null; then
      do_or_say user "delete user tallylight" userdel ${ROOT:+--root "$ROOT"} tallylight
    else say user "nothing to do (no user tallylight)"; fi
    if grep -q '^tallylight-uplink:' "$(R /etc/passwd)" 2>/dev/null; then
      do_or_say user "delete user tallylight-uplink" userdel ${ROOT:+--root "$ROOT"} tallylight-uplink
    fi
  else
    say data "kept $ETC, $STATE and $STATE-witness (your config, ledger and its witness) and the user tallylight"
  fi
  exit 0
fi

# ---- install -----------------------------------------------------------------------------------
# 1. Debian packages.
if [ -n "$ROOT" ]; then
  say packages "skipped (--root: install ${APT_PACKAGES[*]} on the target yourself)"
else
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then say packages "nothing to do"
  else
    apt_install() {
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
    }
    do_or_say packages "apt-get install ${missing[*]}" apt_install
  fi
fi

# 2. Groups and the system user. gpio and spi exist on Raspberry Pi OS (udev gives /dev/gpiochip*
#    and /dev/spidev* to them); on plain Debian they are made so the unit's groups resolve.
for g in audio gpio spi; do
  if grep -q "^$g:" "$(R /etc/group)" 2>/dev/null; then say "group $g" "nothing to do"
  else do_or_say "group $g" "create system group $g" groupadd ${ROOT:+--root "$ROOT"} --system "$g"; fi
done
if grep -q '^tallylight:' "$(R /etc/passwd)" 2>/dev/null; then
  have=$(awk -F: '$4 ~ /(^|,)tallylight(,|$)/ {print $1}' "$(R /etc/group)" | sort | tr '\n' ' ')
  if [ "$have" = "audio gpio spi " ] || [[ "$have" == *audio*gpio*spi* ]]; then say user "nothing to do"
  else do_or_say user "add tallylight to groups audio, gpio, spi" usermod ${ROOT:+--root "$ROOT"} -a -G audio,gpio,spi tallylight; fi
else
  do_or_say user "create system user tallylight (groups audio, gpio, spi)" \
    useradd ${ROOT:+--root "$ROOT"} --system --user-group --no-create-home --home-dir $STATE \
      --shell /usr/sbin/nologin --groups audio,gpio,spi --comment "tallylight speaker" tallylight
fi

# 2b. The uplink's own user (--home-assistant): the daemon accepts only its uid on its socket. Group
#     tallylight only, to reach /run/tallylight; never audio, gpio or spi (P6).
if [ "$HA" = 1 ]; then
  if grep -q '^tallylight-uplink:' "$(R /etc/passwd)" 2>/dev/null; then say "uplink user" "nothing to do"
  else
    do_or_say "uplink user" "create system user tallylight-uplink (group tallylight only)" \
      useradd ${ROOT:+--root "$ROOT"} --system --user-group --no-create-home --home-dir $UPLINK_STATE \
        --shell /usr/sbin/nologin --groups tallylight --comment "tallylight uplink to Home Assistant" tallylight-uplink
  fi
fi

# 3. The venv, with this checkout installed (not editable: the checkout can be deleted afterwards).
#    The stamp is a hash of everything pip would install, so an unchanged checkout is "nothing to do".
src_hash=$(cd "$CHECKOUT" && find pyproject.toml device/tallylight -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
             -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
EXTRAS=""
# The uplink's libraries (aioesphomeapi, aiohttp, zeroconf, hassil ...) only when the owner asks for them.
if [ "$HA" = 1 ] || [ -e "$(R $UPLINK_UNIT)" ]; then EXTRAS="[uplink]"; src_hash="$src_hash+uplink"; fi
stamp=$(R $VENV/.tallylight-source)
if [ -x "$(R $VENV/bin/python)" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$src_hash" ]; then
  say venv "nothing to do ($VENV is up to date)"
else
  make_venv() {
    [ -x "$(R $VENV/bin/python)" ] || python3 -m venv "$(R $VENV)" || return 1
    "$(R $VENV/bin/python)" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    # A copy of the checkout: pip builds in it, so a read-only or root-owned checkout is fine.
    local tmp; tmp=$(mktemp -d)
    cp -r "$CHECKOUT/pyproject.toml" "$CHECKOUT/device" "$tmp/"
    [ -f "$CHECKOUT/README.md" ] && cp "$CHECKOUT/README.md" "$tmp/" || touch "$tmp/README.md"
    rm -rf "$tmp/device/tallylight.egg-info"
    # pip's chatter goes to a log, shown only when it fails.
    if ! "$(R $VENV/bin/python)" -m pip install -q "$tmp$EXTRAS" >"$tmp.log" 2>&1; then
      tail -n 30 "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; return 1
    fi
    rm -rf "$tmp" "$tmp.log"
    echo "$src_hash" >"$stamp"
  }
  if [ -x "$(R $VENV/bin/python)" ]; then what="upgrade tallylight in $VENV"; else what="create $VENV and install tallylight"; fi
  do_or_say venv "$what" make_venv
  VENV_CHANGED=1
fi

# 4. Config: the owner's file is never overwritten. On first install with --profile, the config is
#    the shipped, fully commented tallylight.toml with the profile's values filled in.
install_if_changed() {  # STEP SRC DEST MODE: copy SRC to DEST when they differ
  local step=$1 src=$2 dest=$3 mode=$4
  if cmp -s "$src" "$(R "$dest")"; then say "$step" "nothing to do"; return 0; fi
  do_or_say "$step" "install $dest" install -D -m "$mode" "$src" "$(R "$dest")"
}
for f in "$CHECKOUT"/config/profiles/*.toml; do
  [ -e "$f" ] || continue
  if cmp -s "$f" "$(R $ETC/profiles/"$(basename "$f")")"; then :; else
    if [ "$DRY" = 1 ]; then PROFILES_DIRTY=1; else install -D -m 0644 "$f" "$(R $ETC/profiles/"$(basename "$f")")"; PROFILES_DIRTY=1; fi
  fi
done
if [ -n "${PROFILES_DIRTY:-}" ]; then say profiles "$([ "$DRY" = 1 ] && echo would\ )install $ETC/profiles/"
else say profiles "nothing to do"; fi
CONFIG=$(R $ETC/tallylight.toml)
write_config() {
  local tmp; tmp=$(mktemp)
  if [ -n "$PROFILE" ]; then
    python3 - "$CHECKOUT/config/tallylight.toml" "$CHECKOUT/config/profiles/$PROFILE.toml" "$PROFILE" >"$tmp" <<'PY'
import re, sys, tomllib
base, prof, name = sys.argv[1:4]
values = tomllib.load(open(prof, "rb"))
text = open(base).read().splitlines()
out, section, done = [f"# Hardware profile '{name}' applied by scripts/install.sh (see profiles/{name}.toml).", ""], None, set()
def fmt(v):
    if isinstance(v, bool): return "true" if v else "false"
    if isinstance(v, str): return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)
def flush(sec):
    for k, v in values.get(sec, {}).items():
        if (sec, k) not in done: out.append(f"{k} = {fmt(v)}"); done.add((sec, k))
for line in text:
    m = re.match(r"\[(\w+)\]\s*$", line)
    if m:
        if section: flush(section)
        section = m.group(1)
    k = re.match(r"(\w+)\s*=", line)
    if section and k and k.group(1) in values.get(section, {}) and not isinstance(values[section][k.group(1)], dict):
        out.append(f"{k.group(1)} = {fmt(values[section][k.group(1)])}"); done.add((section, k.group(1))); continue
    out.append(line)
if section: flush(section)
for sec, keys in values.items():
    if any((sec, k) not in done for k in keys):
        out.append(f"\n[{sec}]"); flush(sec)
print("\n".join(out))
PY
  else
    cp "$CHECKOUT/config/tallylight.toml" "$tmp"
  fi
  install -D -m 0640 "$tmp" "$CONFIG" && rm -f "$tmp"
  # Readable by the daemon's group, writable only by root.
  chown "0:$(awk -F: '$1=="tallylight"{print $3}' "$(R /etc/group)")" "$CONFIG" 2>/dev/null || true
}
if [ -f "$CONFIG" ]; then
  if [ -n "$PROFILE" ]; then say config "kept your $ETC/tallylight.toml (profile '$PROFILE' not applied: copy keys from $ETC/profiles/$PROFILE.toml)"
  else say config "nothing to do (kept your $ETC/tallylight.toml)"; fi
else
  do_or_say config "write $ETC/tallylight.toml${PROFILE:+ (profile $PROFILE)}" write_config
fi

# 5. SPI, when the light is an APA102 ring (the effective config decides).
needs_spi=0
cfg_src=$CONFIG; [ -f "$cfg_src" ] || cfg_src="$CHECKOUT/config/profiles/${PROFILE:-none}.toml"
if [ -f "$cfg_src" ] && python3 -c 'import sys,tomllib; sys.exit(tomllib.load(open(sys.argv[1],"rb")).get("indicator",{}).get("kind")!="apa102")' "$cfg_src" 2>/dev/null; then
  needs_spi=1
fi
DROPIN_TEXT='# Written by scripts/install.sh: the hardware profile drives APA102 LEDs over SPI.
[Service]
# /dev/spidev* for the LED ring (nothing else on SPI is used).
DeviceAllow=char-spi rw
# Raspberry Pi OS gives /dev/spidev* to the spi group.
SupplementaryGroups=spi'
if [ "$needs_spi" = 1 ]; then
  if [ "$(cat "$(R $DROPIN)" 2>/dev/null)" = "$DROPIN_TEXT" ]; then say "spi unit" "nothing to do"
  else do_or_say "spi unit" "allow /dev/spidev* in $DROPIN" sh -c 'mkdir -p "$(dirname "$1")" && printf "%s\n" "$2" >"$1"' _ "$(R $DROPIN)" "$DROPIN_TEXT"; DROPIN_CHANGED=1; fi
  bootcfg=""
  for c in /boot/firmware/config.txt /boot/config.txt; do [ -f "$(R $c)" ] && { bootcfg=$c; break; }; done
  if [ -z "$ROOT" ] && command -v raspi-config >/dev/null; then
    if [ "$(raspi-config nonint get_spi)" = 0 ]; then say spi "nothing to do (enabled)"
    else do_or_say spi "enable SPI with raspi-config (takes effect after a reboot)" raspi-config nonint do_spi 0; fi
  elif [ -n "$bootcfg" ]; then
    if grep -q '^dtparam=spi=on' "$(R $bootcfg)"; then say spi "nothing to do (enabled)"
    else do_or_say spi "add dtparam=spi=on to $bootcfg (takes effect after a reboot)" sh -c 'echo dtparam=spi=on >>"$1"' _ "$(R $bootcfg)"; fi
  else
    say spi "skipped: no raspi-config or /boot/firmware/config.txt here (not a Raspberry Pi?)"
  fi
else
  if [ -e "$(R $DROPIN)" ]; then do_or_say "spi unit" "remove $DROPIN (the light is not on SPI)" rm -f "$(R $DROPIN)"; DROPIN_CHANGED=1
  else say spi "nothing to do (the light is not on SPI)"; fi
fi

# 6. The vosk model (English, small), downloaded with a checksum and a progress bar.
if [ "$VOSK" = 0 ]; then say vosk "skipped (--no-vosk: pocketsphinx, bundled, recognizes speech)"
elif [ -n "$ROOT" ] && [ "$DRY" = 0 ]; then say vosk "skipped (--root)"
else
  get_model() {
    mkdir -p "$(R $STATE/models)" &&
    "$(R $VENV/bin/tallylight)" models download small-en-us --dest "$(R $STATE/models)" &&
    chown -R tallylight:tallylight "$(R $STATE)"
  }
  # `models download` itself says when the model is already there and checks it.
  do_or_say vosk "download the vosk model small-en-us into $STATE/models" get_model
fi

# 7. The unit: installed, enabled, (re)started when anything it runs changed.
if cmp -s "$CHECKOUT/systemd/tallylight.service" "$(R $UNIT)"; then say unit "nothing to do"
else do_or_say unit "install $UNIT" install -D -m 0644 "$CHECKOUT/systemd/tallylight.service" "$(R $UNIT)"; UNIT_CHANGED=1; fi
if [ -n "${UNIT_CHANGED:-}${DROPIN_CHANGED:-}" ] && systemd_running; then
  do_or_say reload "systemctl daemon-reload" systemctl daemon-reload
fi
if [ -L "$(R $UNIT_DIR/multi-user.target.wants/tallylight.service)" ]; then say enable "nothing to do"
else do_or_say enable "enable tallylight.service (starts at boot)" sysctl_ enable -q tallylight; fi
if ! systemd_running; then
  say start "skipped (systemd is not running here; it starts at the next boot)"
elif ! systemctl is-active -q tallylight; then
  do_or_say start "start tallylight.service" systemctl start tallylight
elif [ -n "${UNIT_CHANGED:-}${DROPIN_CHANGED:-}${VENV_CHANGED:-}" ]; then
  do_or_say start "restart tallylight.service (new version)" systemctl restart tallylight
else
  say start "nothing to do (running)"
fi

# 8. The uplink to Home Assistant (--home-assistant): its key, its unit, and what to tell Home Assistant.
if [ "$HA" = 1 ]; then
  uid=$(awk -F: '$1=="tallylight-uplink"{print $3}' "$(R /etc/passwd)" 2>/dev/null)
  make_key() {
    install -d -m 0700 "$(R $UPLINK_STATE)" &&
    "$(R $VENV/bin/tallylight)" uplink --new-key --key-file "$(R $UPLINK_KEY)" --config "$CHECKOUT/config/tallylight.toml" \
      >/dev/null &&
    chown -R "$uid:$uid" "$(R $UPLINK_STATE)"
  }
  if [ -s "$(R $UPLINK_KEY)" ]; then say "uplink key" "nothing to do (kept $UPLINK_KEY)"
  else do_or_say "uplink key" "generate the API encryption key in $UPLINK_KEY (readable by tallylight-uplink only)" make_key; fi
  if cmp -s "$CHECKOUT/systemd/tallylight-uplink.service" "$(R $UPLINK_UNIT)"; then say "uplink unit" "nothing to do"
  else
    do_or_say "uplink unit" "install $UPLINK_UNIT" install -D -m 0644 "$CHECKOUT/systemd/tallylight-uplink.service" "$(R $UPLINK_UNIT)"
    UPLINK_CHANGED=1
    if systemd_running; then do_or_say reload "systemctl daemon-reload" systemctl daemon-reload; fi
  fi
  if [ -L "$(R $UNIT_DIR/multi-user.target.wants/tallylight-uplink.service)" ]; then say "uplink enable" "nothing to do"
  else do_or_say "uplink enable" "enable tallylight-uplink.service (starts at boot)" sysctl_ enable -q tallylight-uplink; fi
  if ! systemd_running; then say "uplink start" "skipped (systemd is not running here; it starts at the next boot)"
  elif ! systemctl is-active -q tallylight-uplink; then do_or_say "uplink start" "start tallylight-uplink.service" systemctl start tallylight-uplink
  elif [ -n "${UPLINK_CHANGED:-}${VENV_CHANGED:-}" ]; then
    do_or_say "uplink start" "restart tallylight-uplink.service (new version)" systemctl restart tallylight-uplink
  else say "uplink start" "nothing to do (running)"; fi
  if [ "$DRY" = 0 ] && [ -z "${UPLINK_CHANGED:-}" ]; then
    say "home assistant" "nothing to do (the key is in $UPLINK_KEY: sudo cat it to add the speaker again)"
  elif [ "$DRY" = 0 ]; then
    host=$(hostname -I 2>/dev/null | awk '{print $1}'); host=${host:-this speaker\'s address}
    say "home assistant" "Settings > Devices & services > Add integration > ESPHome: host $host, port 6053"
    say "home assistant" "encryption key: $(cat "$(R $UPLINK_KEY)")"
    say "home assistant" "for the conversation, set [home_assistant] url and token_file in $ETC/tallylight.toml"
  fi
fi
