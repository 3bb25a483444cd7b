#!/usr/bin/env bash
# Install sipconf on Debian: system packages, a venv in .venv, pjproject built from source
# (scripts/build-pjproject.sh), and the package with its C mixer. Idempotent: a second run only
# checks. espeak-ng (for <Speak>) is part of the node. With --test it also installs what the
# test suite drives: baresip, SIPp, sox (with its mp3 reader), dumpcap (tshark) and Kamailio
# (registrar and dispatcher; its service is not started: tests run their own).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SIPCONF_VENV:-$REPO/.venv}
PYTHON=${PYTHON:-python3}
WITH_TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) WITH_TEST=1 ;;
        *) echo "usage: $0 [--test]" >&2; exit 2 ;;
    esac
done

log() { echo "install: $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

BUILD_PKGS=(build-essential pkg-config swig python3-dev python3-venv ca-certificates xz-utils
            libsrtp2-dev libspeex-dev libspeexdsp-dev libgsm1-dev libopus-dev libssl-dev
            uuid-dev espeak-ng)
TEST_PKGS=(baresip-core sip-tester sox libsox-fmt-mp3 tshark kamailio)

want=("${BUILD_PKGS[@]}")
[ "$WITH_TEST" = 1 ] && want+=("${TEST_PKGS[@]}")
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" "setuptools>=70" wheel "cython>=3.0" "numpy>=1.26" "trio>=0.25" "httpx>=0.27" \
    "defusedxml>=0.7" "miniaudio>=1.59" "lameenc>=1.7" "hypercorn>=0.16" "pocketsphinx>=5" \
    "pytest>=8" "pytest-timeout>=2.2" "ruff>=0.5" "hypothesis>=6.100"

bash "$REPO/scripts/build-pjproject.sh"

# The package and its C extensions, built against the venv's pjproject.
if ! "$VENV/bin/python" -c 'import mixer_ext.streams, mixer_ext.sipguard, sipconf' 2>/dev/null \
   || [ -n "$(find "$REPO/mixer_ext" "$REPO/setup.py" -newer "$VENV/.sipconf-installed" \
                  \( -name '*.c' -o -name '*.h' -o -name '*.pyx' -o -name '*.pxd' \
                     -o -name setup.py \) -print -quit 2>/dev/null || echo stale)" ]; then
    log "building sipconf and mixer_ext"
    (cd "$REPO" && "${PIP[@]}" --no-build-isolation -e .)
    touch "$VENV/.sipconf-installed"
fi
log "ready: $VENV/bin/sipconf"
