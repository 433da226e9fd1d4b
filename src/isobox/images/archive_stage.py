"""Read an image archive (a tar stream) into a private staging directory,
refusing anything hostile, so ``archive_load`` can look its files up by name.

Nothing is extracted under the archive's own names: each regular file is
written to ``<staging>/<n>`` and hashed on the way, symlinks and hard links
are kept as a table and resolved by name, never on the filesystem. Refused,
with an InvalidArgument naming the entry: absolute paths, ``..``, links that
point outside the archive, devices and fifos, duplicate names, more than
``max_entries`` entries, corrupt tar headers. JSON documents are read into
memory only up to ``max_json`` bytes.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from isobox.errors import InvalidArgument
from isobox.images.compression import CHUNK, Reader, StrictTarInfo
from isobox.oci import digest as digests

__all__ = ["DEFAULT_LIMITS", "Limits", "StagedArchive", "StagedFile", "stage"]

_MAX_LINK_DEPTH = 40


@dataclass(frozen=True)
class Limits:
    max_entries: int = 100_000
    max_json: int = 8 << 20
    max_path: int = 4096


DEFAULT_LIMITS = Limits()

@dataclass(frozen=True)
class StagedFile:
    name: str     #: the name in the archive
    path: str     #: where its bytes are staged
    size: int
    sha256: str   #: ``sha256:<hex>``


class StagedArchive:
    """The files of one archive, by normalised name. A context manager: the
    staging directory is removed on exit."""

    def __init__(self, directory: str, limits: Limits) -> None:
        self.directory = directory
        self.limits = limits
        self.files: dict[str, StagedFile] = {}
        self.links: dict[str, str] = {}  # symlink name -> normalised target
        self.dirs: set[str] = set()

    def __enter__(self) -> StagedArchive:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- lookups --------------------------------------------------------------

    def has(self, name: str) -> bool:
        try:
            self.file(name)
        except InvalidArgument:
            return False
        return True

    def file(self, name: str) -> StagedFile:
        """The regular file ``name`` names, through links inside the archive."""
        resolved = self._resolve(_normalise(name, self.limits), 0)
        found = self.files.get(resolved)
        if found is None:
            raise InvalidArgument(f"archive has no file {name!r}")
        return found

    def open(self, name: str) -> BinaryIO:
        return open(self.file(name).path, "rb")

    def read_json(self, name: str) -> bytes:
        staged = self.file(name)
        if staged.size > self.limits.max_json:
            raise InvalidArgument(f"{name} in the archive is too large ({staged.size} bytes; "
                                  f"at most {self.limits.max_json})")
        with open(staged.path, "rb") as f:
            return f.read()

    def blob(self, digest: str, size: int | None = None) -> StagedFile:
        """The OCI layout blob ``blobs/<algo>/<hex>``, checked against digest and size."""
        algo, hexpart = digests.parse(digest)
        try:
            staged = self.file(f"blobs/{algo}/{hexpart}")
        except InvalidArgument:
            raise InvalidArgument(f"archive is missing blob {digest}") from None
        if size is not None and staged.size != size:
            raise InvalidArgument(f"blob {digest} has {staged.size} bytes, its descriptor "
                                  f"says {size}")
        self.verify(staged, digest)
        return staged

    def verify(self, staged: StagedFile, digest: str) -> None:
        if self.digest_of(staged, digest.partition(":")[0]) != digest:
            raise InvalidArgument(f"digest mismatch: {staged.name} in the archive is not "
                                  f"{digest}")

    def digest_of(self, staged: StagedFile, algo: str = "sha256") -> str:
        if algo == "sha256":
            return staged.sha256
        h = digests.hasher(algo)
        with open(staged.path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return f"{algo}:{h.hexdigest()}"

    def _resolve(self, name: str, depth: int) -> str:
        if depth > _MAX_LINK_DEPTH:
            raise InvalidArgument(f"too many levels of symbolic links in the archive at {name!r}")
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            target = self.links.get("/".join(parts[:i]))
            if target is not None:
                rest = "/".join(parts[i:])
                joined = posixpath.normpath(posixpath.join(target, rest)) if rest else target
                return self._resolve(joined, depth + 1)
        return name

    # -- staging --------------------------------------------------------------

    def add(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = _normalise(member.name, self.limits)
        if not name:
            return  # the root directory itself
        if name in self.files or name in self.links:
            raise InvalidArgument(f"archive has a duplicate entry {name!r}")
        parts = name.split("/")
        if any("/".join(parts[:i]) in self.links for i in range(1, len(parts))):
            raise InvalidArgument(f"archive entry {name!r} lies beneath a symlink")
        if member.isdir():
            self.dirs.add(name)
        elif member.isreg():
            self._add_file(tf, member, name)
        elif member.issym():
            below = name + "/"
            if name in self.dirs or any(f.startswith(below) for f in self.files):
                raise InvalidArgument(f"archive symlink {name!r} replaces a directory")
            self.links[name] = _link_target(name, member.linkname, self.limits)
        elif member.islnk():
            target = self.file(_normalise(member.linkname, self.limits))
            self.files[name] = StagedFile(name, target.path, target.size, target.sha256)
        else:
            raise InvalidArgument(f"archive entry {name!r} is a device or fifo; an image "
                                  "archive holds only files, directories and links")

    def _add_file(self, tf: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> None:
        path = os.path.join(self.directory, str(len(self.files)))
        h = hashlib.sha256()
        size = 0
        src = tf.extractfile(member)
        if src is None:  # pragma: no cover - isreg() members always have data
            raise InvalidArgument(f"archive entry {name!r} has no data")
        with src, open(path, "xb") as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                out.write(chunk)
        self.files[name] = StagedFile(name, path, size, f"sha256:{h.hexdigest()}")


def stage(src: Reader, *, tmpdir: str | None = None, limits: Limits = DEFAULT_LIMITS) -> StagedArchive:
    """Read the (uncompressed) tar stream ``src`` into a new StagedArchive."""
    staged = StagedArchive(tempfile.mkdtemp(prefix="isobox-load-", dir=tmpdir), limits)
    try:
        _read_all(src, staged)
    except BaseException:
        staged.close()
        raise
    return staged


def _read_all(src: Reader, staged: StagedArchive) -> None:
    try:
        tf = tarfile.open(fileobj=src, mode="r|", tarinfo=StrictTarInfo,  # type: ignore[call-overload]  # noqa: SIM115
                          encoding="utf-8", errors="surrogateescape")
    except tarfile.ReadError as exc:
        raise InvalidArgument(f"not a tar archive ({exc})") from None
    entries = 0
    with tf:
        while True:
            try:
                member = tf.next()
            except tarfile.TarError as exc:
                raise InvalidArgument(f"corrupt archive after {entries} entries ({exc})") from None
            except EOFError:
                raise InvalidArgument("archive is truncated") from None
            if member is None:
                return
            tf.members.clear()  # stream mode would keep every header
            entries += 1
            if entries > staged.limits.max_entries:
                raise InvalidArgument(f"archive has more than {staged.limits.max_entries} "
                                      "entries")
            try:
                staged.add(tf, member)
            except (tarfile.TarError, EOFError) as exc:
                raise InvalidArgument(f"archive is truncated or corrupt in entry "
                                      f"{member.name[:200]!r} ({exc})") from None


def _normalise(name: str, limits: Limits) -> str:
    """``./a//b/`` -> ``a/b``; absolute paths, ``..`` and NUL are refused."""
    if "\0" in name or len(name) > limits.max_path:
        raise InvalidArgument(f"archive entry name is invalid: {name[:200]!r}")
    if name.startswith("/"):
        raise InvalidArgument(f"archive entry has an absolute path: {name[:200]!r}")
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise InvalidArgument(f"archive entry path contains '..': {name[:200]!r}")
    return "/".join(parts)


def _link_target(name: str, target: str, limits: Limits) -> str:
    if not target or "\0" in target or len(target) > limits.max_path:
        raise InvalidArgument(f"archive symlink {name!r} has an invalid target")
    if target.startswith("/"):
        raise InvalidArgument(f"archive symlink {name!r} points outside the archive "
                              f"({target[:200]!r})")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if joined == ".." or joined.startswith("../"):
        raise InvalidArgument(f"archive symlink {name!r} points outside the archive "
                              f"({target[:200]!r})")
    return "" if joined == "." else joined
