#!/usr/bin/env bash
# The main job: set up, then run a busybox container process-isolated and
# VM-isolated with the isobox CLI (and once more straight through
# isobox-runtime). The VM needs a guest kernel: 'isobox vm setup' fetches
# Debian's linux-image package and probes KVM (else TCG).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
work=$(mktemp -d /tmp/isobox-demo.XXXXXX)
export ISOBOX_ROOT="$work/root"
cleanup() {
    .venv/bin/isobox ps -aq 2>/dev/null | xargs -r .venv/bin/isobox rm -f >/dev/null 2>&1 || true
    # The root's warm command server and monitor launcher, by their pid files.
    for pid_file in "$ISOBOX_ROOT"/run/cli-server.pid "$ISOBOX_ROOT"/run/shim-zygote.pid; do
        [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null || true
    done
    # The demo root's bridge, nftables table and DNS server go with it.
    .venv/bin/python -c 'import sys; from isobox.engine.networking import open_manager
m = open_manager(sys.argv[1]); m.destroy(); m.close()' "$ISOBOX_ROOT" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
.venv/bin/isobox image bootstrap busybox >/dev/null
.venv/bin/isobox run --rm --isolation=process busybox \
    sh -c 'echo "hello from $(hostname): pid $$, uid $(id -u), kernel $(uname -r)"; ls /'
timeout 900 .venv/bin/isobox vm setup
timeout 300 .venv/bin/isobox run --rm --isolation=vm busybox \
    sh -c 'echo "hello from a VM: kernel $(uname -r), $(grep MemTotal /proc/meminfo)"'
.venv/bin/python -m isobox.tools.busybox_bundle "$work/bundle" -- sh -c 'echo "and from isobox-runtime: pid $$"'
.venv/bin/isobox-runtime --root "$work/state" run --bundle "$work/bundle" isobox-demo-$$
