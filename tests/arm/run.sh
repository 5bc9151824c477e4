#!/usr/bin/env bash
# `make test-arm`: the model, pipeline and daemon tests on arm64 Debian userland under qemu-user.
#
#   sudo tests/arm/run.sh                    all three jobs (below)
#   sudo tests/arm/run.sh trixie             the jobs of one release (or name jobs: bookworm-tflite)
#   sudo tests/arm/run.sh --rebuild ...      rebuild the cached trees first
#   sudo tests/arm/run.sh --keep ...         keep the unpacked trees in .cache/arm/root-* to look at
#   sudo tests/arm/run.sh --trees-only       build (or check) the cached trees and stop
#
# Jobs: bookworm (Python 3.11, ai-edge-litert), bookworm-tflite (Python 3.11, tflite-runtime
# 2.14, which has no wheels for newer Pythons) and trixie (Python 3.13, ai-edge-litert). Each:
#   1. an arm64 Debian tree of its release from `debootstrap --foreign --variant=minbase` plus
#      the second stage run under qemu, cached as .cache/arm/<release>-arm64.tar.zst (built when
#      missing, reused otherwise);
#   2. unpacked afresh, the source copied to /src, and in a chroot the appliance installed by its
#      real installer, deploy/install.sh --no-start [--runtime tflite] (venv with system
#      site-packages, the wheel and its runtime, models fetched and hash-checked into
#      /opt/edgeguard/models, config, user, unit enabled, nothing started);
#   3. tests/arm/in-tree.sh: the tests there (which and why: see it), then the service as its
#      unit would start it, with one picture through it.
# The jobs run side by side: each emulated process is mostly one thread, and the jobs' shares
# of work are uneven, so three at once keep both cores busy to the end.
#
# qemu: ai-edge-litert >= 2.2 needs qemu >= 10 (Debian 12's qemu 7.2 crashes in
# allocate_tensors). The qemu-user .deb from bookworm-backports is downloaded with apt-get, using
# private package lists (nothing is added to the host's apt sources and nothing is installed);
# its static qemu-aarch64 is registered with binfmt_misc with the F flag (the kernel keeps the
# open binary, so the chroot needs no copy). An existing qemu-aarch64 registration is kept when
# its interpreter is qemu >= 10, otherwise replaced; no other registration is touched. The
# registration stays after the run.
#
# Mounts (proc, sys, dev, a tmpfs /dev/shm and /run) live in a private mount namespace
# (`unshare --mount`): they vanish with it, so nothing leaks onto the host even on a crash.
# /tmp stays on disk: tests check that on-disk folders are refused as an inbox.
#
# Environment: EDGEGUARD_ARM_JOBS (jobs at a time, default all), EDGEGUARD_ARM_FULL=1 (every
# model, pipeline and daemon test file instead of the selection; see tests/arm/in-tree.sh),
# EDGEGUARD_ARM_TESTS (test paths instead of either), EDGEGUARD_ARM_PYTEST_ARGS (extra pytest
# arguments, e.g. "-x"), EDGEGUARD_ARM_CPU (qemu CPU model, default cortex-a72; "max" for all
# qemu has), EDGEGUARD_ARM_SOURCE (the source tree to install and test; default this checkout),
# EDGEGUARD_ARM_CACHE (default .cache/arm), EDGEGUARD_ARM_MIRROR.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SOURCE=$(cd "${EDGEGUARD_ARM_SOURCE:-$REPO}" && pwd)
CACHE=${EDGEGUARD_ARM_CACHE:-$REPO/.cache/arm}
MIRROR=${EDGEGUARD_ARM_MIRROR:-http://deb.debian.org/debian}
QEMU_MIN_MAJOR=10
QEMU=$CACHE/qemu/qemu-aarch64
# Registered through Debian's name for it: Debian's qemu takes a name ending in -binfmt-P as
# "binfmt_misc preserves argv[0]" (the P flag), as the kernel's AT_FLAGS also says.
QEMU_BINFMT=$CACHE/qemu/aarch64-binfmt-P
BINFMT=/proc/sys/fs/binfmt_misc
# The CPU qemu emulates: the Pi 4's Cortex-A72 (ARMv8.0-A: no dotprod, fp16 arithmetic or SVE),
# so the wheels' run-time dispatch takes the kernels a Pi 4 or a Zero 2 W (Cortex-A53, the same
# instruction set) takes, not the newest ones qemu's default "max" CPU offers (with SVE, the
# model also runs about 10 times slower here). qemu-user reads QEMU_CPU from the environment.
QEMU_CPU=${EDGEGUARD_ARM_CPU:-cortex-a72}
# python3-systemd and procps: what deploy/install.sh would otherwise apt-get; systemd: its
# `systemctl enable` works offline in a chroot; ca-certificates: pip's downloads.
PACKAGES=python3,python3-venv,python3-pip,ca-certificates,python3-systemd,procps,systemd
ALL_JOBS=(bookworm bookworm-tflite trixie)

JOBS_AT_ONCE=${EDGEGUARD_ARM_JOBS:-${#ALL_JOBS[@]}}
JOBS=()
REBUILD=0
KEEP=0
TREES_ONLY=0
while [ $# -gt 0 ]; do
    case $1 in
        bookworm) JOBS+=(bookworm bookworm-tflite) ;;
        trixie|bookworm-tflite) JOBS+=("$1") ;;
        --rebuild) REBUILD=1 ;;
        --keep) KEEP=1 ;;
        --trees-only) TREES_ONLY=1 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "test-arm: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
