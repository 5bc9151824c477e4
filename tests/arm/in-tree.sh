#!/bin/bash
# Runs inside the arm64 Debian tree that tests/arm/run.sh prepared (chroot, qemu-user), as root:
#   tests/arm/in-tree.sh RELEASE litert|tflite [install|test|smoke]    (default: all three)
#
# 1. install: the appliance by its real installer, deploy/install.sh --no-start [--runtime
#    tflite], from /src: /opt/edgeguard/venv (system site-packages) with the runtime, models
#    fetched with pip and hash-checked, config, user and groups, the unit enabled; nothing
#    started. Then the test tools are added to that venv, constrained to what the installer
#    chose, so the tests run against the installed packages, and /src/edgeguard is moved aside,
#    so every test (and every `python -m edgeguard` child it starts) imports the installed wheel.
# 2. test: the model, pipeline and daemon tests (SELECTED or TFLITE_SELECTED below; FULL with
#    EDGEGUARD_ARM_FULL=1), the daemon's real-process tests included: `edgeguard run`, inotify,
#    tmpfs mounts; EDGEGUARD_REQUIRE_SYSTEM=1 makes a missing prerequisite a failure, not a skip.
# 3. smoke: the service as its unit starts it, without systemd: systemd-tmpfiles, `edgeguard
#    check` and `edgeguard run` as the edgeguard user with the installed config; one photo in,
#    one redacted, metadata-free photo out, the inbox and failed/ empty, exit 0 on SIGTERM.
set -euo pipefail

release=${1:?usage: in-tree.sh RELEASE litert|tflite [install|test|smoke]}
runtime=${2:?usage: in-tree.sh RELEASE litert|tflite [install|test|smoke]}
step=${3:-all}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
export EDGEGUARD_REQUIRE_SYSTEM=1 EDGEGUARD_MODELS=/opt/edgeguard/models
VENV=/opt/edgeguard/venv
CONFIG=/etc/edgeguard/edgeguard.toml

# What runs. Emulation makes each BlazeFace inference take seconds (qemu emulates the NEON
# float maths in software: one 512x512 photo through the detector takes 15-40 s), so the
# default is a selection that still crosses every path once on the real aarch64 wheels:
#  - whole files that are cheap here: the runtime adapter on the real models, model fetch and
#    hash checks, CenterFace in OpenCV's DNN against its reference decoding, config,
#    planner, decode/encode/metadata on every format, redaction, file writes on real tmpfs,
#    sd_notify, the real inotify watcher, the outbox journal, the daemon's logic;
#  - from the files that put many photos through the real model, one test per path: the CLI
#    end to end (blur, every metadata block stripped), the detector on the astronaut, on flat
#    frames and on bad input; the real `edgeguard run` process on tmpfs (bad files end in
#    failed/, an inbox on disk is refused, the start-up checks, the inbox lock).
# Left out: the one-interpreter invariant on a 1500x2000 frame (100 s here; counting
# interpreters does not depend on the architecture); the daemon tests that wait for photos
# with timeouts sized for native speed (they time out here, see FULL); test_unit_file and
# tests/system (systemd units in nspawn: architecture independent, run on the host); test_bench
# (score arithmetic), test_oracle (mediapipe), test_web (a browser), test_camera_picamera2
# (Debian's python3-libcamera set-up).
SELECTED=(
    tests/test_runtime.py tests/test_models.py tests/test_centerface.py tests/test_config.py
    tests/test_planner.py
    tests/test_codec.py tests/test_redact.py tests/test_fileops.py tests/test_mounts.py
    tests/test_daemon_service.py
    tests/test_inbox.py tests/test_outbox.py tests/test_daemon.py
    tests/test_cli.py::test_blur_strips_every_metadata_block_and_redacts
    tests/test_detector.py::test_astronaut_found_with_the_right_box
    tests/test_detector.py::test_flat_image_gives_an_empty_list_not_none
    tests/test_detector.py::test_bad_input_is_a_value_error
    tests/test_daemon_system.py::test_bad_files_and_special_entries_end_in_failed_with_a_reason
    tests/test_daemon_system.py::test_an_inbox_on_disk_is_refused_with_one_line
    tests/test_daemon_system.py::test_check_reports_every_check
    tests/test_daemon_system.py::test_two_daemons_cannot_share_an_inbox
)
DESELECT=(-k "not test_one_interpreter_per_model_created_once")
# tflite-runtime: the runtime adapter, the CLI end to end, the detector's box, and decoding,
# encoding and redaction again (this venv has numpy 1.26 and opencv 4.11, not 2.x and 5.x).
TFLITE_SELECTED=(
    tests/test_runtime.py tests/test_codec.py tests/test_redact.py
    tests/test_cli.py::test_blur_strips_every_metadata_block_and_redacts
    tests/test_detector.py::test_astronaut_found_with_the_right_box
)
# EDGEGUARD_ARM_FULL=1: every model, pipeline, camera-loop and daemon test file. Hours here,
# and the daemon system tests' waits are sized for native speed, so several time out.
FULL=(
    tests/test_runtime.py tests/test_models.py tests/test_centerface.py tests/test_config.py
    tests/test_planner.py
    tests/test_codec.py tests/test_redact.py tests/test_fileops.py tests/test_mounts.py
    tests/test_daemon_service.py
    tests/test_inbox.py tests/test_outbox.py tests/test_daemon.py tests/test_cli.py
    tests/test_detector.py tests/test_daemon_system.py tests/test_faults.py
    tests/test_hostile_inputs.py tests/test_camera_tracker.py tests/test_camera_sources.py
    tests/test_camera_loop.py tests/test_camera_video.py tests/test_camera_snap.py
    tests/test_camera_daemon.py
)
if [ -n "${EDGEGUARD_ARM_TESTS:-}" ]; then
    # shellcheck disable=SC2206 # a space-separated list of test paths
    TESTS=(${EDGEGUARD_ARM_TESTS})
    DESELECT=()
