"""Helpers for the VM image tests: a reader of newc cpio archives, and a
builder of minimal ELF64 files (sections, notes, a dynamic section)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class CpioEntry:
    name: str
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    data: bytes
    rdev: tuple[int, int]
    ino: int


def read_cpio(data: bytes) -> list[CpioEntry]:
    """Every entry up to and including the trailer; checks the alignment."""
    entries = []
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, _, _, rmaj, rmin, namesize, _ = fields
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        assert data[pos + 110 + namesize - 1] == 0
        pos = (pos + 110 + namesize + 3) & ~3
        body = data[pos:pos + size]
        pos = (pos + size + 3) & ~3
        entries.append(CpioEntry(name, mode, uid, gid, nlink, mtime, body, (rmaj, rmin), ino))
        if name == "TRAILER!!!":
            assert pos == len(data), "data after the trailer"
            return entries


def build_elf(sections: dict[str, bytes], *, notes: Sequence[tuple[str, int, bytes]] = (),
              needed: Sequence[str] = (), runpath: str | None = None,
              interp: str | None = None) -> bytes:
    """An ELF64 little-endian file with the given PROGBITS sections, an
    optional dynamic section (DT_NEEDED, DT_RUNPATH), PT_NOTE and PT_INTERP."""
    shstr = b"\0"
    body = b""
    headers: list[tuple[int, int, int, int, int]] = []  # name off, type, offset, size, link
    base = 64

    def add(name: str, kind: int, payload: bytes, link: int = 0) -> int:
        nonlocal shstr, body
        name_off = len(shstr)
        shstr += name.encode() + b"\0"
        headers.append((name_off, kind, base + len(body), len(payload), link))
        body += payload
        return len(headers)  # index (after the null section)

    for name, payload in sections.items():
        add(name, 1, payload)
    phdrs: list[tuple[int, int, int]] = []  # type, offset, size
    if needed or runpath:
        dynstr = b"\0"
        entries = b""
        for lib in needed:
            entries += struct.pack("<qQ", 1, len(dynstr))
            dynstr += lib.encode() + b"\0"
        if runpath:
            entries += struct.pack("<qQ", 29, len(dynstr))
            dynstr += runpath.encode() + b"\0"
        entries += struct.pack("<qQ", 0, 0)
        strtab_index = add(".dynstr", 3, dynstr)
        add(".dynamic", 6, entries, link=strtab_index)
    if notes:
        blob = b""
        for owner, kind, desc in notes:
            name = owner.encode() + b"\0"
            blob += struct.pack("<III", len(name), len(desc), kind)
            blob += name + b"\0" * (-len(name) % 4) + desc + b"\0" * (-len(desc) % 4)
        phdrs.append((4, base + len(body), len(blob)))
        body += blob
    if interp:
        raw = interp.encode() + b"\0"
        phdrs.append((3, base + len(body), len(raw)))
        body += raw
    name_off = len(shstr)
    shstr += b".shstrtab\0"
    headers.append((name_off, 3, base + len(body), len(shstr), 0))
    body += shstr
    shstr_index = len(headers)
    phoff = base + len(body)
    ph = b"".join(struct.pack("<IIQQQQQQ", t, 4, off, 0, 0, size, size, 4)
                  for t, off, size in phdrs)
    shoff = phoff + len(ph)
    sh = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    sh += b"".join(struct.pack("<IIQQQQIIQQ", n, k, 0, 0, off, size, link, 0, 1, 0)
                   for n, k, off, size, link in headers)
    ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    header = struct.pack("<16sHHIQQQIHHHHHH", ident, 1, 62, 1, 0, phoff if phdrs else 0, shoff,
                         0, 64, 56, len(phdrs), 64, len(headers) + 1, shstr_index)
    return header + body + ph + sh


def build_module(name: str, depends: str = "", extra: str = "") -> bytes:
    info = f"name={name}\0depends={depends}\0license=GPL\0{extra}".encode()
    return build_elf({".text": b"\xc3", ".modinfo": info})
