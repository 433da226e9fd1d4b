"""The shared libraries a set of host binaries needs, found the way the
dynamic loader finds them (RPATH/RUNPATH, ld.so.conf, the default
directories), by reading DT_NEEDED: no ldd, which would run the binaries."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from isobox.errors import NotFound
from isobox.vm.elf import ElfFile

_DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                 "/lib", "/usr/lib")


def search_dirs(conf: str = "/etc/ld.so.conf") -> list[str]:
    """The directories of ld.so.conf (following ``include``), then the defaults."""
    found: list[str] = []

    def read(path: str) -> None:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line.startswith("include "):
                pattern = line.split(None, 1)[1]
                if not pattern.startswith("/"):
                    pattern = os.path.join(os.path.dirname(path), pattern)
                for included in sorted(glob.glob(pattern)):
                    read(included)
            elif line.startswith("/") and line not in found:
                found.append(line)

    read(conf)
    return found + [d for d in _DEFAULT_DIRS if d not in found]


def closure(binaries: Iterable[str], sonames: Iterable[str] = (),
            dirs: list[str] | None = None) -> list[str]:
    """Host paths of every library the binaries need, transitively, their
    program interpreters, and the libraries named in ``sonames`` (those a
    program dlopens). Paths are as found, possibly symlinks; the binaries
    themselves are not included."""
    dirs = search_dirs() if dirs is None else dirs
    result: list[str] = []
    seen: set[str] = set()
    todo = list(binaries)

    def add(path: str) -> None:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            result.append(path)
            todo.append(path)

    for soname in sonames:
        add(_require(soname, dirs, "a dlopen"))
    while todo:
        path = todo.pop()
        elf = ElfFile.open(path)
        interpreter = elf.interpreter()
        if interpreter:
            add(interpreter)
        origin = os.path.dirname(os.path.realpath(path))
        # origin has no symlinks left, so ".." in a runpath can be folded
        local = [os.path.normpath(d.replace("${ORIGIN}", origin).replace("$ORIGIN", origin))
                 for d in elf.run_paths()]
        for soname in elf.needed():
            add(_require(soname, local + dirs, path))
    return result


def _require(soname: str, dirs: list[str], needed_by: str) -> str:
    if "/" in soname:
        if os.path.exists(soname):
            return soname
    else:
        for directory in dirs:
            candidate = os.path.join(directory, soname)
            if os.path.exists(candidate):
                return candidate
    raise NotFound(f"shared library {soname} (needed by {needed_by}) not found")
