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
# CALIB_CACHE  INT8 calibration cache for int8-calib (TensorRT <= 10 only). Its header names
#              the TensorRT version that may read it (TRT-100300-EntropyCalibration2 = 10.3.0),
#              and trtexec silently calibrates on random data when it names another one, so
#              the script writes a copy for this trtexec's version next to the engine
#              (<engine>.calib) and builds from that; with edge-fer's Python at hand (beside
#              EDGE_FER, or python3) the copy is also checked against MODEL's tensor names.
# TRT_VERSION  X.Y.Z of TRTEXEC, for int8-calib only where its --help shows no
#              "[TensorRT vNNNN]" banner (a wrapper); refused when the banner says otherwise
# QDQ_MODEL    the Q/DQ (explicitly quantized) ONNX model for int8-qdq
# DLA_CORE     DLA core for dla (default 0)
# BUILD_ONLY   flag that skips the timing run after the build (default: --skipInference when
#              this trtexec knows it, i.e. 8.6 and later; --buildOnly on 8.5 and older, JetPack 5)
# EXTRA        more trtexec flags, appended as they are (e.g. "--verbose")
# DRY_RUN=1    print the commands instead of running them (trtexec --help is still read when
#              TRTEXEC exists, for the flags and version above)
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

die() {
  echo "trtexec_recipes.sh: $*" >&2
  exit 2
}

case "$RECIPE" in
  fp32 | fp16 | int8-calib | int8-qdq | sparse | dla | all) ;;
  *) die "unknown RECIPE '$RECIPE' (fp32, fp16, int8-calib, int8-qdq, sparse, dla, all)" ;;
esac
if [[ "$DRY_RUN" != 1 && ! -x "$TRTEXEC" ]]; then
  die "no trtexec at $TRTEXEC (set TRTEXEC=...)"
fi
if [[ "$DRY_RUN" != 1 && ! -f "$MODEL" ]]; then
  die "no such model $MODEL"
fi

# What this trtexec says about itself. Read whole into a variable: `trtexec --help | grep -q`
# under pipefail fails at random (grep stops at the first match, trtexec's next write gets
# SIGPIPE), and trtexec's exit code on --help is not relied on.
TRT_HELP=""
if [[ -x "$TRTEXEC" ]]; then
  TRT_HELP=$("$TRTEXEC" --help 2>&1) || true
fi

if [[ -z "${BUILD_ONLY:-}" ]]; then
  # --skipInference arrived in TensorRT 8.6 (10.x has no --buildOnly at all); JetPack 5's
  # trtexec (8.5) only has --buildOnly. Without a help text (a dry run) the 8.6+ spelling.
  if [[ -n "$TRT_HELP" && "$TRT_HELP" != *--skipInference* ]]; then
    BUILD_ONLY=--buildOnly
  else
    BUILD_ONLY=--skipInference
  fi
fi