[ ${#JOBS[@]} -gt 0 ] || JOBS=("${ALL_JOBS[@]}")
release_of() { echo "${1%-tflite}"; }
runtime_of() { case $1 in *-tflite) echo tflite ;; *) echo litert ;; esac; }
RELEASES=()
for job in "${JOBS[@]}"; do
    case " ${RELEASES[*]} " in *" $(release_of "$job") "*) ;; *) RELEASES+=("$(release_of "$job")") ;; esac
done

say() { printf 'test-arm: %s\n' "$*"; }
die() { printf 'test-arm: error: %s\n' "$*" >&2; exit 1; }
stamp() { date +%s; }
T0=$(stamp)
elapsed() { local s=$(( $(stamp) - ${1:-$T0} )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, binfmt_misc, mounts): sudo make test-arm"
[ "$(uname -m)" = x86_64 ] || die "runs on x86-64 build machines; on a Pi run \`make test\` natively"
# What the host needs, installed as the Makefile's apt step installs its packages.
missing=()
for tool in debootstrap:debootstrap zstd:zstd; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; }; then
        die "cannot install ${missing[*]}"
    fi
fi
mkdir -p "$CACHE"

# --- qemu --------------------------------------------------------------------------------------
qemu_major() {
    local bin
    bin=$(readlink -f "$1") || return 0
    case $bin in *-binfmt-P) return 0 ;; esac  # would take --version as the program to run
    "$bin" --version 2>/dev/null | sed -n '1s/.*version \([0-9]*\)\..*/\1/p'
}

fetch_qemu() {
    local major
    major=$(qemu_major "$QEMU" || true)
    if [ -n "$major" ] && [ "$major" -ge $QEMU_MIN_MAJOR ]; then
        ln -sfn qemu-aarch64 "$QEMU_BINFMT"
        return
    fi
    say "downloading qemu-user from bookworm-backports (qemu >= $QEMU_MIN_MAJOR for ai-edge-litert)"
    local apt=$CACHE/qemu/apt
    rm -rf "$apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/deb"
    cat >"$apt/backports.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    local opts=(-o "Dir::Etc::SourceList=$apt/backports.sources" -o Dir::Etc::SourceParts=/dev/null
                -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
                -o APT::Sandbox::User=root -o APT::Architecture=amd64 -qq)
    apt-get "${opts[@]}" update || die "apt-get update for bookworm-backports failed"
    (cd "$apt/deb" && apt-get "${opts[@]}" download qemu-user/bookworm-backports) \
        || die "could not download qemu-user from bookworm-backports"
    local deb
    deb=$(find "$apt/deb" -name 'qemu-user_*.deb' -print -quit)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -O ./usr/bin/qemu-aarch64 >"$QEMU.new"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -O ./usr/share/qemu/binfmt.d/qemu-aarch64.conf \
        >"$CACHE/qemu/qemu-aarch64.conf"
    chmod 0755 "$QEMU.new"
    mv "$QEMU.new" "$QEMU"
    ln -sfn qemu-aarch64 "$QEMU_BINFMT"
    rm -rf "$apt"
    major=$(qemu_major "$QEMU")
    [ "${major:-0}" -ge $QEMU_MIN_MAJOR ] || die "bookworm-backports gave qemu $major, need >= $QEMU_MIN_MAJOR"
}

