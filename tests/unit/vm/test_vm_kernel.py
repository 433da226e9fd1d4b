"""Guest kernel setup (from a hand-made kernel package) and lookup."""

from __future__ import annotations

import json
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from vmtest_util import build_elf

from isobox.errors import NotFound
from isobox.vm import kernel

VERSION = "6.1.0-99-test"


def fake_bzimage(version: str, pvh: bool = True) -> bytes:
    head = bytearray(5 * 512)
    head[0x1F1] = 4
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, 0x20F)
    struct.pack_into("<H", head, 0x20E, 0x300)  # version string at 0x300 + 0x200
    text = f"{version} (builder@example) #1 SMP".encode() + b"\0"
    head[0x500:0x500 + len(text)] = text
    notes = [("Xen", 18, b"\0\0\0\x01")] if pvh else []
    payload = lzma.compress(build_elf({".text": b"\x90"}, notes=notes), format=lzma.FORMAT_XZ)
    struct.pack_into("<II", head, 0x248, 0, len(payload))
    return bytes(head) + payload + b"\0\0\0\0"


@pytest.fixture
def deb(tmp_path: Path) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: linux-image-{VERSION}\nVersion: 1\nArchitecture: amd64\n"
        "Maintainer: t <t@example>\nDescription: test kernel\n")
    (root / "boot").mkdir()
    (root / "boot" / f"vmlinuz-{VERSION}").write_bytes(fake_bzimage(VERSION))
    (root / "boot" / f"config-{VERSION}").write_text("CONFIG_PVH=y\n")
    mods = root / "lib" / "modules" / VERSION / "kernel" / "drivers"
    mods.mkdir(parents=True)
    (mods / "virtio.ko").write_bytes(b"x")
    out = tmp_path / f"linux-image-{VERSION}_1_amd64.deb"
    subprocess.run(["dpkg-deb", "-Zxz", "--build", str(root), str(out)], check=True,
                   capture_output=True, timeout=60)
    return out


def test_setup_from_a_deb_installs_and_records_it(tmp_path: Path, deb: Path) -> None:
    state = tmp_path / "state"
    got = kernel.setup(str(state), deb=str(deb))
    base = state / "vm" / "kernels" / VERSION
    assert got == kernel.GuestKernel(VERSION, str(base / "vmlinux"), str(base / "modules"))
    assert (base / "modules" / "kernel" / "drivers" / "virtio.ko").exists()
    assert (base / "config").exists() and (base / "vmlinuz").exists()
    assert json.loads((state / "vm" / "kernel.json").read_text()) == {"version": VERSION}
    assert kernel.find(str(state)) == got
    assert [p.name for p in (state / "vm" / "kernels").iterdir()] == [VERSION]  # no temp left


def test_setup_is_idempotent_without_downloading(tmp_path: Path, deb: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    kernel.setup(str(state), deb=str(deb))

    def no_download(*a: object) -> str:
        raise AssertionError("downloaded again")

    monkeypatch.setattr(kernel, "_download", no_download)
    assert kernel.setup(str(state), package=f"linux-image-{VERSION}").version == VERSION


def test_setup_downloads_the_package(tmp_path: Path, deb: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def download(package: str, tmp: str) -> str:
        assert package == f"linux-image-{VERSION}"
        return shutil.copy(deb, tmp)

    monkeypatch.setattr(kernel, "_download", download)
    assert kernel.setup(str(tmp_path), package=f"linux-image-{VERSION}").version == VERSION


def test_find_without_setup_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"no guest kernel.*run 'isobox vm setup'"):
        kernel.find(str(tmp_path))


def test_find_with_explicit_kernel(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(fake_bzimage("6.6.6-custom"))
    got = kernel.find(str(tmp_path), kernel=str(image))
    assert got == kernel.GuestKernel("6.6.6-custom", str(image), "", None)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"")
    assert kernel.find(str(tmp_path), kernel=str(image), initrd=str(initrd)).initrd_override == \
        str(initrd)
    with pytest.raises(NotFound):
        kernel.find(str(tmp_path), kernel=str(tmp_path / "missing"))
    with pytest.raises(NotFound, match="not a kernel modules directory"):
        kernel.find(str(tmp_path), kernel=str(image), modules=str(tmp_path))


def test_version_from_package_name() -> None:
    assert kernel._version_from_package("linux-image-6.1.0-56-amd64") == "6.1.0-56-amd64"
    assert kernel._version_from_package("linux-image-6.1.0-56-amd64-unsigned") == "6.1.0-56-amd64"
    assert kernel._version_from_package("linux-image-amd64") is None



def test_setup_from_an_installed_deb_does_not_unpack_again(tmp_path: Path, deb: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    kernel.setup(str(tmp_path), deb=str(deb))

    def no_unpack(*a: object) -> str:
        raise AssertionError("unpacked again")

    monkeypatch.setattr(kernel, "_install_from_deb", no_unpack)
    assert kernel.setup(str(tmp_path), deb=str(deb)).version == VERSION
    with pytest.raises(NotFound):
        kernel.setup(str(tmp_path), deb=str(tmp_path / "missing.deb"))
