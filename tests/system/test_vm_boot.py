"""Boot real utility VMs under TCG with the Debian guest kernel: the probe
image (the accelerator probe and the boot floor), and an agent-style image
whose pid 1 is a Python program that finds its disks by serial, mounts two
erofs layers under an overlay with an ext4 upper layer, and a 9p share, as
the agent will. Skipped without QEMU or a guest kernel.

The kernel package is unpacked once per session. It comes from
``$ISOBOX_VM_KERNEL_CACHE`` (a directory: an existing linux-image .deb there
is reused, else one is downloaded into it), else from the developer's copy
under /tmp/vmx, else ``apt-get download``.
"""

from __future__ import annotations

import glob
import json
import os
import select
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from isobox.errors import IsoboxError
from isobox.vm import accel, disks, initramfs, kernel, qemu
from isobox.vm.initscript import WRITABLE_DISK_FLAG

DEV_DEB = "/tmp/vmx/linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb"
BOOT_TIMEOUT = 90.0

pytestmark = pytest.mark.skipif(shutil.which(qemu.QEMU) is None,
                                reason=f"{qemu.QEMU} not installed (apt-get install qemu-system-x86)")


def kernel_deb() -> str | None:
    cache = os.environ.get("ISOBOX_VM_KERNEL_CACHE")
    if cache:
        os.makedirs(cache, exist_ok=True)
        found = sorted(glob.glob(os.path.join(cache, "linux-image-*.deb")), key=os.path.getmtime)
        if not found:
            package = kernel.default_package()
            res = subprocess.run(["apt-get", "download", "-q", package], cwd=cache,
                                 capture_output=True, text=True, timeout=900,
                                 stdin=subprocess.DEVNULL)
            if res.returncode != 0:
                pytest.skip(f"cannot download {package}: {res.stderr.strip()[-200:]}")
            found = sorted(glob.glob(os.path.join(cache, "linux-image-*.deb")))
        return found[-1]
    return DEV_DEB if os.path.exists(DEV_DEB) else None


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, kernel.GuestKernel]:
    state = str(tmp_path_factory.mktemp("vm-state"))
    try:
        guest = kernel.setup(state, deb=kernel_deb())
    except IsoboxError as exc:
        pytest.skip(f"no guest kernel: {exc}")
    return state, guest


def test_probe_boots_under_tcg(vm: tuple[str, kernel.GuestKernel]) -> None:
    state, guest = vm
    assert guest.kernel.endswith("/vmlinux"), "setup should extract the PVH kernel"
    seconds = accel.boot_probe(state, guest, "tcg", timeout=BOOT_TIMEOUT)
    assert 0 < seconds < BOOT_TIMEOUT


