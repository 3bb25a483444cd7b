#!/usr/bin/env bash
# Install sipconf on Debian: system packages, a venv in .venv, pjproject built from source
# (scripts/build-pjproject.sh), and the package with its C mixer and the dependencies
# pyproject.toml declares (this script lists no Python package). Idempotent: a second run only
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
TEST_PKGS=(baresip-core sip-tester sox libsox-fmt-mp3 tshark kamailio sipsak sipvicious)

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
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)
# What the package needs is declared once, in pyproject.toml: its build requirements
# ([build-system].requires) are installed here, because the build below runs without
# isolation (against the venv's pjproject); its runtime and test dependencies
# ([project].dependencies, [project.optional-dependencies].test) come with the package.
mapfile -t BUILD_REQS < <("$PY" -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))' "$REPO/pyproject.toml")
"${PIP[@]}" "${BUILD_REQS[@]}"

bash "$REPO/scripts/build-pjproject.sh"

# The package (editable) with its dependencies and C extensions, built against the venv's
# pjproject. Skipped when the extensions import and nothing they or the package's metadata are
# made from changed since the last install (the stamp's time); the stamp also records whether
# the test extra was installed, so --test after a plain install installs it (and a rebuild
# keeps it).
STAMP="$VENV/.sipconf-installed"
EXTRAS=""
if [ "$WITH_TEST" = 1 ] || grep -qx test "$STAMP" 2>/dev/null; then EXTRAS="[test]"; fi
stale() {
    "$PY" -c 'import mixer_ext.mixer, mixer_ext.streams, mixer_ext.sipguard, mixer_ext.logring
import sipconf' 2>/dev/null || return 0
    [ -n "$EXTRAS" ] && ! grep -qx test "$STAMP" 2>/dev/null && return 0
    [ -n "$(find "$REPO/mixer_ext" "$REPO/setup.py" "$REPO/pyproject.toml" -newer "$STAMP" \
                 \( -name '*.c' -o -name '*.h' -o -name '*.pyx' -o -name '*.pxd' \
                    -o -name setup.py -o -name pyproject.toml \) -print -quit 2>/dev/null \
            || echo stale)" ]
}
if stale; then
    log "building sipconf$EXTRAS and mixer_ext"
    (cd "$REPO" && "${PIP[@]}" --no-build-isolation -e ".$EXTRAS")
    if [ -n "$EXTRAS" ]; then echo test >"$STAMP"; else : >"$STAMP"; fi
fi
log "ready: $VENV/bin/sipconf"
