"""The initramfs images: contents of the probe image, the cache key, and
the Python the agent image carries (scanned from the host's interpreter)."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from vmtest_util import build_module, read_cpio

from isobox.errors import Unavailable
from isobox.vm import guestpython, initramfs, initscript
from isobox.vm.kernel import GuestKernel

needs_host_tools = pytest.mark.skipif(
    not os.path.exists(initramfs.BUSYBOX) or not os.path.exists("/usr/bin/python3.11"),
    reason="needs busybox-static and /usr/bin/python3.11")


def fake_kernel(base: Path) -> GuestKernel:
    modules = base / "kernels" / "6.1.0-t" / "modules"
    drivers = modules / "kernel" / "drivers"
    drivers.mkdir(parents=True)
    for name, deps in {"virtio_ring": "", "virtio": "virtio_ring",
                       "virtio_pci_modern_dev": "", "virtio_pci_legacy_dev": "",
                       "virtio_pci": "virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio",
                       "virtio_console": "virtio,virtio_ring"}.items():
        (drivers / f"{name}.ko").write_bytes(build_module(name, deps))
    (modules.parent / "config").write_text("# CONFIG_MODULE_SIG_FORCE is not set\n")
    (modules.parent / "vmlinuz").write_bytes(b"")
    return GuestKernel("6.1.0-t", str(modules.parent / "vmlinuz"), str(modules))


@needs_host_tools
def test_probe_image(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path)
    path = initramfs.ensure_probe(str(tmp_path / "state"), kernel)
    assert os.path.dirname(path) == str(tmp_path / "state" / "vm" / "initramfs")
    entries = {e.name: e for e in read_cpio(Path(path).read_bytes())}
    init = entries["init"]
    assert stat.S_IMODE(init.mode) == 0o755
    assert init.data.decode() == initscript.probe_init(
        [("", ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio",
               "virtio_pci"]), (initscript.VIRTIO_CONSOLE, ["virtio_console"])])
    assert entries["dev/console"].rdev == (5, 1)
    busybox = os.path.realpath(initramfs.BUSYBOX).lstrip("/")
    assert entries[busybox].data == Path(initramfs.BUSYBOX).read_bytes()
    ko = [n for n in entries if n.endswith(".ko")]
    assert sorted(ko) == sorted(f"{initscript.MODULES_DIR.lstrip('/')}/{name}.ko" for name in (
        "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
        "virtio_console"))
    # cached: the same path, not rebuilt
    before = os.stat(path).st_mtime_ns
    assert initramfs.ensure_probe(str(tmp_path / "state"), kernel) == path
    assert os.stat(path).st_mtime_ns == before


@needs_host_tools
def test_key_follows_the_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = fake_kernel(tmp_path)
    state = str(tmp_path / "state")
    first = initramfs.ensure_probe(state, kernel)
    other_kernel = initramfs.ensure_probe(state, replace(kernel, version="6.1.0-u"))
    real = guestpython.source_signature
    monkeypatch.setattr(guestpython, "source_signature", lambda: [*real(), ("/x.py", 1, 2)])
    other_sources = initramfs.ensure_probe(state, kernel)
    assert len({first, other_kernel, other_sources}) == 3
    assert os.path.exists(first)  # recent images stay: a VM may be starting with it


def test_initrd_override_is_used_as_is(tmp_path: Path) -> None:
    kernel = GuestKernel("v", "/k", "", initrd_override="/my/initrd.img")
    assert initramfs.ensure(str(tmp_path), kernel) == "/my/initrd.img"


def test_agent_command_line_is_one_constant() -> None:
    assert initramfs.AGENT_ARGV[:4] == ("/usr/bin/python3", "-I", "-m", "isobox.agent")
    assert initramfs.AGENT_ARGV[-2:] == ("--port-name", initscript.AGENT_PORT)


@needs_host_tools
def test_python_scan_finds_stdlib_and_isobox_modules(tmp_path: Path) -> None:
    files = guestpython.scan("/usr/bin/python3.11", ["isobox.taskapi.frames"], str(tmp_path))
    by_guest = {f.guest: f for f in files}
    lib = guestpython.GUEST_LIB
    assert f"{lib}/isobox/taskapi/frames.py" in by_guest
    assert f"{lib}/isobox/__init__.py" in by_guest
    assert f"{lib}/json/__init__.py" in by_guest  # frames imports json
    assert f"{lib}/runpy.py" in by_guest  # -m needs it
    assert not any("sitecustomize" in g or "_distutils_hack" in g for g in by_guest)
    frames = by_guest[f"{lib}/isobox/taskapi/frames.py"]
    pyc = Path(frames.pyc).read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, unchecked


@needs_host_tools
def test_python_scan_reports_a_root_that_does_not_import(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match=r"the guest agent does not import: isobox\.no_such"):
        guestpython.scan("/usr/bin/python3.11", ["isobox.no_such"], str(tmp_path))


def test_package_data_goes_under_the_guest_lib() -> None:
    data = dict(guestpython.package_data())
    assert any(g.endswith("/isobox/oci/data/seccomp_default.json") for g in data.values())
    assert all(g.startswith(guestpython.GUEST_LIB + "/isobox/") for g in data.values())
