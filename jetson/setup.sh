#!/usr/bin/env bash
# edge-fer on a Jetson (JetPack 5 or 6): a virtual environment that keeps JetPack's OpenCV
# (GStreamer, hence csi:// cameras) and TensorRT, pycuda built against /usr/local/cuda, and the
# FP16 and INT8 engines of the bundled model built on this board. Read-only towards the system:
# it installs no apt package and does not change the power mode (it reports it).
#
#   jetson/setup.sh                      # venv in ~/edge-fer-venv, engines in ~/edge-fer-engines
#   jetson/setup.sh --venv /opt/edge-fer/venv --engines /var/cache/edge-fer --target orin-nano
#   jetson/setup.sh --skip-engines       # software only
#
# Exit codes: 0 done, 2 a problem with the board or the options (one line says which).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$HERE/.." && pwd)"
VENV="${HOME}/edge-fer-venv"
ENGINES="${HOME}/edge-fer-engines"
TARGET=""
BUILD_ENGINES=1
INT8=1
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"

die() { echo "setup.sh: error: $*" >&2; exit 2; }
say() { echo "setup.sh: $*"; }

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --venv DIR --engines DIR --src DIR --target NAME --no-int8 --skip-engines"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV="${2:?--venv needs a folder}"; shift 2 ;;
        --engines) ENGINES="${2:?--engines needs a folder}"; shift 2 ;;
        --src) SRC="${2:?--src needs the edge-fer source folder}"; shift 2 ;;
        --target) TARGET="${2:?--target needs a name}"; shift 2 ;;
        --no-int8) INT8=0; shift ;;
        --skip-engines) BUILD_ENGINES=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# -- 1. the board: L4T release, JetPack generation ------------------------------------------
[ -r /etc/nv_tegra_release ] || die "no /etc/nv_tegra_release: this is not a Jetson with JetPack"
# first line: "# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, EABI: aarch64, ..."
L4T_MAJOR="$(sed -n 's/^# R\([0-9]*\) (release).*/\1/p' /etc/nv_tegra_release | head -n 1)"
L4T_REV="$(sed -n 's/.*REVISION: \([0-9.]*\),.*/\1/p' /etc/nv_tegra_release | head -n 1)"
[ -n "$L4T_MAJOR" ] || die "cannot read the L4T release from /etc/nv_tegra_release"
L4T="${L4T_MAJOR}.${L4T_REV}"
case "$L4T_MAJOR" in
    32) die "L4T $L4T is JetPack 4 (Python 3.6): not supported; flash JetPack 5 or 6 (Nano/TX2 stay on JetPack 4)" ;;
    35) JETPACK=5 ;;
    36) JETPACK=6 ;;
    *) JETPACK="?"; say "L4T $L4T is newer than this script knows; going on" ;;
esac
MODEL_NAME="$(tr -d '\0' < /proc/device-tree/model 2>/dev/null || echo unknown)"
say "board: $MODEL_NAME, L4T $L4T (JetPack $JETPACK)"

# -- 2. Python, TensorRT, CUDA, OpenCV of the system ----------------------------------------
PY=/usr/bin/python3
[ -x "$PY" ] || die "no $PY"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 8))' \
    || die "$("$PY" --version 2>&1) is older than 3.8"
TRT_VERSION="$("$PY" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
[ -n "$TRT_VERSION" ] \
    || die "TensorRT's Python bindings are missing: sudo apt install nvidia-jetpack (or python3-libnvinfer)"
CUDA_VERSION=""
if [ -x "$CUDA_HOME/bin/nvcc" ]; then
    CUDA_VERSION="$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
fi
[ -n "$CUDA_VERSION" ] || die "no CUDA toolkit in $CUDA_HOME (nvcc): sudo apt install nvidia-jetpack"
CV_GST="$("$PY" -c 'import cv2, re; i = cv2.getBuildInformation(); m = re.search(r"GStreamer:\s*(\w+)", i); print(cv2.__version__, m.group(1) if m else "NO")' 2>/dev/null || true)"
say "Python $("$PY" -c 'import platform; print(platform.python_version())'), TensorRT $TRT_VERSION, CUDA $CUDA_VERSION, OpenCV ${CV_GST:-missing}"
case "$CV_GST" in
    *" YES") ;;
    *) say "warning: the system OpenCV has no GStreamer: csi:// and pipeline sources will not open (sudo apt install nvidia-opencv)" ;;
esac

# -- 3. the virtual environment: system site packages (cv2, tensorrt) stay visible ---------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV (--system-site-packages: JetPack's cv2 and tensorrt stay visible)"
    "$PY" -m venv --system-site-packages "$VENV" || die "cannot create $VENV (sudo apt install python3-venv)"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install --quiet --upgrade pip
