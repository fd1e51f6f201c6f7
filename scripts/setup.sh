# shellcheck shell=bash
# Shared set-up for scripts/run, scripts/test and scripts/bench: source it, then call `setup_env run|test`.
# Installs what is missing, and only that: Debian packages (as root or with password-less sudo), a
# .venv in the checkout, and this package into it. Where it cannot install, it prints what to run.

TL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TL_VENV="$TL_ROOT/.venv"

tl_say() { printf 'tallylight setup: %s\n' "$*" >&2; }

# Debian packages needed to run: PortAudio headers to build PyAudio, espeak-ng to speak replies,
# alsa-utils for amixer/aplay, libatomic1 for vosk's library on arm64, libspeexdsp1 for echo cancellation.
TL_APT_RUN=(python3-venv python3-dev gcc portaudio19-dev espeak-ng alsa-utils libatomic1 libspeexdsp1)
# And to test: sox to make test speech, PulseAudio and the ALSA plugins for a paced virtual mic,
# systemd to score and run the units, debootstrap/qemu for the installer test on arm64, chromium to
# look at the ledger page as a browser draws it.
TL_APT_TEST=(sox libsox-fmt-all pulseaudio pulseaudio-utils libasound2-plugins systemd util-linux iproute2 debootstrap qemu-user-static binfmt-support chromium)

tl_missing_packages() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]}"
}

tl_apt_install() {
  command -v dpkg-query >/dev/null || { tl_say "not a Debian system: install the equivalents of: $*"; return 0; }
  local missing; missing=$(tl_missing_packages "$@")
  [ -z "$missing" ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      tl_say "missing Debian packages: $missing"
      tl_say "run:  sudo apt-get update && sudo apt-get install -y $missing   then run this again"
      return 1
    fi
  fi
  tl_say "installing Debian packages: $missing"
  # Update the package lists only when an install without it fails (they may be stale or absent).
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing >/dev/null 2>&1 || {
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing >/dev/null
  } || { tl_say "apt-get install failed: run  sudo apt-get install -y $missing  and look at its error"; return 1; }
}

tl_venv() {
  local extras=$1 stamp="$TL_VENV/.tallylight-installed"
  local want; want="$extras $(cat "$TL_ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
  if [ ! -x "$TL_VENV/bin/python" ]; then
    tl_say "creating $TL_VENV"
    python3 -m venv "$TL_VENV" || { tl_say "python3 -m venv failed: install python3-venv"; return 1; }
  fi
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  # A venv set up for the tests holds everything `run` needs: scripts/run after scripts/test must not
  # reinstall it without the test extras (and make the next scripts/test reinstall them).
  if [ -z "$extras" ] && [ -f "$stamp" ] && [ "$(cut -d' ' -f2 "$stamp")" = "${want#* }" ]; then return 0; fi
  tl_say "installing tallylight${extras:+[$extras]} into $TL_VENV (first run takes a minute)"
  "$TL_VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$TL_VENV/bin/python" -m pip install -q -e "$TL_ROOT${extras:+[$extras]}" ||
    { tl_say "pip install failed; the lines above say why"; return 1; }
  echo "$want" >"$stamp"
}

setup_env() {
  case "$1" in
    run) tl_apt_install "${TL_APT_RUN[@]}" && tl_venv "" ;;
    test) tl_apt_install "${TL_APT_RUN[@]}" "${TL_APT_TEST[@]}" && tl_venv "test" ;;
  esac
}