elif [ "${EDGEGUARD_ARM_FULL:-0}" = 1 ]; then
    TESTS=("${FULL[@]}")
    DESELECT=()
elif [ "$runtime" = tflite ]; then
    TESTS=("${TFLITE_SELECTED[@]}")
else
    TESTS=("${SELECTED[@]}")
fi
# --runtime: the tests fail unless detect.runtime = auto picks this job's runtime.
PYTEST=(-p no:cacheprovider -q -rfEs --durations=10 -m 'not oracle and not camera' --runtime "$runtime"
        "${DESELECT[@]}")
# shellcheck disable=SC2206 # word splitting wanted: extra pytest arguments
PYTEST+=(${EDGEGUARD_ARM_PYTEST_ARGS:-})
TIMEOUT=${EDGEGUARD_ARM_TIMEOUT:-5400}

say() { printf 'test-arm: %s\n' "$*"; }
die() { printf 'test-arm: error: %s\n' "$*" >&2; exit 1; }
stamp() { date +%s; }
took() { echo "$(( $(stamp) - $1 )) s"; }

[ "$(uname -m)" = aarch64 ] || die "not running under arm64 emulation (uname -m: $(uname -m))"
case $runtime in litert|tflite) ;; *) die "runtime must be litert or tflite, not $runtime" ;; esac
cd /src

# The `test` extra without ruff and mypy (they check the source, not the target), playwright
# (browser tests of the web page) and matplotlib (benchmark plots): for tests not run here.
test_requirements() {
    python3 - <<'EOF'
import re, tomllib
with open("/src/pyproject.toml", "rb") as fh:
    deps = tomllib.load(fh)["project"]["optional-dependencies"]["test"]
skip = {"ruff", "mypy", "playwright", "matplotlib"}
print("\n".join(d for d in deps if re.split(r"[<>=!~ \[;]", d)[0] not in skip))
EOF
}

install_appliance() {
    local t args=()
    t=$(stamp)
    [ "$runtime" = litert ] || args=(--runtime "$runtime")
    say "deploy/install.sh --no-start --source /src ${args[*]}"
    /src/deploy/install.sh --no-start --source /src "${args[@]}"
    say "install.sh took $(took "$t")"
    "$VENV/bin/edgeguard" models verify
    # The test tools, without moving anything the installer chose; not byte-compiled ahead
    # (the tree is thrown away; compiling all of scipy under emulation takes minutes).
    "$VENV/bin/pip" freeze --exclude edgeguard >/tmp/installed.txt
    test_requirements >/tmp/test-requirements.txt
    "$VENV/bin/pip" install -q --no-compile -c /tmp/installed.txt -r /tmp/test-requirements.txt
    # From here on every import of edgeguard, in the tests and in the `python -m edgeguard`
    # children they start, is the installed wheel.
    mv /src/edgeguard /src/edgeguard.source-not-imported
    say "installed, with the test tools, in $(took "$t"): $("$VENV/bin/python" -c '
import importlib.metadata as m, platform
names = ["edgeguard", "ai-edge-litert", "tflite-runtime", "numpy", "opencv-python-headless",
         "pillow", "watchdog"]
found = []
for n in names:
    try:
        found.append(f"{n} {m.version(n)}")
    except m.PackageNotFoundError:
        pass
print("Python", platform.python_version(), platform.machine() + ":", ", ".join(found))')"
}

