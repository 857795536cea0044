#!/usr/bin/env bash
# trtexec recipes: build TensorRT engines for an edge-fer ONNX classifier on the device that
# will run them (engines are tied to the GPU and to the TensorRT version), then write the
# metadata sidecar that `edge-fer ... --backend tensorrt` needs (<engine>.json).
#
# Usage (every setting is an environment variable; only MODEL is required):
#
#   MODEL=fer.onnx RECIPE=fp16 bash export/trtexec_recipes.sh
#   MODEL=fer.onnx RECIPE=int8-calib CALIB_CACHE=calibration/fer.calib bash export/trtexec_recipes.sh
#   MODEL=fer.onnx RECIPE=int8-qdq QDQ_MODEL=fer.int8.qdq.onnx bash export/trtexec_recipes.sh
#   MODEL=fer.onnx RECIPE=dla DLA_CORE=0 bash export/trtexec_recipes.sh        # Xavier / Orin
#   MODEL=fer.onnx RECIPE=all DRY_RUN=1 bash export/trtexec_recipes.sh         # print only
#
# RECIPE       fp32 | fp16 (default) | int8-calib | int8-qdq | sparse | dla | all
# OUT_DIR      where engines go (default: the model's folder)
# TRTEXEC      the trtexec binary (default: trtexec on PATH, else JetPack's
#              /usr/src/tensorrt/bin/trtexec)
# INPUT_NAME   the model's input tensor (default: input, as `edge-fer export` names it)
# CHW          channels x height x width of one face (default: 1x48x48)
# MIN_BATCH / OPT_BATCH / MAX_BATCH   batch profile (default 1 / 8 / 32)
# WORKSPACE_MB builder workspace in MiB (default 1024)
# CALIB_CACHE  INT8 calibration cache for int8-calib (TensorRT <= 10 only)
# QDQ_MODEL    the Q/DQ (explicitly quantized) ONNX model for int8-qdq
# DLA_CORE     DLA core for dla (default 0)
# BUILD_ONLY   flag that skips the timing run after the build (default: --skipInference when
#              this trtexec knows it, i.e. 8.6 and later; --buildOnly on 8.5 and older, JetPack 5)
# EXTRA        more trtexec flags, appended as they are (e.g. "--verbose")
# DRY_RUN=1    print the commands instead of running them
# EDGE_FER     the edge-fer command, for the sidecar step (default: edge-fer)
#
# TensorRT 11 removed --fp16, --int8, --best and --calib (networks are strongly typed): there
# only fp32 (of an FP16-converted model, if wanted) and int8-qdq apply, and int8-qdq drops
# --int8 (set TRT11=1). TensorRT 11 does not support JetPack.
set -euo pipefail

: "${MODEL:?set MODEL=path/to/model.onnx}"
RECIPE=${RECIPE:-fp16}
OUT_DIR=${OUT_DIR:-$(dirname -- "$MODEL")}
INPUT_NAME=${INPUT_NAME:-input}
CHW=${CHW:-1x48x48}
MIN_BATCH=${MIN_BATCH:-1}
OPT_BATCH=${OPT_BATCH:-8}
MAX_BATCH=${MAX_BATCH:-32}
WORKSPACE_MB=${WORKSPACE_MB:-1024}
DLA_CORE=${DLA_CORE:-0}
EXTRA=${EXTRA:-}
DRY_RUN=${DRY_RUN:-0}
TRT11=${TRT11:-0}
EDGE_FER=${EDGE_FER:-edge-fer}

if [[ -z "${TRTEXEC:-}" ]]; then
  if command -v trtexec >/dev/null 2>&1; then
    TRTEXEC=$(command -v trtexec)
  else
    TRTEXEC=/usr/src/tensorrt/bin/trtexec  # where JetPack installs it
  fi
fi

if [[ -z "${BUILD_ONLY:-}" ]]; then
  # --skipInference arrived in TensorRT 8.6; JetPack 5's trtexec (8.5) only has --buildOnly
  if [[ "$DRY_RUN" != 1 ]] && ! "$TRTEXEC" --help 2>&1 | grep -q -- --skipInference; then
    BUILD_ONLY=--buildOnly
  else
    BUILD_ONLY=--skipInference
  fi
fi

