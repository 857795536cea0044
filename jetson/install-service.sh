#!/usr/bin/env bash
# Install the edge-fer systemd unit: a dedicated system user `edge-fer` in the video group,
# /etc/systemd/system/edge-fer.service and its settings file /etc/default/edge-fer (kept when it
# exists). Run jetson/setup.sh first with the same --venv.
#
#   sudo jetson/install-service.sh [--venv /opt/edge-fer/venv]
#   sudo systemctl start edge-fer && journalctl -u edge-fer -f
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV=/opt/edge-fer/venv
die() { echo "install-service.sh: error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV="${2:?--venv needs a folder}"; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run it as root (sudo)"
[ -x "$VENV/bin/edge-fer" ] \
    || die "no $VENV/bin/edge-fer: run sudo jetson/setup.sh --venv $VENV --engines /var/cache/edge-fer/engines first"

if ! id edge-fer >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/edge-fer --no-create-home \
        --shell /usr/sbin/nologin edge-fer
fi
usermod -a -G video edge-fer
sed "s#/opt/edge-fer/venv#$VENV#g" "$HERE/edge-fer.service" > /etc/systemd/system/edge-fer.service
chmod 0644 /etc/systemd/system/edge-fer.service
if [ ! -e /etc/default/edge-fer ]; then
    install -m 0644 "$HERE/edge-fer.env" /etc/default/edge-fer
fi
systemctl daemon-reload
systemctl enable edge-fer.service
echo "install-service.sh: installed; edit /etc/default/edge-fer, then: sudo systemctl start edge-fer"