def test_choose_probes_once_then_caches(vm: tuple[str, kernel.GuestKernel],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    state, guest = vm
    monkeypatch.setattr(accel, "PROBE_TIMEOUT", 5.0)  # a hanging KVM costs this much
    first = accel.choose(state, guest)
    assert first.accel in ("kvm", "tcg") and first.reason and not first.cached
    again = accel.choose(state, guest)
    assert (again.accel, again.reason, again.cached) == (first.accel, first.reason, True)
    assert accel.cached_choice(state, guest) == again


GUEST_PROGRAM = r"""
import json, os, stat, subprocess
def sh(*args):
    subprocess.run(["/bin/busybox", *args], check=True)
found = {}
for dev in os.listdir("/sys/block"):
    try:
        with open(f"/sys/block/{dev}/serial") as f:
            found[f.read().strip()] = "/dev/" + dev
    except OSError:
        pass
for d in ("/mnt/l0", "/mnt/l1", "/mnt/rw", "/mnt/root", "/mnt/share"):
    os.makedirs(d)
sh("mount", "-t", "erofs", "-o", "ro", found["layer0"], "/mnt/l0")
sh("mount", "-t", "erofs", "-o", "ro", found["layer1"], "/mnt/l1")
sh("mount", "-t", "ext4", found["upper"], "/mnt/rw")
os.makedirs("/mnt/rw/upper")
os.makedirs("/mnt/rw/work")
sh("mount", "-t", "overlay", "-o",
   "lowerdir=/mnt/l1:/mnt/l0,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work", "overlay", "/mnt/root")
sh("mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L", "share0", "/mnt/share")
owned = os.lstat("/mnt/l0/etc/owned")
whiteout = os.lstat("/mnt/l1/gone")
report = {
    "serials": sorted(found),
    "owned": [owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)],
    "owned_text": open("/mnt/root/etc/owned").read(),
    "setuid": stat.S_IMODE(os.lstat("/mnt/l0/bin/su").st_mode),
    "link": os.readlink("/mnt/root/link"),
    "hardlinked": os.lstat("/mnt/l0/hard1").st_ino == os.lstat("/mnt/l0/hard2").st_ino,
    "whiteout": [stat.S_ISCHR(whiteout.st_mode), os.major(whiteout.st_rdev),
                 os.minor(whiteout.st_rdev)],
    "opaque_xattr": os.getxattr("/mnt/l1/opaque", "trusted.overlay.opaque").decode(),
    "merged_root": sorted(os.listdir("/mnt/root")),
    "merged_opaque": sorted(os.listdir("/mnt/root/opaque")),
    "share": open("/mnt/share/hello").read(),
}
with open("/mnt/share/from-guest", "w") as f:
    f.write("written in the guest")
with open("/mnt/root/new", "w") as f:
    f.write("in the upper layer")
os.sync()
port = os.open("/dev/virtio-ports/isobox.agent", os.O_WRONLY)
os.write(port, json.dumps(report).encode() + b"\n")
"""


def make_layers(base: Path) -> tuple[Path, Path]:
    """A base layer and one on top that deletes a file and makes a directory opaque."""
    l0, l1 = base / "l0", base / "l1"
    (l0 / "etc").mkdir(parents=True)
    (l0 / "bin").mkdir()
    (l0 / "opaque").mkdir()
    (l0 / "opaque" / "old").write_text("hidden by the opaque dir")
    (l0 / "gone").write_text("hidden by the whiteout")
    (l0 / "etc" / "owned").write_text("owned by 1000:1001")
    os.chown(l0 / "etc" / "owned", 1000, 1001)
    os.chmod(l0 / "etc" / "owned", 0o640)
    (l0 / "bin" / "su").write_text("#!/bin/sh\n")
    os.chmod(l0 / "bin" / "su", 0o4755)
    os.symlink("etc/owned", l0 / "link")
    (l0 / "hard1").write_text("same inode")
    os.link(l0 / "hard1", l0 / "hard2")
    (l1 / "opaque").mkdir(parents=True)
    (l1 / "opaque" / "new").write_text("the only entry")
    os.setxattr(l1 / "opaque", "trusted.overlay.opaque", b"y")
    os.mknod(l1 / "gone", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    return l0, l1


def boot_and_read(spec: qemu.VmSpec, sock: socket.socket, theirs: socket.socket) -> bytes:
    proc = subprocess.Popen(qemu.command(spec), pass_fds=[theirs.fileno()],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    theirs.close()
    data = b""
    deadline = time.monotonic() + BOOT_TIMEOUT
    try:
        while not data.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], 1.0)
            if ready:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        proc.wait(timeout=30)  # pid 1 exits: panic=-1 and -no-reboot end QEMU
    finally:
        if proc.poll() is None:
            proc.kill()  # by pid: this QEMU only
            proc.wait()
    return data


@pytest.mark.skipif(shutil.which("mkfs.erofs") is None, reason="erofs-utils not installed")
def test_guest_mounts_layers_upper_and_share(vm: tuple[str, kernel.GuestKernel],
                                             tmp_path: Path) -> None:
    state, guest = vm
    l0, l1 = make_layers(tmp_path)
    images = [disks.layer_image(state, str(l0), "sha256:l0"),
              disks.layer_image(state, str(l1), "sha256:l1")]
    assert disks.layer_image(state, str(tmp_path / "nowhere"), "sha256:l0") == images[0]
    upper = tmp_path / "upper.ext4"
    disks.create_writable(str(upper), 256 << 20)
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello").write_text("from the host")
    initrd = initramfs.ensure_agent(state, guest, ["/usr/bin/python3", "-I", "-c", GUEST_PROGRAM],
                                    ["json"])
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    console = tmp_path / "console.log"
    spec = qemu.VmSpec(guest.kernel, initrd, 256, 1, "tcg", agent_fd=theirs.fileno(),
                       console_log=str(console),
                       disks=[qemu.Disk(images[0], "layer0", True),
                              qemu.Disk(images[1], "layer1", True),
                              qemu.Disk(str(upper), "upper", False)],
                       shares=[qemu.Share("share0", str(share), False)],
                       cmdline_extra=WRITABLE_DISK_FLAG)  # ext4 for the writable disk
    with ours:
        line = boot_and_read(spec, ours, theirs)
    assert line, f"no report from the guest; console:\n{console.read_text()[-3000:]}"
    report = json.loads(line)
    assert report["serials"] == ["layer0", "layer1", "upper"]
    assert report["owned"] == [1000, 1001, 0o640]
    assert report["owned_text"] == "owned by 1000:1001"
    assert report["setuid"] == 0o4755
    assert report["link"] == "etc/owned"
    assert report["hardlinked"] is True
    assert report["whiteout"] == [True, 0, 0]
    assert report["opaque_xattr"] == "y"
    assert report["merged_root"] == ["bin", "etc", "hard1", "hard2", "link", "opaque"]
    assert report["merged_opaque"] == ["new"]
    assert report["share"] == "from the host"
    assert (share / "from-guest").read_text() == "written in the guest"
    if shutil.which("debugfs"):
        out = subprocess.run(["debugfs", "-R", "cat /upper/new", str(upper)],
                             capture_output=True, text=True, timeout=30).stdout
        assert out == "in the upper layer"
