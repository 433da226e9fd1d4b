#!/usr/bin/env bash
# Install what isobox needs on a fresh Debian 12 machine (run as root):
# the apt packages, a virtual environment in .venv, and isobox itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# runtime: busybox-static (test images), runc and containerd (peers, ctr);
# images: docker-registry, apache2-utils (htpasswd), openssl, skopeo, docker.io
# (interop with the real dockerd), debootstrap (Debian base images), umoci
# (the images benchmark's peer); VM isolation: qemu-system-x86 (the utility
# VMs), erofs-utils (read-only layer images), fuse2fs (ext4 images without
# a loop device); the compiled front end: gcc, libc6-dev.
packages=(python3 python3-venv python3-dev gcc libc6-dev libseccomp2 busybox-static runc containerd
          iproute2 procps ca-certificates docker-registry apache2-utils openssl skopeo
          docker.io debootstrap umoci qemu-system-x86 erofs-utils fuse2fs)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    # Packages such as docker.io and docker-registry would start their
    # services on install: tests start private instances instead.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import isobox" # fail loudly if the install did not take
scripts/build-client.sh .venv  # .venv/bin/isobox: the compiled front end
