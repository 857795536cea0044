#!/usr/bin/env bash
# Container entrypoint: build the TensorRT engine of the model at the first start (engines are
# tied to the board's TensorRT and GPU, so an image cannot carry them), keep it in the cache
# volume, then run the command (default: edge-fer run on $EDGE_FER_SOURCE with that engine).
#
# Environment: EDGE_FER_TARGET (board, e.g. orin-nano; checked before building),
# EDGE_FER_PRECISION (fp16 | int8 | fp32, default fp16), EDGE_FER_MODEL (.onnx, default the
# bundled model), EDGE_FER_CALIB_CACHE (int8 from an FP32 model), EDGE_FER_SOURCE,
# EDGE_FER_CACHE (default /var/cache/edge-fer: mount a volume there).
set -euo pipefail

CACHE="${EDGE_FER_CACHE:-/var/cache/edge-fer}"
PRECISION="${EDGE_FER_PRECISION:-fp16}"
MODEL="${EDGE_FER_MODEL:-$(python3 -c 'from edge_fer.classify import default_model_path; print(default_model_path())')}"
BUNDLED_CALIB=/opt/edge-fer/src/calibration/fer_default/calib.cache
die() { echo "entrypoint: error: $*" >&2; exit 2; }

mkdir -p "$CACHE/engines" || die "cannot create $CACHE/engines"
L4T="$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\),.*/\1.\2/p' /etc/nv_tegra_release 2>/dev/null | head -n 1)"
TRT="$(python3 -c 'import tensorrt; print(tensorrt.__version__)')" \
    || die "TensorRT's Python bindings are missing in this image"
# the name carries everything the engine is tied to, so another JetPack builds a new one
STEM="$(basename "$MODEL" .onnx)"
ENGINE="$CACHE/engines/$STEM.l4t${L4T:-unknown}.trt$TRT.$PRECISION.engine"

if [ ! -s "$ENGINE" ]; then
    echo "entrypoint: first start: building $ENGINE (minutes on a Jetson)"
    ARGS=(build-engine "$MODEL" --precision "$PRECISION" --out "$ENGINE"
          --timing-cache "$CACHE/engines/timing.cache")
    if [ -n "${EDGE_FER_TARGET:-}" ]; then
        ARGS+=(--target "$EDGE_FER_TARGET")
    fi
    CALIB="${EDGE_FER_CALIB_CACHE:-}"
    if [ -z "$CALIB" ] && [ -z "${EDGE_FER_MODEL:-}" ] && [ -f "$BUNDLED_CALIB" ]; then
        CALIB="$BUNDLED_CALIB"  # the committed cache of the bundled model
    fi
    if [ "$PRECISION" = int8 ] && [ -n "$CALIB" ]; then
        ARGS+=(--calib-cache "$CALIB")
    fi
    edge-fer "${ARGS[@]}"
fi
export EDGE_FER_ENGINE="$ENGINE"

if [ $# -eq 0 ]; then
    set -- edge-fer run "${EDGE_FER_SOURCE:-csi://0}" --backend tensorrt --model "$ENGINE" \
        --events "$CACHE/events.jsonl"
fi
exec "$@"
