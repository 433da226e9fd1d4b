"""The uncompressed kernel inside a bzImage, for a PVH boot.

QEMU starts an ELF kernel that carries a PVH entry note directly in 64-bit
mode: no real-mode setup and, above all, no in-guest decompression, which
under TCG took longer than the rest of the boot (about 7 s to 3 s from QEMU's
start to init on this host, see ``benchmarks/vm_boot_loop.py``)."""

from __future__ import annotations

import lzma
import struct
import zlib

from isobox.errors import InvalidArgument
from isobox.vm.elf import ElfFile

_XEN_ELFNOTE_PHYS32_ENTRY = 18


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel in a bzImage's payload; None if it is not one we can
    decompress (xz, gzip, lzma and zstd are supported)."""
    if bzimage[0x202:0x206] != b"HdrS" or struct.unpack_from("<H", bzimage, 0x206)[0] < 0x208:
        raise InvalidArgument("not a bzImage (no setup header of protocol 2.08 or later)")
    setup_sectors = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    payload = bzimage[start:start + length]
    data = _decompress(payload)
    return data if data is not None and data[:4] == b"\x7fELF" else None


def has_pvh_entry(elf: bytes) -> bool:
    return any(owner == "Xen" and kind == _XEN_ELFNOTE_PHYS32_ENTRY
               for owner, kind, _ in ElfFile(elf, "vmlinux").notes())


def _decompress(payload: bytes) -> bytes | None:
    # The build appends the uncompressed size after the stream: decompressors
    # that stop at the stream's end leave it unused.
    if payload[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)
    if payload[:2] == b"\x1f\x8b":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    if payload[:3] == b"\x5d\x00\x00":
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(payload)
    if payload[:4] == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard
        except ImportError:
            return None
        return zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    return None
