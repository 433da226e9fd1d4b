"""Just enough ELF64 (little-endian) reading to build a guest image without
binutils: named sections (a kernel module's ``.modinfo``), the program
interpreter and the DT_NEEDED list of a shared object."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from isobox.errors import InvalidArgument

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_PHDR = struct.Struct("<IIQQQQQQ")
_DYN = struct.Struct("<qQ")
_PT_INTERP = 3
_PT_NOTE = 4
_NHDR = struct.Struct("<III")
_SHT_DYNAMIC = 6
_DT_NULL, _DT_NEEDED, _DT_RPATH, _DT_RUNPATH = 0, 1, 15, 29


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    offset: int
    size: int
    link: int


class ElfFile:
    """An ELF64 little-endian image held in memory."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        if data[:4] != b"\x7fELF" or len(data) < _EHDR.size:
            raise InvalidArgument(f"{name}: not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise InvalidArgument(f"{name}: only 64-bit little-endian ELF is supported")
        self.data = data
        self.name = name
        header = _EHDR.unpack_from(data)
        self._phoff, self._shoff = header[5], header[6]
        self._phentsize, self._phnum = header[9], header[10]
        self._shentsize, self._shnum, self._shstrndx = header[11], header[12], header[13]
        self.sections = self._read_sections()

    @classmethod
    def open(cls, path: str) -> ElfFile:
        with open(path, "rb") as f:
            return cls(f.read(), path)

    def _read_sections(self) -> list[Section]:
        raw = [_SHDR.unpack_from(self.data, self._shoff + i * self._shentsize)
               for i in range(self._shnum)] if self._shoff else []
        if not raw:
            return []
        names = raw[self._shstrndx]
        strtab = self.data[names[4]:names[4] + names[5]]
        return [Section(_cstr(strtab, h[0]), h[1], h[4], h[5], h[6]) for h in raw]

    def section(self, name: str) -> bytes | None:
        for s in self.sections:
            if s.name == name:
                return self.data[s.offset:s.offset + s.size]
        return None

    def notes(self) -> list[tuple[str, int, bytes]]:
        """(owner, type, description) of every note in the PT_NOTE segments."""
        found = []
        for p_type, _, offset, _, _, filesz, _, _ in self._segments():
            if p_type != _PT_NOTE:
                continue
            pos, end = offset, offset + filesz
            while pos + _NHDR.size <= end:
                namesz, descsz, note_type = _NHDR.unpack_from(self.data, pos)
                pos += _NHDR.size
                name = self.data[pos:pos + namesz].rstrip(b"\0").decode(errors="replace")
                pos += (namesz + 3) & ~3
                found.append((name, note_type, self.data[pos:pos + descsz]))
                pos += (descsz + 3) & ~3
        return found

    def _segments(self) -> list[tuple[int, int, int, int, int, int, int, int]]:
        return [_PHDR.unpack_from(self.data, self._phoff + i * self._phentsize)
                for i in range(self._phnum)]

    def interpreter(self) -> str | None:
        """The PT_INTERP path (the dynamic loader), None for a static binary."""
        for p_type, _, offset, _, _, filesz, _, _ in self._segments():
            if p_type == _PT_INTERP:
                return self.data[offset:offset + filesz].rstrip(b"\0").decode()
        return None

    def needed(self) -> list[str]:
        """The sonames in DT_NEEDED, in order."""
        return self._dynamic_strings(_DT_NEEDED)

    def run_paths(self) -> list[str]:
        """DT_RUNPATH (or the older DT_RPATH) directories, ``$ORIGIN`` unexpanded."""
        found = self._dynamic_strings(_DT_RUNPATH) or self._dynamic_strings(_DT_RPATH)
        return [d for value in found for d in value.split(":") if d]

    def _dynamic_strings(self, wanted: int) -> list[str]:
        for s in self.sections:
            if s.type != _SHT_DYNAMIC:
                continue
            strtab = self.sections[s.link]
            strings = self.data[strtab.offset:strtab.offset + strtab.size]
            found = []
            for off in range(s.offset, s.offset + s.size, _DYN.size):
                tag, value = _DYN.unpack_from(self.data, off)
                if tag == _DT_NULL:
                    break
                if tag == wanted:
                    found.append(_cstr(strings, value))
            return found
        return []

def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode(errors="replace")