register_binfmt() {
    if [ ! -e "$BINFMT/register" ]; then
        say "mounting binfmt_misc"
        mount -t binfmt_misc binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc"
    fi
    local entry=$BINFMT/qemu-aarch64 interp major=""
    if [ -e "$entry" ]; then
        interp=$(sed -n 's/^interpreter //p' "$entry")
        if grep -qx enabled "$entry" && grep -q '^flags:.*F' "$entry"; then
            [ "$interp" = "$QEMU_BINFMT" ] && return
            major=$(qemu_major "$interp" || true)
            if [ -n "$major" ] && [ "$major" -ge $QEMU_MIN_MAJOR ]; then
                say "using the registered qemu-aarch64 ($interp, qemu $major)"
                return
            fi
        fi
        say "replacing the qemu-aarch64 binfmt registration ($interp: qemu ${major:-unknown}," \
            "need >= $QEMU_MIN_MAJOR)"
        echo -1 >"$entry"
    fi
    # Debian's own line (magic, mask, flags OPF) with our interpreter path.
    local line
    line=$(sed "s|:[^:]*:\([A-Z]*\)\$|:$QEMU_BINFMT:\1|" "$CACHE/qemu/qemu-aarch64.conf")
    case $line in *:"$QEMU_BINFMT":*F*) ;; *) die "unexpected binfmt line: $line" ;; esac
    printf '%s' "$line" >"$BINFMT/register" || die "cannot register qemu-aarch64 with binfmt_misc"
    say "registered qemu-aarch64 with binfmt_misc: $QEMU_BINFMT (qemu $(qemu_major "$QEMU"))"
}

# --- trees -------------------------------------------------------------------------------------
tarball() { echo "$CACHE/$1-arm64.tar.zst"; }

# Refuse to delete a folder that still has something mounted inside.
safe_rm() {
    local dir=$1
    [ -e "$dir" ] || return 0
    if awk -v d="$(realpath "$dir")" '$5 == d || index($5, d "/") == 1 { f = 1 } END { exit !f }' \
        /proc/self/mountinfo; then
        die "$dir still has mounts inside; not deleting it"
    fi
    rm -rf --one-file-system "$dir"
}

