#!/usr/bin/env bash
# Benchmark edge-fer on a Jetson under tegrastats, per nvpmodel power mode, into one JSON file:
# frames/s and latency p50/p99 (from `edge-fer bench`), GPU / EMC / CPU load, DLA clock activity,
# input power and temperatures (from tegrastats).
#
#   jetson/benchmark.sh --synthetic 1280x720                 # the current power mode only
#   sudo env PATH="$PATH" jetson/benchmark.sh --modes "0 1" clip.mp4   # each mode, then restored
#   jetson/benchmark.sh clip.mp4 --out bench_orin.json -- --model fer.fp16.engine
#
# Options after `--` go to `edge-fer bench` (default: --backend tensorrt). Switching modes needs
# root; without --modes nothing about the board is changed. Exit 2 on a usage mistake.
# edge-fer is the one on the PATH, or EDGE_FER=/path/to/venv/bin/edge-fer. sudo resets the PATH
# (secure_path, even with -E), so under sudo pass it on as above or give EDGE_FER.
set -euo pipefail

MODES=""
SOURCE=()
OUT="tegrastats_bench.json"
INTERVAL_MS=500
SETTLE_S=5
BENCH_ARGS=()
die() { echo "benchmark.sh: error: $*" >&2; exit 2; }
say() { echo "benchmark.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --modes) MODES="${2:?--modes needs mode ids, e.g. \"0 1\"}"; shift 2 ;;
        --synthetic) SOURCE=(--synthetic "${2:?--synthetic needs WxH}"); shift 2 ;;
        --out) OUT="${2:?--out needs a file}"; shift 2 ;;
        --interval) INTERVAL_MS="${2:?--interval needs milliseconds}"; shift 2 ;;
        --) shift; BENCH_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) SOURCE=("$1"); shift ;;
    esac
done
[ ${#SOURCE[@]} -gt 0 ] || die "give a video file or --synthetic WxH"
[ ${#BENCH_ARGS[@]} -gt 0 ] || BENCH_ARGS=(--backend tensorrt)
command -v tegrastats >/dev/null 2>&1 || die "tegrastats not found: run this on a Jetson"
EDGE_FER="$(command -v -- "${EDGE_FER:-edge-fer}" 2>/dev/null)" \
    || die "${EDGE_FER:-edge-fer} not found: activate its venv; under sudo run sudo env PATH=\"\$PATH\" $0 ... or set EDGE_FER=/path/to/venv/bin/edge-fer"
PY="$(dirname -- "$EDGE_FER")/python"
[ -x "$PY" ] || PY=python3

WORK="$(mktemp -d)"
ORIGINAL_MODE=""
cleanup() {
    if [ -n "$ORIGINAL_MODE" ]; then
        say "restoring power mode $ORIGINAL_MODE"
        nvpmodel -m "$ORIGINAL_MODE" >/dev/null || say "could not restore mode $ORIGINAL_MODE"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

mode_query() {  # prints "<id> <name>" of the current mode
    local q
    q="$(nvpmodel -q 2>/dev/null || true)"
    printf '%s %s\n' "$(printf '%s\n' "$q" | grep -E '^[0-9]+$' | tail -n 1)" \
        "$(printf '%s\n' "$q" | sed -n 's/^NV Power Mode: *//p' | head -n 1)"
}

if [ -n "$MODES" ]; then
    [ "$(id -u)" = 0 ] || die "switching power modes needs root: sudo env PATH=\"\$PATH\" $0 ..."
    ORIGINAL_MODE="$(mode_query | cut -d' ' -f1)"
    [ -n "$ORIGINAL_MODE" ] || die "cannot read the current mode (nvpmodel -q)"
fi

PARTS=()
for MODE in ${MODES:-current}; do
    if [ "$MODE" != current ]; then
        say "power mode $MODE"
        nvpmodel -m "$MODE" || die "nvpmodel -m $MODE failed (some modes need a reboot)"
        sleep "$SETTLE_S"
    fi
    read -r MODE_ID MODE_NAME < <(mode_query) || true
    LOG="$WORK/tegrastats_${MODE}.log"
    BENCH="$WORK/bench_${MODE}.json"
    tegrastats --interval "$INTERVAL_MS" --logfile "$LOG" &
    TS_PID=$!
    say "mode ${MODE_NAME:-?} (${MODE_ID:-?}): edge-fer bench ${SOURCE[*]} ${BENCH_ARGS[*]}"
    set +e
    "$EDGE_FER" bench "${SOURCE[@]}" --json "$BENCH" "${BENCH_ARGS[@]}"
    RC=$?
    set -e
    kill "$TS_PID" 2>/dev/null || true
    wait "$TS_PID" 2>/dev/null || true
    [ "$RC" = 0 ] || die "edge-fer bench failed (exit $RC) in mode ${MODE_NAME:-$MODE}"
    PART="$WORK/part_${MODE}.json"
    MODE_ARGS=(--mode "${MODE_NAME:-unknown}")
    if [ -n "${MODE_ID:-}" ]; then
        MODE_ARGS+=(--mode-id "$MODE_ID")
    fi
    "$PY" -m edge_fer.deploy.tegrastats summarize "$LOG" --bench "$BENCH" "${MODE_ARGS[@]}" -o "$PART"
    PARTS+=("$PART")
done

"$PY" -m edge_fer.deploy.tegrastats merge -o "$OUT" "${PARTS[@]}"
say "wrote $OUT"
