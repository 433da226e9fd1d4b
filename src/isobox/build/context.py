"""The build context: a directory or a tar stream, filtered by
``.dockerignore`` into a private copy (what Docker's CLI sends the daemon),
the sources a COPY/ADD names in it (globs, paths kept inside the context),
and their checksums for the cache."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from isobox.build.dockerignore import PatternMatcher, parse_dockerignore
from isobox.errors import InvalidArgument, NotFound
from isobox.images import compression

__all__ = ["checksum", "copy_filtered", "extract_tar", "is_archive", "matcher_for",
           "resolve_sources"]

_GLOB = set("*?[")


def matcher_for(root: str) -> PatternMatcher:
    try:
        with open(os.path.join(root, ".dockerignore"), encoding="utf-8") as f:
            return PatternMatcher(parse_dockerignore(f.read()))
    except FileNotFoundError:
        return PatternMatcher(())


def copy_filtered(src: str, dest: str, matcher: PatternMatcher) -> None:
    """Copy the context ``src`` into the empty directory ``dest``, leaving out
    what ``.dockerignore`` excludes; symlinks are copied as links."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        rel_dir = "" if rel_dir == "." else rel_dir
        keep_dirs = []
        for name in sorted(dirnames):
            rel = posixpath.join(rel_dir, name) if rel_dir else name
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                if not matcher.excluded(rel):
                    os.symlink(os.readlink(full), os.path.join(dest, rel))
                continue
            if matcher.excluded(rel) and not matcher.has_exclusions:
                continue
            os.makedirs(os.path.join(dest, rel), exist_ok=True)
            shutil.copystat(full, os.path.join(dest, rel))
            keep_dirs.append(name)
        dirnames[:] = keep_dirs
        for name in sorted(filenames):
            rel = posixpath.join(rel_dir, name) if rel_dir else name
            if matcher.excluded(rel):
                continue
            full = os.path.join(dirpath, name)
            target = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.islink(full):
                os.symlink(os.readlink(full), target)
            elif stat.S_ISREG(os.lstat(full).st_mode):
                _link_or_copy(full, target)
    if matcher.has_exclusions:  # directories excluded but walked for "!" lines
        for dirpath, _dirnames, _ in os.walk(dest, topdown=False):
            rel = os.path.relpath(dirpath, dest)
            if rel != "." and matcher.excluded(rel) and not os.listdir(dirpath):
                os.rmdir(dirpath)


def _link_or_copy(src: str, dest: str) -> None:
    """A hard link where the context and the build's copy share a file system
    (the build only reads it, and removes its copy: the user's file is never
    written): no data copied. Elsewhere a copy with its metadata."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dest, follow_symlinks=False)


def extract_tar(src: BinaryIO, dest: str) -> None:
    """A context sent as a tar stream (plain or compressed), unpacked safely."""
    from isobox.images.layers import apply_layer

    apply_layer(src, dest, mode="flat")


def _inside(root: str, rel: str) -> str:
    cleaned = posixpath.normpath("/" + rel).lstrip("/")
    if posixpath.normpath(rel).startswith(".."):
        raise InvalidArgument(f"forbidden path outside the build context: {rel}")
    return cleaned


def resolve_sources(root: str, source: str) -> list[str]:
    """The context paths (relative, "" for the root) a COPY source names;
    globs expanded (Go's filepath.Match, per path component)."""
    rel = _inside(root, source)
    if not any(c in _GLOB for c in rel):
        path = os.path.join(root, rel) if rel else root
        if not os.path.lexists(path):
            raise NotFound(f"failed to compute cache key: \"/{rel}\": not found")
        _check_link(root, path, source)
        return [rel]
    matches = [""]
    for part in rel.split("/"):
        next_matches = []
        for base in matches:
            folder = os.path.join(root, base) if base else root
            if not any(c in _GLOB for c in part):
                candidate = posixpath.join(base, part) if base else part
                if os.path.lexists(os.path.join(root, candidate)):
                    next_matches.append(candidate)
                continue
            try:
                names = sorted(os.listdir(folder))
            except (NotADirectoryError, FileNotFoundError):
                continue
            for name in names:
                if fnmatch.fnmatchcase(name, part.replace("[^", "[!")):
                    next_matches.append(posixpath.join(base, name) if base else name)
        matches = next_matches
    if not matches:
        raise NotFound(f"COPY failed: no source files were specified (no match for {source})")
    return matches


def _check_link(root: str, path: str, shown: str) -> None:
    real = os.path.realpath(path)
    if real != os.path.realpath(root) and not real.startswith(os.path.realpath(root) + "/"):
        raise InvalidArgument(f"forbidden path outside the build context: {shown}")


def host_path(root: str, rel: str) -> str:
    """The host path of context path ``rel``, symlinks followed inside the context."""
    path = os.path.join(root, rel) if rel else root
    _check_link(root, path, rel)
    return os.path.realpath(path)


def checksum(path: str) -> str:
    """A content checksum of a file or tree (names, types, modes, contents,
    link targets; not times or owners, as Docker's classic cache)."""
    digest = hashlib.sha256()
    for rel, st, target in _entries(path):
        digest.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0"
                      f"{target}\0".encode("utf-8", "surrogateescape"))
        if stat.S_ISREG(st.st_mode):
            with open(os.path.join(path, rel) if rel else path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def _entries(path: str) -> Iterator[tuple[str, os.stat_result, str]]:
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        yield "", st, os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, path)
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else posixpath.join(rel_dir, name)
            entry = os.lstat(full)
            yield rel, entry, os.readlink(full) if stat.S_ISLNK(entry.st_mode) else ""


def is_archive(path: str) -> bool:
    """ADD unpacks a local file that is a (compressed) tar archive."""
    if not os.path.isfile(path):
        return False
    with contextlib.suppress(tarfile.TarError, OSError, EOFError, InvalidArgument), \
            open(path, "rb") as f:
        reader = compression.decompressed(f, "archive")  # type: ignore[arg-type]
        head = reader.read(512)
        if len(head) == 512 and head[257:262] == b"ustar":
            return True
        if len(head) == 512:
            try:
                tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
                return True
            except tarfile.HeaderError:
                return False
    return False
