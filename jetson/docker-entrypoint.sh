#!/usr/bin/env bash
# Container entrypoint: build the TensorRT engine of the model at the first start (engines are
# tied to the board's TensorRT and GPU, so an image cannot carry them), keep it in the cache
# volume, then run the command (default: edge-fer run on $EDGE_FER_SOURCE with that engine).
#
# Environment: EDGE_FER_TARGET (board, e.g. orin-nano; checked before building),
# EDGE_FER_PRECISION (fp16 | int8 | fp32, default fp16), EDGE_FER_MODEL (.onnx, default the
# bundled model), EDGE_FER_CALIB_CACHE (int8 from an FP32 model), EDGE_FER_SOURCE,
# EDGE_FER_CACHE (default /var/cache/edge-fer: mount a volume there).
# The default command appends its events (JSON Lines) to $EDGE_FER_CACHE/events.jsonl: a
# restart keeps the events of the earlier runs.
set -euo pipefail

CACHE="${EDGE_FER_CACHE:-/var/cache/edge-fer}"
PRECISION="${EDGE_FER_PRECISION:-fp16}"
MODEL="${EDGE_FER_MODEL:-$(python3 -c 'from edge_fer.classify import default_model_path; print(default_model_path())')}"
BUNDLED_CALIB=/opt/edge-fer/src/calibration/fer_default/calib.cache
die() { echo "entrypoint: error: $*" >&2; exit 2; }

mkdir -p "$CACHE/engines" || die "cannot create $CACHE/engines"
# (no /etc/nv_tegra_release: "unknown" in the name, not a silent exit through pipefail)
L4T="$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\),.*/\1.\2/p' /etc/nv_tegra_release 2>/dev/null | head -n 1)" || L4T=""
TRT="$(python3 -c 'import tensorrt; print(tensorrt.__version__)')" \
    || die "TensorRT's Python bindings are missing in this image"
CALIB="${EDGE_FER_CALIB_CACHE:-}"
if [ -z "$CALIB" ] && [ -z "${EDGE_FER_MODEL:-}" ] && [ -f "$BUNDLED_CALIB" ]; then
    CALIB="$BUNDLED_CALIB"  # the committed cache of the bundled model
fi
[ "$PRECISION" = int8 ] || CALIB=""
# the name carries everything the engine is tied to: the model's content (new weights under
# the same file name build a new engine), the calibration cache's for int8, the L4T and
# TensorRT releases (another JetPack builds a new one) and the precision
[ -f "$MODEL" ] || die "no such model $MODEL (EDGE_FER_MODEL)"
KEY="$(sha256sum < "$MODEL" | cut -c1-12)"
if [ -n "$CALIB" ]; then
    [ -f "$CALIB" ] || die "no such calibration cache $CALIB (EDGE_FER_CALIB_CACHE)"
    KEY="$KEY.c$(sha256sum < "$CALIB" | cut -c1-8)"
fi
STEM="$(basename "$MODEL" .onnx)"
ENGINE="$CACHE/engines/$STEM.$KEY.l4t${L4T:-unknown}.trt$TRT.$PRECISION.engine"

if [ ! -s "$ENGINE" ]; then
    echo "entrypoint: building $ENGINE for this model and board (minutes on a Jetson)"
    ARGS=(build-engine "$MODEL" --precision "$PRECISION" --out "$ENGINE"
          --timing-cache "$CACHE/engines/timing.cache")
    if [ -n "${EDGE_FER_TARGET:-}" ]; then
        ARGS+=(--target "$EDGE_FER_TARGET")
    fi
    if [ -n "$CALIB" ]; then
        ARGS+=(--calib-cache "$CALIB")
    fi
    edge-fer "${ARGS[@]}"
fi
export EDGE_FER_ENGINE="$ENGINE"

if [ $# -eq 0 ]; then
    # --events -: the events go to standard output, appended to the volume's events.jsonl (a
    # named --events file is truncated at every start, and a restart would lose them); the
    # text summary goes to standard error (docker logs)
    exec edge-fer run "${EDGE_FER_SOURCE:-csi://0}" --backend tensorrt --model "$ENGINE" \
        --events - >>"$CACHE/events.jsonl"
fi
exec "$@"
