#!/usr/bin/env bash
# The main job: set up, then run a busybox container with isobox-runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
work=$(mktemp -d /tmp/isobox-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m isobox.tools.busybox_bundle "$work/bundle" \
    -- sh -c 'echo "hello from $(hostname): pid $$, uid $(id -u)"; ls /; cat /proc/self/cgroup | head -3'
.venv/bin/isobox-runtime --root "$work/state" run --bundle "$work/bundle" isobox-demo-$$