# edge-fer itself without its dependencies: its opencv-python-headless would shadow JetPack's
# GStreamer-enabled cv2 in this venv
"$VPY" -m pip install --quiet --no-deps "$SRC"
# then every runtime dependency except OpenCV, read from the installed package's metadata;
# numpy stays 1.x: JetPack's cv2 is built against the numpy 1 ABI
mapfile -t DEPS < <("$VPY" - <<'EOF'
import importlib.metadata as md
for req in md.requires("edge-fer") or []:
    if "extra ==" in req or req.lower().startswith("opencv"):
        continue
    print(req.split(";")[0].strip())
EOF
)
say "installing ${DEPS[*]} (numpy < 2)"
"$VPY" -m pip install --quiet "${DEPS[@]}" "numpy<2"

# pycuda compiles against the CUDA toolkit of this JetPack
if ! "$VPY" -c 'import pycuda.driver' 2>/dev/null; then
    [ -e "/usr/include/python3.$("$PY" -c 'import sys; print(sys.version_info[1])')/Python.h" ] \
        || die "Python headers are missing (pycuda compiles): sudo apt install python3-dev build-essential"
    say "building pycuda against $CUDA_HOME (a few minutes)"
    PATH="$CUDA_HOME/bin:$PATH" CUDA_ROOT="$CUDA_HOME" CPATH="$CUDA_HOME/include" \
        LIBRARY_PATH="$CUDA_HOME/lib64" \
        "$VPY" -m pip install --quiet --no-binary pycuda --no-cache-dir pycuda
fi
CV_FILE="$("$VPY" -c 'import cv2; print(cv2.__file__)')"
case "$CV_FILE" in
    "$VENV"/*) die "cv2 comes from the venv ($CV_FILE), not JetPack: pip uninstall opencv-python opencv-python-headless in $VENV" ;;
esac
"$VPY" -c 'import tensorrt, pycuda.driver as d; d.init(); print("setup.sh: GPU:", d.Device(0).name())'

# -- 4. engines of the bundled model, built here ---------------------------------------------
EF="$VENV/bin/edge-fer"
if [ "$BUILD_ENGINES" = 1 ]; then
    if [ -z "$TARGET" ]; then
        case "$MODEL_NAME" in
            *"Orin Nano"*) TARGET=orin-nano ;;
            *"Orin NX"*) TARGET=orin-nx ;;
            *"AGX Orin"*) TARGET=orin-agx ;;
            *"Xavier NX"*) TARGET=xavier-nx ;;
            *"AGX Xavier"*) TARGET=xavier-agx ;;
            *) die "cannot tell the target from '$MODEL_NAME': pass --target (edge-fer build-engine --help lists them)" ;;
        esac
    fi
    MODEL="$("$VPY" -c 'from edge_fer.classify import default_model_path; print(default_model_path())')"
    CACHE="$SRC/calibration/fer_default/calib.cache"
    mkdir -p "$ENGINES"
    TAG="l4t${L4T}.trt${TRT_VERSION}"
    say "building the FP16 engine for $TARGET (minutes)"
    # --force: a rerun of setup rebuilds the engines (an ENGINE.json that is not an edge-fer
    # sidecar is never replaced)
    "$EF" build-engine "$MODEL" --precision fp16 --target "$TARGET" --force \
        --timing-cache "$ENGINES/timing.cache" --out "$ENGINES/fer_default.$TAG.fp16.engine"
    CAN_INT8="$("$VPY" -c "from edge_fer.export.targets import target_problem as p; print(p('$TARGET', 'int8') or 'yes')")"
    if [ "$INT8" = 1 ] && [ "$CAN_INT8" = yes ] && [ -f "$CACHE" ]; then
        say "building the INT8 engine from $CACHE (its header is rewritten for TensorRT $TRT_VERSION)"
        "$EF" build-engine "$MODEL" --precision int8 --calib-cache "$CACHE" --target "$TARGET" \
            --force --timing-cache "$ENGINES/timing.cache" --out "$ENGINES/fer_default.$TAG.int8.engine"
    elif [ "$INT8" = 1 ]; then
        say "no INT8 engine: ${CAN_INT8/yes/no calibration cache at $CACHE}"
    fi
fi

# -- 5. the power mode: reported, never changed -----------------------------------------------
if command -v nvpmodel >/dev/null 2>&1; then
    say "power mode (nvpmodel -q; change it yourself with sudo nvpmodel -m N):"
    nvpmodel -q 2>/dev/null | sed 's/^/    /' || say "    (nvpmodel -q needs more rights here)"
else
    say "nvpmodel not found: power mode unknown"
fi

say "done. Try: $EF run csi://0 --backend tensorrt --model $ENGINES/fer_default.${TAG:-<tag>}.fp16.engine --preview-port 8090"
