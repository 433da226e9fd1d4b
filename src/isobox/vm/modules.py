"""Kernel modules for the guest without kmod: find them by name under a
``lib/modules/<version>`` tree, read their ``.modinfo`` ELF section for
dependencies, and put them in load order (dependencies first, each once)."""

from __future__ import annotations

import lzma
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from isobox.errors import InvalidArgument, NotFound, Unavailable
from isobox.vm.elf import ElfFile

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst")
_SIGNATURE_MARK = b"~Module signature appended~\n"
_SIGNATURE_INFO = 12  # struct module_signature, its last field the signature's length


def canonical(name: str) -> str:
    """The kernel treats ``-`` and ``_`` in module names as the same."""
    return name.replace("-", "_")


def read_module(path: str) -> bytes:
    """The module's ELF bytes, decompressed if the distribution compressed it."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".zst"):
        try:
            import zstandard
        except ImportError as exc:
            raise Unavailable(f"{path}: zstd-compressed module needs the zstandard package") from exc
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def strip_signature(data: bytes) -> bytes:
    """The module without its appended signature.

    Checking a signature costs an RSA verification per module, together
    about half a second of a TCG boot; the host built the image from the
    package it fetched, so the guest's check adds nothing. Only for kernels
    that do not enforce signatures (see ``signatures_enforced``)."""
    if not data.endswith(_SIGNATURE_MARK):
        return data
    end = len(data) - len(_SIGNATURE_MARK)
    (length,) = struct.unpack(">I", data[end - 4:end])
    cut = end - _SIGNATURE_INFO - length
    if cut <= 0:
        raise InvalidArgument("malformed module signature")
    return data[:cut]


def signatures_enforced(config_path: str) -> bool | None:
    """Whether a kernel config has CONFIG_MODULE_SIG_FORCE; None if unknown."""
    try:
        with open(config_path) as f:
            return "CONFIG_MODULE_SIG_FORCE=y" in f.read().splitlines()
    except FileNotFoundError:
        return None


def modinfo(data: bytes, name: str = "<module>") -> dict[str, list[str]]:
    """The ``key=value`` strings of the ``.modinfo`` section, values per key."""
    section = ElfFile(data, name).section(".modinfo")
    if section is None:
        raise InvalidArgument(f"{name}: no .modinfo section (not a kernel module?)")
    info: dict[str, list[str]] = {}
    for entry in section.split(b"\0"):
        key, sep, value = entry.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def depends(info: dict[str, list[str]]) -> list[str]:
    return [canonical(d) for v in info.get("depends", []) for d in v.split(",") if d]


def soft_predepends(info: dict[str, list[str]]) -> list[str]:
    """Names after ``pre:`` in ``softdep=pre: a b post: c`` (modules or aliases)."""
    found: list[str] = []
    for value in info.get("softdep", []):
        section = None
        for word in value.split():
            if word.endswith(":"):
                section = word[:-1]
            elif section == "pre":
                found.append(word)
    return found


@dataclass(frozen=True)
class KernelModule:
    name: str
    path: str


class ModuleTree:
    """The modules of one kernel: files by canonical name, and the built-ins."""

    def __init__(self, modules_dir: str) -> None:
        self.modules_dir = modules_dir
        self.files: dict[str, str] = {}
        for top, _dirs, names in os.walk(os.path.join(modules_dir, "kernel")):
            for entry in names:
                for suffix in _SUFFIXES:
                    if entry.endswith(suffix):
                        self.files[canonical(entry[:-len(suffix)])] = os.path.join(top, entry)
        self.builtin = _builtin_names(modules_dir)
        self._crypto_aliases: dict[str, str] | None = None

    def find(self, name: str) -> str | None:
        return self.files.get(canonical(name))

    def resolve_soft(self, name: str) -> str | None:
        """A soft dependency names a module or an alias; the ones that matter
        here are crypto aliases (``crypto-crc32c``), so only the generic
        crypto modules are indexed, which load on any CPU."""
        if canonical(name) in self.files or canonical(name) in self.builtin:
            return canonical(name)
        if self._crypto_aliases is None:
            self._crypto_aliases = {}
            for mod, path in sorted(self.files.items()):
                if f"{os.sep}kernel{os.sep}crypto{os.sep}" in path:
                    for alias in modinfo(read_module(path), path).get("alias", []):
                        self._crypto_aliases.setdefault(alias, mod)
        return self._crypto_aliases.get(name)

    def load_order(self, wanted: Iterable[str],
                   loaded: Iterable[str] = ()) -> list[KernelModule]:
        """Every wanted module and its dependencies, dependencies first, but
        for those already ``loaded``.

        Built-in modules are left out; an unknown one is an error, since the
        guest would fail later in a less obvious way."""
        order: list[KernelModule] = []
        done: set[str] = {canonical(m) for m in loaded}
        visiting: set[str] = set()

        def visit(name: str, wanted_by: str | None) -> None:
            name = canonical(name)
            if name in done or name in self.builtin:
                return
            if name in visiting:
                raise InvalidArgument(f"kernel module dependency cycle through {name}")
            path = self.find(name)
            if path is None:
                needed = f" (needed by {wanted_by})" if wanted_by else ""
                raise NotFound(f"kernel module {name}{needed} not found under {self.modules_dir}")
            visiting.add(name)
            info = modinfo(read_module(path), path)
            for soft in soft_predepends(info):
                # Soft: the module loads without it, only some features fail.
                resolved = self.resolve_soft(soft)
                if resolved is not None and resolved not in visiting:
                    visit(resolved, name)
            for dep in depends(info):
                visit(dep, name)
            visiting.discard(name)
            done.add(name)
            order.append(KernelModule(name, path))

        for name in wanted:
            visit(name, None)
        return order


def _builtin_names(modules_dir: str) -> set[str]:
    try:
        with open(os.path.join(modules_dir, "modules.builtin")) as f:
            lines = f.read().split()
    except FileNotFoundError:
        return set()
    names = set()
    for line in lines:
        base = os.path.basename(line)
        for suffix in _SUFFIXES:
            if base.endswith(suffix):
                names.add(canonical(base[:-len(suffix)]))
    return names
