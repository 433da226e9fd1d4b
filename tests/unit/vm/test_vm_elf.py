"""ELF reading, shared-library closure and the PVH kernel extraction."""

from __future__ import annotations

import lzma
import os
import struct
from pathlib import Path

import pytest
from vmtest_util import build_elf

from isobox.errors import InvalidArgument, NotFound
from isobox.vm import pvh, sharedlibs
from isobox.vm.elf import ElfFile


def test_sections_dynamic_notes_interpreter() -> None:
    elf = ElfFile(build_elf({".modinfo": b"a=b\0"}, needed=["libc.so.6", "libz.so.1"],
                            runpath="$ORIGIN/../lib:/opt/lib", notes=[("Xen", 18, b"\0" * 4)],
                            interp="/lib64/ld-linux-x86-64.so.2"))
    assert elf.section(".modinfo") == b"a=b\0"
    assert elf.section(".missing") is None
    assert elf.needed() == ["libc.so.6", "libz.so.1"]
    assert elf.run_paths() == ["$ORIGIN/../lib", "/opt/lib"]
    assert elf.notes() == [("Xen", 18, b"\0" * 4)]
    assert elf.interpreter() == "/lib64/ld-linux-x86-64.so.2"


def test_not_elf_or_wrong_class() -> None:
    with pytest.raises(InvalidArgument, match="not an ELF"):
        ElfFile(b"#!/bin/sh\n" + b"\0" * 64)
    with pytest.raises(InvalidArgument, match="64-bit"):
        ElfFile(b"\x7fELF\x01\x01" + b"\0" * 64)


def test_library_closure_follows_needed_and_runpath(tmp_path: Path) -> None:
    libdir = tmp_path / "lib"
    app = tmp_path / "app" / "bin"
    private = tmp_path / "app" / "lib"
    for d in (libdir, app, private):
        d.mkdir(parents=True)
    (libdir / "libc.so.6").write_bytes(build_elf({}, interp=str(libdir / "ld.so")))
    (libdir / "ld.so").write_bytes(build_elf({}))
    (libdir / "libz.so.1.2").write_bytes(build_elf({}, needed=["libc.so.6"]))
    (libdir / "libz.so.1").symlink_to("libz.so.1.2")
    (private / "libapp.so").write_bytes(build_elf({}, needed=["libc.so.6"]))
    (app / "prog").write_bytes(build_elf({}, needed=["libapp.so", "libz.so.1"],
                                         runpath="$ORIGIN/../lib", interp=str(libdir / "ld.so")))
    found = sharedlibs.closure([str(app / "prog")], dirs=[str(libdir)])
    assert sorted(found) == sorted([str(libdir / "ld.so"), str(private / "libapp.so"),
                                    str(libdir / "libc.so.6"), str(libdir / "libz.so.1")])
    assert str(libdir / "libz.so.1") in sharedlibs.closure([], ["libz.so.1"], dirs=[str(libdir)])
    with pytest.raises(NotFound, match=r"libmissing\.so"):
        sharedlibs.closure([], ["libmissing.so"], dirs=[str(libdir)])


def test_ld_so_conf_with_includes(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text("/opt/b\n# comment\n")
    (tmp_path / "conf.d" / "a.conf").write_text("/opt/a  # trailing\n")
    (tmp_path / "ld.so.conf").write_text("/first\ninclude conf.d/*.conf\n")
    dirs = sharedlibs.search_dirs(str(tmp_path / "ld.so.conf"))
    assert dirs[:3] == ["/first", "/opt/a", "/opt/b"]
    assert "/usr/lib/x86_64-linux-gnu" in dirs


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3.11"), reason="no /usr/bin/python3.11")
def test_host_python_closure() -> None:
    names = {os.path.basename(p) for p in sharedlibs.closure(["/usr/bin/python3.11"],
                                                             ["libseccomp.so.2"])}
    assert {"libc.so.6", "libm.so.6", "ld-linux-x86-64.so.2"} <= names


def bzimage(payload: bytes) -> bytes:
    setup_sectors = 4
    head = bytearray((setup_sectors + 1) * 512)
    head[0x1F1] = setup_sectors
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, 0x20F)
    struct.pack_into("<II", head, 0x248, 0x100, len(payload))
    return bytes(head) + b"\0" * 0x100 + payload + struct.pack("<I", 12345)


def test_pvh_extraction_of_an_xz_payload() -> None:
    vmlinux = build_elf({".text": b"\x90" * 100}, notes=[("Xen", 18, b"\0\0\0\x01")])
    image = bzimage(lzma.compress(vmlinux, format=lzma.FORMAT_XZ))
    assert pvh.extract_vmlinux(image) == vmlinux
    assert pvh.has_pvh_entry(vmlinux)
    assert not pvh.has_pvh_entry(build_elf({".text": b""}, notes=[("GNU", 3, b"id")]))


def test_pvh_extraction_of_an_unknown_payload_or_not_a_bzimage() -> None:
    assert pvh.extract_vmlinux(bzimage(b"\x02!L\x18 lz4 legacy")) is None
    with pytest.raises(InvalidArgument, match="bzImage"):
        pvh.extract_vmlinux(b"\0" * 4096)
