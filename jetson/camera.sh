#!/usr/bin/env bash
# Run `edge-fer run` on a camera preset of jetson/cameras.json.
#
#   jetson/camera.sh --list
#   jetson/camera.sh imx219-1080p30 --backend tensorrt --preview-port 8090
#   jetson/camera.sh usb-mjpeg-720p30 --device /dev/video1 --events events.jsonl
#   jetson/camera.sh rtsp-h264 --url rtsp://cam.local:554/stream1 --backend tensorrt
#   jetson/camera.sh imx477-4k30 --print          # only print the source
#
# --device and --url fill the {device} / {url} of a preset; every other option goes to
# `edge-fer run`. EDGE_FER (default: edge-fer on the PATH) names the command.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRESETS="${EDGE_FER_CAMERAS:-$HERE/cameras.json}"
EDGE_FER="${EDGE_FER:-edge-fer}"

die() { echo "camera.sh: error: $*" >&2; exit 2; }

[ $# -gt 0 ] || die "give a preset name, or --list"
if [ "$1" = "--list" ]; then
    python3 - "$PRESETS" <<'EOF'
import json, sys
for name, p in json.load(open(sys.argv[1])).items():
    print(f"{name:<20} {p['description']}")
EOF
    exit 0
fi
NAME="$1"
shift
DEVICE=""
URL=""
PRINT=0
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="${2:?--device needs /dev/videoN}"; shift 2 ;;
        --url) URL="${2:?--url needs rtsp://...}"; shift 2 ;;
        --print) PRINT=1; shift ;;
        *) ARGS+=("$1"); shift ;;
    esac
done

SOURCE="$(python3 - "$PRESETS" "$NAME" "$DEVICE" "$URL" <<'EOF'
import json, sys
path, name, device, url = sys.argv[1:]
presets = json.load(open(path))
if name not in presets:
    sys.exit(f"camera.sh: error: unknown preset {name!r}; choose one of {', '.join(presets)}")
p = presets[name]
values = dict(p.get("defaults", {}))
if device:
    values["device"] = device
if url:
    values["url"] = url
print(p["source"].format(**values))
EOF
)" || exit 2

if [ "$PRINT" = 1 ]; then
    echo "$SOURCE"
    exit 0
fi
exec "$EDGE_FER" run "$SOURCE" "${ARGS[@]}"