build_tree() {
    local release=$1 root=$CACHE/build-$1 log=$CACHE/build-$1.log t
    t=$(stamp)
    say "building the $release arm64 tree (debootstrap --foreign, second stage under qemu; log: $log)"
    safe_rm "$root"
    debootstrap --arch=arm64 --foreign --variant=minbase --include="$PACKAGES" \
        "$release" "$root" "$MIRROR" >"$log" 2>&1 \
        || { tail -20 "$log"; die "debootstrap (first stage) failed"; }
    # Emulated dpkg is slow; a throwaway test tree needs neither its fsyncs (unsafe-io: the
    # tree is packed into a tarball afterwards, or rebuilt) nor manuals and translations.
    mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
    cat >"$root/etc/dpkg/dpkg.cfg.d/edgeguard-test-tree" <<'CFG'
force-unsafe-io
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
CFG
    # In a private mount namespace: the proc and sys debootstrap mounts there vanish with it,
    # even when the build is interrupted.
    unshare --mount --propagation private chroot "$root" /debootstrap/debootstrap --second-stage \
        >>"$log" 2>&1 \
        || { tail -20 "$log"; die "debootstrap second stage failed"; }
    chroot "$root" apt-get clean
    rm -f "$root"/var/cache/apt/*.bin
    tar -C "$root" --numeric-owner -cf - . | zstd -q -T2 -3 -o "$(tarball "$release").new"
    mv "$(tarball "$release").new" "$(tarball "$release")"
    safe_rm "$root"
    say "$release tree built in $(elapsed "$t"): $(tarball "$release") ($(du -h "$(tarball "$release")" | cut -f1))"
}

# --- one job -----------------------------------------------------------------------------------
ROOTS=()
for job in "${JOBS[@]}"; do ROOTS+=("$CACHE/root-$job"); done
cleanup() {
    local root proc
    for root in "${ROOTS[@]}"; do
        # Anything still running inside the tree (a daemon a failed test left) is ours.
        for proc in /proc/[0-9]*; do
            if [ "$(readlink "$proc/root" 2>/dev/null)" = "$root" ]; then
                kill -9 "${proc#/proc/}" 2>/dev/null || true
            fi
        done
        [ "$KEEP" -eq 1 ] || safe_rm "$root" || true
    done
}
trap cleanup EXIT

test_job() {
    local job=$1 release runtime root=$CACHE/root-$1 t
    release=$(release_of "$job")
    runtime=$(runtime_of "$job")
    t=$(stamp)
    safe_rm "$root"
    mkdir -p "$root" "$CACHE/pip"
    zstd -q -dc "$(tarball "$release")" | tar -C "$root" --numeric-owner -xf -
    # The source as deploy/install.sh would see it on a Pi: a plain copy, no venvs or caches.
    mkdir "$root/src"
    tar -C "$SOURCE" --exclude=./.git --exclude='./.venv*' --exclude=./.cache --exclude=./build \
        --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ --exclude=./bench-out \
        --exclude=./outbox --exclude='./models/*.tflite' --exclude='./models/*.onnx' --exclude=.pytest_cache \
        --exclude=.ruff_cache --exclude=.mypy_cache -cf - . | tar -C "$root/src" -xf -
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    # This machine's trust store (it may hold a site proxy's CA) for pip's downloads; pip inside
    # gets PIP_CERT, as a Pi behind such a proxy would need in its pip.conf.
    cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    mkdir -p "$root/root/.cache/pip"
    say "$job: $release tree, $runtime runtime"
    # A private mount namespace: every mount below disappears when it ends. The pip cache is
    # shared between jobs and runs (downloads only; every install still happens).
    # shellcheck disable=SC2016 # expanded by the inner bash
    unshare --mount --propagation private -- /bin/bash -euc '
        root=$1 pipcache=$2 release=$3 runtime=$4 QEMU_CPU=$5
        mount -t proc proc "$root/proc"
        mount --rbind /sys "$root/sys"
        mount --rbind /dev "$root/dev"
        mount -t tmpfs -o mode=1777,size=1g tmpfs "$root/dev/shm"
        mount -t tmpfs -o mode=0755,size=256m tmpfs "$root/run"
        mount --bind "$pipcache" "$root/root/.cache/pip"
        exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 TERM=dumb QEMU_CPU="$QEMU_CPU" \
            PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
            PIP_DEFAULT_TIMEOUT=180 EDGEGUARD_ARM_PYTEST_ARGS="${EDGEGUARD_ARM_PYTEST_ARGS:-}" \
            EDGEGUARD_ARM_TESTS="${EDGEGUARD_ARM_TESTS:-}" EDGEGUARD_ARM_FULL="${EDGEGUARD_ARM_FULL:-0}" \
            /bin/bash /src/tests/arm/in-tree.sh "$release" "$runtime"
    ' test-arm "$root" "$CACHE/pip" "$release" "$runtime" "$QEMU_CPU" \
        || die "$job FAILED after $(elapsed "$t")"
    say "$job passed in $(elapsed "$t")"
}

# Run "$1 NAME" for each further argument, JOBS_AT_ONCE at a time, each line of output
# prefixed with [NAME]; fails when any of them failed.
in_parallel() {
    local fn=$1 name pids=() names=() failed=() i
    shift
    for name in "$@"; do
        # Not a pipeline: set -e must hold inside "$fn" (it is ignored left of a pipe).
        ("$fn" "$name" > >(sed -u "s/^/[$name] /") 2>&1) &
        pids+=($!)
        names+=("$name")
        if [ ${#pids[@]} -ge "$JOBS_AT_ONCE" ]; then
            wait "${pids[0]}" || failed+=("${names[0]}")
            pids=("${pids[@]:1}")
            names=("${names[@]:1}")
        fi
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed+=("${names[$i]}")
    done
    sleep 0.2  # let the last prefixed lines out
    [ ${#failed[@]} -eq 0 ] || { say "FAILED: ${failed[*]}"; return 1; }
}

fetch_qemu
register_binfmt
build=()
for release in "${RELEASES[@]}"; do
    if [ "$REBUILD" -eq 1 ] || [ ! -f "$(tarball "$release")" ]; then
        build+=("$release")
    else
        say "using the cached $release tree $(tarball "$release")"
    fi
done
if [ ${#build[@]} -gt 0 ]; then
    in_parallel build_tree "${build[@]}" || die "building the trees failed after $(elapsed)"
    say "trees built in $(elapsed)"
fi
[ "$TREES_ONLY" -eq 0 ] || exit 0
in_parallel test_job "${JOBS[@]}" || die "failed after $(elapsed)"
say "all passed (${JOBS[*]}) in $(elapsed)"
