"""The guest's /init scripts: valid shell, and the module groups loaded
only for the virtio devices present (run for real with busybox's shell)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from isobox.vm import initscript

BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="busybox not installed")
GROUPS = [("", ["virtio_ring", "virtio", "virtio_pci"]),
          (initscript.VIRTIO_CONSOLE, ["virtio_console"]),
          (initscript.VIRTIO_BLOCK, ["virtio_blk", "crc16", "ext4"]),
          (initscript.VIRTIO_9P, ["crc16", "9pnet", "9p"])]


@needs_busybox
@pytest.mark.parametrize("script", [
    initscript.agent_init(GROUPS, ["/usr/bin/python3", "-I", "-m", "isobox.agent", "--x", "a b"]),
    initscript.agent_init([], ["/sbin/init"]),
    initscript.probe_init(GROUPS[:2]),
])
def test_scripts_parse(script: str) -> None:
    assert script.startswith("#!/bin/busybox sh\n")
    subprocess.run([str(BUSYBOX), "sh", "-n", "-c", script], check=True, timeout=10)


def test_agent_script_mounts_and_execs_the_agent() -> None:
    script = initscript.agent_init(GROUPS, ["/usr/bin/python3", "-I", "-c", "print('a b')"])
    for mount in ("proc /proc", "sysfs /sys", "devtmpfs /dev", "devpts /dev/pts", "shm /dev/shm",
                  "run /run", "tmp /tmp", "cgroup2 /sys/fs/cgroup"):
        assert mount in script
    assert script.rstrip().endswith("exec /usr/bin/python3 -I -c 'print('\"'\"'a b'\"'\"')'")
    assert f"mount --bind / {initscript.REROOT_DIR}" in script


def test_probe_script_writes_the_marker_and_reboots() -> None:
    script = initscript.probe_init(GROUPS[:2])
    assert f"echo {initscript.PROBE_MARKER} > /dev/virtio-ports/{initscript.AGENT_PORT}" in script
    assert script.rstrip().endswith("reboot -f")


@needs_busybox
@pytest.mark.parametrize("present, expected", [
    ([], ["virtio_ring", "virtio", "virtio_pci"]),
    (["0x0003"], ["virtio_ring", "virtio", "virtio_pci", "virtio_console"]),
    (["0x0003", "0x0002", "0x0009", "0x0001"],
     ["virtio_ring", "virtio", "virtio_pci", "virtio_console", "virtio_blk", "crc16", "ext4",
      "9pnet", "9p"]),
])
def test_modules_load_only_for_present_devices(tmp_path: Path, present: list[str],
                                               expected: list[str]) -> None:
    devices = tmp_path / "devices"
    devices.mkdir()
    for i, kind in enumerate(present):
        (devices / f"virtio{i}").mkdir()
        (devices / f"virtio{i}" / "device").write_text(kind + "\n")
    script = initscript.agent_init(GROUPS, ["/bin/true"])
    loader = script[script.index("loaded=' '"):script.index("link_ports() {")]
    loader = loader.replace("/bin/busybox insmod", "echo").replace(
        "/sys/bus/virtio/devices", str(devices))
    out = subprocess.run([str(BUSYBOX), "sh", "-c", loader], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    assert [line.rsplit("/", 1)[1].removesuffix(".ko") for line in out.split()] == expected
