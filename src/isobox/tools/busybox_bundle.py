"""Make an OCI bundle whose rootfs is the host's static busybox.

Usage: python -m isobox.tools.busybox_bundle DIR [--terminal] -- CMD [ARG...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from typing import Any

from isobox.runtime.spec import default_spec

BUSYBOX = "/bin/busybox"


def applets(busybox: str = BUSYBOX) -> list[str]:
    # The host's own static busybox, never a binary from an image.
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True,
                         stdin=subprocess.DEVNULL, timeout=10).stdout
    return [name for name in out.split() if name and name != "busybox" and "/" not in name]


def make_rootfs(path: str, busybox: str = BUSYBOX) -> str:
    os.makedirs(os.path.join(path, "bin"), exist_ok=True)
    os.makedirs(os.path.join(path, "etc"), exist_ok=True)
    for d in ("proc", "sys", "dev", "tmp", "root"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(path, "bin", "busybox"))
    for name in applets(busybox):
        link = os.path.join(path, "bin", name)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    return path


def make_bundle(path: str, args: list[str], *, terminal: bool = False,
                rootfs: str | None = None) -> dict[str, Any]:
    os.makedirs(path, exist_ok=True)
    if rootfs is None:
        make_rootfs(os.path.join(path, "rootfs"))
    spec = default_spec(args=args, terminal=terminal)
    spec["root"] = {"path": rootfs or "rootfs", "readonly": False}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(spec, f, indent=2)
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir")
    parser.add_argument("--terminal", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    make_bundle(a.dir, command or ["sh"], terminal=a.terminal)


if __name__ == "__main__":
    main()