run_tests() {
    local t rc=0
    t=$(stamp)
    say "pytest ${TESTS[*]}"
    timeout "$TIMEOUT" "$VENV/bin/python" -m pytest "${PYTEST[@]}" "${TESTS[@]}" || rc=$?
    say "pytest finished in $(took "$t") (exit $rc)"
    return $rc
}

service_smoke() {
    local t outbox=/var/lib/edgeguard/outbox pid n=0 left
    t=$(stamp)
    [ "$(systemctl is-enabled edgeguard.service)" = enabled ] || die "edgeguard.service not enabled"
    systemd-tmpfiles --create /etc/tmpfiles.d/edgeguard.conf
    install -d -o edgeguard -g edgeguard -m 0750 /var/lib/edgeguard  # the unit's StateDirectory=
    # setpriv execs (runuser would stay the parent and answer SIGTERM itself); --init-groups:
    # the user's groups, as the unit's SupplementaryGroups=; the capabilities are the unit's
    # CapabilityBoundingSet= and AmbientCapabilities= (CAP_FOWNER, CAP_LEASE: the service
    # claims a dropper's file into its spool and reads it through an ACL entry of its own).
    local caps=+fowner,+lease
    local as_service=(setpriv --reuid=edgeguard --regid=edgeguard --init-groups
                      "--bounding-set=-all,$caps" "--inh-caps=$caps" "--ambient-caps=$caps" --)
    "${as_service[@]}" "$VENV/bin/edgeguard" check --config "$CONFIG"
    "${as_service[@]}" "$VENV/bin/edgeguard" run --config "$CONFIG" >/tmp/service.log 2>&1 &
    pid=$!
    "$VENV/bin/python" -c '
import sys
from PIL import Image
from skimage import data
exif = Image.Exif()
exif[0x010F] = "EdgeGuardTestCam"  # Make: must not reach the outbox
Image.fromarray(data.astronaut()).save(sys.argv[1], quality=90, exif=exif)' /tmp/astronaut.jpg
    # As a dropper would: a hidden name, then renamed into place.
    install -m 0640 -g edgeguard-drop /tmp/astronaut.jpg /run/edgeguard/inbox/.astronaut.jpg.part
    mv /run/edgeguard/inbox/.astronaut.jpg.part /run/edgeguard/inbox/astronaut.jpg
    until [ -n "$(find "$outbox" -name '*.jpg' 2>/dev/null)" ]; do
        n=$((n + 1))
        if [ $n -gt 1200 ] || ! kill -0 "$pid" 2>/dev/null; then
            cat /tmp/service.log
            die "no redacted image in $outbox after $(took "$t")"
        fi
        sleep 0.5
    done
    kill -TERM "$pid"
    wait "$pid" || { cat /tmp/service.log; die "edgeguard run did not exit 0 on SIGTERM"; }
    grep -E "redacted|stopped" /tmp/service.log || true
    left=$(find /run/edgeguard/inbox /run/edgeguard/failed -mindepth 1)
    [ -z "$left" ] || die "inbox or failed/ not empty: $left"
    "$VENV/bin/python" - "$outbox" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from skimage import data
out = sorted(Path(sys.argv[1]).glob("*.jpg"))
assert len(out) == 1, out
img = np.asarray(Image.open(out[0])).astype(int)
raw = data.astronaut().astype(int)
assert img.shape == raw.shape, img.shape
face = np.abs(img[90:160, 180:260] - raw[90:160, 180:260]).mean()
assert face > 8, face  # blurred: a JPEG re-encode alone changes it by about 2
assert b"EdgeGuardTestCam" not in out[0].read_bytes()  # metadata dropped
print(f"service smoke: {out[0].name} redacted (the face changed by {face:.0f} on average)")
EOF
    say "service smoke passed in $(took "$t")"
}

case $step in
    install) install_appliance ;;
    test) run_tests ;;
    smoke) service_smoke ;;
    all)
        # shellcheck source=/dev/null
        say "$(. /etc/os-release; echo "$PRETTY_NAME"), $(python3 -V), $(uname -m), runtime" \
            "$runtime, qemu CPU ${QEMU_CPU:-max}: $(grep -m1 '^Features' /proc/cpuinfo || echo '?')"
        # Each step in its own bash: set -e holds inside it, and one failing does not hide
        # the others' results.
        bash "$0" "$release" "$runtime" install
        failed=()
        bash "$0" "$release" "$runtime" test || failed+=(tests)
        bash "$0" "$release" "$runtime" smoke || failed+=("service smoke")
        [ ${#failed[@]} -eq 0 ] || die "$release/$runtime failed: ${failed[*]}"
        say "$release/$runtime: all passed"
        ;;
    *) die "unknown step $step" ;;
esac