stem=$(basename -- "$MODEL" .onnx)
shapes=(
  "--minShapes=${INPUT_NAME}:${MIN_BATCH}x${CHW}"
  "--optShapes=${INPUT_NAME}:${OPT_BATCH}x${CHW}"
  "--maxShapes=${INPUT_NAME}:${MAX_BATCH}x${CHW}"
)

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ "$DRY_RUN" != 1 ]]; then
    "$@"
  fi
}

# build ONNX ENGINE [trtexec flags...]: build, then write ENGINE.json from MODEL's metadata
build() {
  local onnx=$1 engine=$2
  shift 2
  local s=("${shapes[@]}")
  if [[ "${STATIC:-0}" == 1 ]]; then  # DLA: min = opt = max, else every layer goes to the GPU
    s=("--minShapes=${INPUT_NAME}:${OPT_BATCH}x${CHW}" "--optShapes=${INPUT_NAME}:${OPT_BATCH}x${CHW}"
       "--maxShapes=${INPUT_NAME}:${OPT_BATCH}x${CHW}")
  fi
  # shellcheck disable=SC2086  # EXTRA is a list of flags on purpose
  run "$TRTEXEC" "--onnx=$onnx" "--saveEngine=$engine" "${s[@]}" \
    "--memPoolSize=workspace:${WORKSPACE_MB}" "$BUILD_ONLY" "$@" $EXTRA
  # the sidecar always takes the metadata of the exported FP32 model (same classes/spec)
  run $EDGE_FER build-engine "$MODEL" --sidecar-for "$engine"
}

recipe() {
  case "$1" in
    fp32)
      build "$MODEL" "$OUT_DIR/$stem.fp32.engine"
      ;;
    fp16)
      build "$MODEL" "$OUT_DIR/$stem.fp16.engine" --fp16
      ;;
    int8-calib)
      # implicit INT8 from an existing calibration cache; without a valid cache trtexec uses
      # placeholder scales (fine for timing, useless for accuracy). --fp16 lets layers that
      # do not quantize well run in FP16 instead of FP32.
      : "${CALIB_CACHE:?set CALIB_CACHE=path/to/calibration.cache for int8-calib}"
      build "$MODEL" "$OUT_DIR/$stem.int8.engine" --int8 --fp16 "--calib=$CALIB_CACHE"
      ;;
    int8-qdq)
      # explicit quantization: the scales are in the Q/DQ nodes, no calibration data
      : "${QDQ_MODEL:?set QDQ_MODEL=path/to/model.qdq.onnx for int8-qdq}"
      if [[ "$TRT11" == 1 ]]; then
        build "$QDQ_MODEL" "$OUT_DIR/$stem.int8-qdq.engine"
      else
        build "$QDQ_MODEL" "$OUT_DIR/$stem.int8-qdq.engine" --int8 --fp16
      fi
      ;;
    sparse)
      # 2:4 structured sparsity (Ampere and later, Orin included); pays off only for weights
      # pruned to that pattern
      build "$MODEL" "$OUT_DIR/$stem.fp16-sparse.engine" --fp16 --sparsity=enable
      ;;
    dla)
      # Jetson Xavier / AGX Orin / Orin NX: DLA runs FP16 or INT8; layers it cannot run fall
      # back to the GPU. Orin Nano has no DLA.
      STATIC=1 build "$MODEL" "$OUT_DIR/$stem.fp16-dla${DLA_CORE}.engine" --fp16 \
        "--useDLACore=${DLA_CORE}" --allowGPUFallback
      ;;
    *)
      echo "trtexec_recipes.sh: unknown RECIPE '$1' (fp32, fp16, int8-calib, int8-qdq, sparse, dla, all)" >&2
      exit 2
      ;;
  esac
}

if [[ "$DRY_RUN" != 1 && ! -x "$TRTEXEC" ]]; then
  echo "trtexec_recipes.sh: no trtexec at $TRTEXEC (set TRTEXEC=...)" >&2
  exit 2
fi
if [[ "$DRY_RUN" != 1 && ! -f "$MODEL" ]]; then
  echo "trtexec_recipes.sh: no such model $MODEL" >&2
  exit 2
fi

if [[ "$RECIPE" == all ]]; then
  recipe fp32
  recipe fp16
  recipe sparse
  if [[ -n "${CALIB_CACHE:-}" ]]; then recipe int8-calib; fi
  if [[ -n "${QDQ_MODEL:-}" ]]; then recipe int8-qdq; fi
  recipe dla
else
  recipe "$RECIPE"
fi
