#!/usr/bin/env bash
# Make the real picamera2 importable in a venv on a build machine (no camera needed), so the
# camera tests run picamera2's own configuration checks and buffer conversion.
#
#   tools/camera-test-env.sh VENV
#
# As root on Debian 12 it installs Debian's python3-libcamera from bookworm-backports (adding
# that suite if missing) plus gcc, python3-dev and libcap-dev (PiDNG and python-prctl, which
# picamera2 imports, ship source only). Then it installs picamera2 with --no-deps (its full
# list pulls OpenEXR, jsonschema, libarchive-c, av for features we never use) and the
# modules its import needs, and exposes *only* the libcamera package to the venv: a private
# folder holding one symlink, named by a .pth file. Never pip-install `kms`: picamera2's DRM
# preview import is stubbed by the test fixture instead (tests/test_camera_picamera2.py).
# On Raspberry Pi OS none of this is needed: apt's python3-picamera2 and a venv made with
# --system-site-packages.
set -euo pipefail
VENV=${1:-.venv}
PICAMERA2_VERSION=${PICAMERA2_VERSION:-0.3.38}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! dpkg -s python3-libcamera >/dev/null 2>&1; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [ "$codename" = bookworm ]; then
      # bookworm itself has no python3-libcamera; its backports suite does (0.3.x).
      if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo 'deb http://deb.debian.org/debian bookworm-backports main' \
          > /etc/apt/sources.list.d/bookworm-backports.list
      fi
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports \
        python3-libcamera >/dev/null
    else
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-libcamera >/dev/null
    fi
  fi
  missing=""
  for p in gcc python3-dev libcap-dev; do dpkg -s $p >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi

init=$(dpkg -L python3-libcamera 2>/dev/null | grep '/libcamera/__init__.py$' | head -1 || true)
if [ -z "$init" ]; then
  echo "python3-libcamera is not installed: picamera2 tests will be skipped" >&2
  exit 0
fi
# The modules picamera2's import needs first, picamera2 itself last: pip checks the declared
# dependencies of what it installs unless told --no-deps, so installing picamera2 first made
# the second install print a resolver `ERROR:` for the optional ones we leave out on purpose.
"$VENV/bin/python" -m pip install -q -e '.[camera-test]'
"$VENV/bin/python" -m pip install -q --no-deps "picamera2==$PICAMERA2_VERSION"
echo "picamera2 $PICAMERA2_VERSION installed without its optional dependencies (av, OpenEXR," \
     "jsonschema, ...): intended; \`pip check\` lists them as missing"
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
shim="$site/edgeguard-system-libcamera"
mkdir -p "$shim"
ln -sfn "$(dirname "$init")" "$shim/libcamera"
echo "$shim" > "$site/edgeguard-system-libcamera.pth"
if ! "$VENV/bin/python" -c 'import libcamera; print("libcamera for the venv:", libcamera.__file__)'; then
  echo "python3-libcamera does not load in $VENV (built for another Python?):" \
       "picamera2 tests will be skipped" >&2
fi
