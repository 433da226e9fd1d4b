"""A file tree for the guest, written straight into a cpio archive.

Host files keep their host paths, symlinks included (``/lib`` ->
``usr/lib`` on a merged-/usr host), so the guest's dynamic loader and Python
find them where the host does. Parent directories are made on demand."""

from __future__ import annotations

import os
import posixpath
import stat

from isobox.vm.cpio import CpioWriter

_MAX_LINKS = 40


class ImageTree:
    def __init__(self, writer: CpioWriter) -> None:
        self.writer = writer
        self._dirs: set[str] = {"/"}
        self._links: dict[str, str] = {}  # guest path -> link target
        self._files: set[str] = set()

    def directory(self, path: str, mode: int = 0o755) -> str:
        path = self.resolve(path)
        if path in self._dirs:
            return path
        self._parent(path)
        self.writer.directory(path, mode)
        self._dirs.add(path)
        return path

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = self._new_leaf(path)
        self.writer.file(path, data, mode)
        self._files.add(path)

    def symlink(self, path: str, target: str) -> None:
        path = self._new_leaf(path)
        self.writer.symlink(path, target)
        self._links[path] = target

    def char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        path = self._new_leaf(path)
        self.writer.char_device(path, major, minor, mode)
        self._files.add(path)

    def exists(self, path: str) -> bool:
        path = self.resolve(path)
        return path in self._dirs or path in self._files or path in self._links

    def host_file(self, host_path: str, guest_path: str | None = None) -> None:
        """Copy a host file (following every symlink on its host path, and
        recreating those symlinks in the guest) unless already there."""
        if guest_path is None:
            guest_path = self._mirror_links(host_path)
            real = os.path.realpath(host_path)
        else:
            real = host_path
        if self.exists(guest_path):
            return
        path = self._new_leaf(guest_path)
        self.writer.file_from(path, real)
        self._files.add(path)

    def resolve(self, path: str) -> str:
        """The guest path with the guest's own symlinks followed."""
        parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
        resolved = "/"
        hops = 0
        while parts:
            part = parts.pop(0)
            candidate = posixpath.join(resolved, part)
            target = self._links.get(candidate)
            if target is None:
                resolved = candidate
                continue
            hops += 1
            if hops > _MAX_LINKS:
                raise ValueError(f"too many symlinks resolving {path}")
            base = "/" if target.startswith("/") else resolved
            parts = [p for p in posixpath.normpath(posixpath.join(base, target)).split("/")
                     if p] + parts
            resolved = "/"
        return resolved

    def _mirror_links(self, host_path: str) -> str:
        """Recreate the symlinks met on the host path; returns the real path."""
        current = "/"
        parts = [p for p in os.path.normpath(host_path).split("/") if p]
        hops = 0
        while parts:
            part = parts.pop(0)
            candidate = posixpath.join(current, part)
            st = os.lstat(candidate)
            if not stat.S_ISLNK(st.st_mode):
                current = candidate
                continue
            hops += 1
            if hops > _MAX_LINKS:
                raise ValueError(f"too many symlinks on host path {host_path}")
            target = os.readlink(candidate)
            if candidate not in self._links and not self.exists(candidate):
                self.symlink(candidate, target)
            base = "/" if target.startswith("/") else current
            parts = [p for p in posixpath.normpath(posixpath.join(base, target)).split("/")
                     if p] + parts
            current = "/"
        return current

    def _new_leaf(self, path: str) -> str:
        parent = self._parent(path)
        leaf = posixpath.join(parent, posixpath.basename(posixpath.normpath("/" + path)))
        if leaf in self._dirs or leaf in self._files or leaf in self._links:
            raise ValueError(f"guest path {leaf} added twice")
        return leaf

    def _parent(self, path: str) -> str:
        parent = posixpath.dirname(posixpath.normpath("/" + path))
        return self.directory(parent) if parent != "/" else "/"