# TensorRT's version code (NV_TENSORRT_VERSION, as calibration cache headers spell it:
# 8.5.2 -> 8502, 10.3.0 -> 100300): every trtexec since 8.x starts its output, --help
# included, with "&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # trtexec --help"
TRT_CODE=""
banner_re='\[TensorRT v([0-9]+)\]'
if [[ "$TRT_HELP" =~ $banner_re ]]; then
  TRT_CODE=$((10#${BASH_REMATCH[1]}))
fi

trt_text() {  # version code -> X.Y.Z
  if (($1 >= 100000)); then
    echo "$(($1 / 10000)).$(($1 / 100 % 100)).$(($1 % 100))"
  else
    echo "$(($1 / 1000)).$(($1 / 100 % 10)).$(($1 % 100))"
  fi
}

if [[ -n "${TRT_VERSION:-}" ]]; then
  version_re='^([0-9]+)\.([0-9]+)(\.([0-9]+))?$'
  [[ "$TRT_VERSION" =~ $version_re ]] || die "TRT_VERSION must look like 8.5.2 or 10.3.0, got '$TRT_VERSION'"
  major=$((10#${BASH_REMATCH[1]}))
  minor=$((10#${BASH_REMATCH[2]}))
  patch=$((10#${BASH_REMATCH[4]:-0}))
  if ((minor > 99 || patch > 99 || (major < 10 && minor > 9))); then
    die "TRT_VERSION $TRT_VERSION is no TensorRT version"
  fi
  if ((major >= 10)); then
    code=$((major * 10000 + minor * 100 + patch))
  else
    code=$((major * 1000 + minor * 100 + patch))
  fi
  if [[ -n "$TRT_CODE" && "$TRT_CODE" != "$code" ]]; then
    die "TRT_VERSION=$TRT_VERSION but $TRTEXEC is TensorRT $(trt_text "$TRT_CODE"): the calibration cache must name the trtexec's own version"
  fi
  TRT_CODE=$code
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

# retarget SRC DST: DST = the calibration cache SRC with its header rewritten for this
# trtexec's TensorRT. A cache whose header names another version is skipped by TensorRT, and
# trtexec then calibrates on random data: an INT8 engine with wrong scales and no error.
retarget() {
  local src=$1 dst=$2 want first py tmp rc
  if [[ -z "$TRT_CODE" ]]; then
    if [[ "$DRY_RUN" == 1 ]]; then
      echo "# $src -> $dst: header rewritten for the TensorRT of $TRTEXEC (read from its --help when run)"
      return
    fi
    die "cannot tell the TensorRT version of $TRTEXEC (no \"[TensorRT vNNNN]\" in its --help), and int8-calib needs it for the calibration cache's header: set TRT_VERSION=X.Y.Z"
  fi
  if ((TRT_CODE >= 110000)); then
    die "int8-calib: TensorRT $(trt_text "$TRT_CODE") removed --calib (implicit INT8); use RECIPE=int8-qdq with TRT11=1"
  fi
  want="TRT-$TRT_CODE-EntropyCalibration2"
  first=""
  if [[ -r "$src" ]]; then
    IFS= read -r first <"$src" || true
    first=${first%$'\r'}
  fi
  echo "# $src${first:+ ($first)} -> $dst ($want, TensorRT $(trt_text "$TRT_CODE") of this trtexec)"
  if [[ "$DRY_RUN" == 1 ]]; then
    return
  fi
  [[ -f "$src" ]] || die "no such calibration cache $src"
  tmp="$dst.tmp$$"
  # edge-fer's own rewrite (it also checks the scales and that the tensor names are MODEL's),
  # with the Python beside EDGE_FER (its venv) or python3; exit 3 = no edge_fer there
  local pys=(python3) exe
  if exe=$(command -v -- "${EDGE_FER%% *}" 2>/dev/null) && [[ "$exe" == */* ]]; then
    pys=("$(dirname -- "$exe")/python3" python3)
  fi
  for py in "${pys[@]}"; do
    command -v -- "$py" >/dev/null 2>&1 || continue
    rc=0
    "$py" - "$src" "$MODEL" "$TRT_CODE" "$tmp" <<'PY' || rc=$?
import sys
from pathlib import Path

try:
    from edge_fer.errors import UserError
    from edge_fer.export.engine import prepare_calib_cache
    from edge_fer.quantize.trt_cache import version_text
except ImportError:
    sys.exit(3)
src, model, code, out = sys.argv[1:5]
try:
    Path(out).write_bytes(prepare_calib_cache(src, model, version_text(int(code))))
except UserError as exc:
    sys.exit(f"trtexec_recipes.sh: {exc}")
except Exception as exc:  # noqa: BLE001 - one line, not a traceback
    sys.exit(f"trtexec_recipes.sh: {src}: cannot write the calibration cache ({exc})")
PY
    if ((rc == 0)); then
      mv -f -- "$tmp" "$dst"
      return
    fi
    rm -f -- "$tmp"
    ((rc == 3)) || exit 2
  done
  # no edge_fer: the header alone (TRT-<version>-<calibrator>; trtexec's calibrator is an
  # IInt8EntropyCalibrator2 and reads no other kind)
  if [[ ! "$first" =~ ^TRT-[0-9]+-EntropyCalibration2$ ]]; then
    die "$src: not an EntropyCalibration2 calibration cache (first line '${first:0:60}')"
  fi
  echo "trtexec_recipes.sh: note: no Python with edge_fer: header rewritten, tensor names not checked against $MODEL" >&2
  { printf '%s\n' "$want" && tail -n +2 -- "$src"; } >"$tmp" || { rm -f -- "$tmp"; die "cannot write $dst"; }
  mv -f -- "$tmp" "$dst"
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
      # implicit INT8 from an existing calibration cache, its copy for this TensorRT (written
      # before any build: see CALIB_FOR_TRT); without a cache it reads, trtexec uses random
      # scales (fine for timing, useless for accuracy). --fp16 lets layers that do not
      # quantize well run in FP16 instead of FP32.
      build "$MODEL" "$OUT_DIR/$stem.int8.engine" --int8 --fp16 "--calib=$CALIB_FOR_TRT"
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

# the cache for int8-calib first: a refusal comes before minutes of other builds
CALIB_FOR_TRT=""
if [[ "$RECIPE" == int8-calib || ("$RECIPE" == all && -n "${CALIB_CACHE:-}") ]]; then
  [[ -n "${CALIB_CACHE:-}" ]] || die "set CALIB_CACHE=path/to/calibration.cache for int8-calib"
  CALIB_FOR_TRT="$OUT_DIR/$stem.int8.engine.calib"
  retarget "$CALIB_CACHE" "$CALIB_FOR_TRT"
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
