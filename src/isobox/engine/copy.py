"""``cp`` and ``export``: Docker's copy semantics between a container and the
host, and the container's file system as one tar stream.

Every path inside the container is resolved with ``openat2(RESOLVE_IN_ROOT)``
below the container's root fd (``fsaccess``), one symlink hop at a time where
a link is to be followed; trees are walked and written through directory fds
that never follow symlinks (``fstree``). A container's symlink therefore
resolves inside the container, whatever it points at, and nothing it holds
can make ``cp`` read or write a host file.

The rules are those of ``docker cp`` (``archive.CopyInfoDestinationPath`` and
``PrepareArchiveCopy``): a directory source is copied *into* an existing
directory (``SRC/.``: its content only), creates a missing destination, and
is refused onto a file; a file source overwrites a file, lands inside a
directory, or creates the destination, whose parent must exist; a
destination ending in ``/`` must be a directory. Ownership as Docker's: files
copied in keep the source's uid/gid (``-a``: the container's user when it
has one); files copied out belong to the caller (``-a``: the source's).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from isobox.engine import fsaccess
from isobox.errors import Conflict, InvalidArgument, NotFound
from isobox.images import fstree

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class HostPathError(NotFound):
    """A host path is missing: Docker's CLI reports it without the daemon prefix."""


def _asserts_dir(path: str) -> bool:
    return path.endswith("/") or posixpath.basename(path) == "."


def _in_container(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/")) if path else "/"


def _plan(src_is_dir: bool, contents_only: bool, name: str, dest: str,
          dest_st: os.stat_result | str | None, dest_leaf: str) -> tuple[bool, str]:
    """(extract into the destination itself?, name of the top entry).
    ``dest_st``: the destination's lstat, or its kind ("dir", "file", "other"), or None."""
    is_dir = dest_st == "dir" if isinstance(dest_st, str) or dest_st is None \
        else stat.S_ISDIR(dest_st.st_mode)
    if dest_st is not None and is_dir:
        return True, "." if contents_only else name
    if dest_st is not None:
        if src_is_dir:
            raise Conflict("cannot copy directory")
        if dest.endswith("/"):
            raise InvalidArgument(f"{dest}: not a directory")
        return False, dest_leaf
    if not src_is_dir and _asserts_dir(dest):
        raise NotFound("no such directory")
    return False, dest_leaf


# -- container -> host ---------------------------------------------------------------

def copy_from_container(service: ContainerService, ref: str, src: str, dest: str | BinaryIO,
                        *, follow_link: bool = False, archive: bool = False) -> int:
    """Copy ``src`` of the container to the host path ``dest`` (or a binary
    stream: a tar archive). Returns the bytes of file content copied."""
    with fsaccess.container_root(service, ref) as root:
        path = _in_container(src)
        try:
            pfd, leaf, st = fstree.locate(root.fd, path, follow_link)
        except OSError:
            st = None
            pfd = -1
        if st is None:
            if pfd >= 0:
                os.close(pfd)
            raise NotFound(f"Could not find the file {src} in container {ref}")
        try:
            is_dir = stat.S_ISDIR(st.st_mode)
            if _asserts_dir(src) and not is_dir:
                raise InvalidArgument(f"cannot copy {src}: not a directory")
            contents_only = posixpath.basename(src) == "." or path == "/"
            name = posixpath.basename(path) or "."
            if not isinstance(dest, str):
                sink = fstree.TarSink(dest)
                for node in fstree.walk(pfd, leaf, "." if contents_only else name, st=st):
                    sink.add(node)
                sink.finish()
                return sink.copied
            return _extract_to_host(pfd, leaf, st, dest, is_dir, contents_only, name,
                                    "keep" if archive else "none")
        finally:
            os.close(pfd)


def _extract_to_host(pfd: int, leaf: str, st: os.stat_result, dest: str, is_dir: bool,
                     contents_only: bool, name: str, owner: str) -> int:
    target = os.path.abspath(dest)
    try:
        dest_st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        dest_st = None
    into, top = _plan(is_dir, contents_only, name, dest, dest_st, os.path.basename(target))
    where = target if into else os.path.dirname(target)
    try:
        dfd = os.open(where, _OPEN_DIR)
    except FileNotFoundError:
        raise HostPathError(f"lstat {where}: no such file or directory") from None
    try:
        sink = fstree.Extractor(dfd, owner=owner)
        for node in fstree.walk(pfd, leaf, top, st=st):
            sink.add(node)
        sink.finish()
        return sink.copied
    finally:
        os.close(dfd)


# -- host -> container ---------------------------------------------------------------

def copy_to_container(service: ContainerService, ref: str, src: str | BinaryIO, dest: str,
                      *, follow_link: bool = False, archive: bool = False) -> int:
    """Copy the host path ``src`` (or a tar stream, extracted into the
    directory ``dest``) into the container. Returns the bytes copied."""
    record = service.get(ref)
    if record.isolation == "vm" and record.state["Status"] in ("running", "paused",
                                                                "restarting"):
        return _copy_into_running_vm(service, ref, src, dest, follow_link, archive)
    if isinstance(src, str):
        return _copy_path_in(service, ref, src, dest, follow_link, archive)
    with fsaccess.container_root(service, ref, writable=True) as root:
        path = _in_container(dest)
        try:
            pfd, leaf, st = fstree.locate(root.fd, path, True)
        except OSError:
            raise NotFound(f"Could not find the file {dest} in container {ref}") from None
        try:
            if st is None:
                raise NotFound(f"Could not find the file {dest} in container {ref}")
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(f'extraction point is not a directory: "{dest}" must '
                                      "be a directory")
            dfd = os.open(leaf, fstree.DIR_FLAGS, dir_fd=pfd)
        finally:
            os.close(pfd)
        try:
            sink = fstree.Extractor(dfd, owner=_owner_in(service, root, archive))
            for node in fstree.tar_nodes(src):
                sink.add(node)
            sink.finish()
            return sink.copied
        finally:
            os.close(dfd)


class _HostSource:
    """A host path to copy in: its name, lstat, and its parent's fd (``close`` it)."""

    def __init__(self, src: str, follow_link: bool) -> None:
        host = os.path.abspath(src)
        self.name = os.path.basename(host) or "."
        self.contents_only = os.path.basename(src) == "."
        if follow_link:
            host = os.path.realpath(host)
        try:
            self.st = os.lstat(host)
        except FileNotFoundError:
            raise HostPathError(f"lstat {host}: no such file or directory") from None
        self.is_dir = stat.S_ISDIR(self.st.st_mode)
        if _asserts_dir(src) and not self.is_dir:
            raise InvalidArgument(f"cannot copy {src}: not a directory")
        self.parent = os.open(os.path.dirname(host) or "/", _OPEN_DIR)
        self.leaf = os.path.basename(host) or "."

    def nodes(self, top: str) -> Iterator[fstree.Node]:
        return fstree.walk(self.parent, self.leaf, top, st=self.st)

    def close(self) -> None:
        os.close(self.parent)


def _copy_into_running_vm(service: ContainerService, ref: str, src: str | BinaryIO,
                          dest: str, follow_link: bool, archive: bool) -> int:
    """The guest's agent looks the destination up and extracts a tar stream
    there, with the same rules: the host never mounts the running VM's disk."""
    from isobox.engine.vmfiles import is_paused
    from isobox.vm import execclient

    record = service.get(ref)
    if is_paused(service, record):
        raise Conflict(f"container {record.id[:12]} is paused (its VM is frozen): unpause it "
                       "to copy into it")
    d = service.dir(record.id)
    path = _in_container(dest)
    found = execclient.call(d, "stat_path", path=path, follow=True)
    kind, where = found.get("kind"), str(found.get("path") or path)
    owner: str | tuple[int, int] = "keep"
    if archive:
        with fsaccess.container_root(service, ref) as root:
            owner = _owner_in(service, root, archive)
    if not isinstance(src, str):
        if kind is None:
            raise NotFound(f"Could not find the file {dest} in container {ref}")
        if kind != "dir":
            raise InvalidArgument(f'extraction point is not a directory: "{dest}" must be a '
                                  "directory")
        return execclient.put_archive(d, where, owner, lambda out: shutil.copyfileobj(src, out))
    if found.get("parent_missing"):
        raise NotFound(f"Could not find the file {posixpath.dirname(path)} in container {ref}")
    source = _HostSource(src, follow_link)
    try:
        into, top = _plan(source.is_dir, source.contents_only, source.name, dest,
                          None if kind is None else str(kind), posixpath.basename(where))

        def write_tar(out: BinaryIO) -> None:
            sink = fstree.TarSink(out)
            for node in source.nodes(top):
                sink.add(node)
            sink.finish()

        return execclient.put_archive(d, where if into else posixpath.dirname(where) or "/",
                                      owner, write_tar)
    finally:
        source.close()


def _copy_path_in(service: ContainerService, ref: str, src: str, dest: str,
                  follow_link: bool, archive: bool) -> int:
    source = _HostSource(src, follow_link)
    name, contents_only, is_dir = source.name, source.contents_only, source.is_dir
    try:
        with fsaccess.container_root(service, ref, writable=True) as root:
            path = _in_container(dest)
            try:
                pfd, dleaf, dest_st = fstree.locate(root.fd, path, True)
            except OSError:
                raise NotFound(f"Could not find the file {posixpath.dirname(path)} in "
                               f"container {ref}") from None
            try:
                into, top = _plan(is_dir, contents_only, name, dest, dest_st, dleaf)
                dfd = os.open(dleaf, fstree.DIR_FLAGS, dir_fd=pfd) if into else os.dup(pfd)
            finally:
                os.close(pfd)
            try:
                sink = fstree.Extractor(dfd, owner=_owner_in(service, root, archive))
                for node in source.nodes(top):
                    sink.add(node)
                sink.finish()
                return sink.copied
            finally:
                os.close(dfd)
    finally:
        source.close()


def _owner_in(service: ContainerService, root: fsaccess.Root,
              archive: bool) -> str | tuple[int, int]:
    """Docker's copyUIDGID: the container's user, when it has one."""
    if not archive:
        return "keep"
    user = str(root.record.request.get("User") or "")
    if not user:
        try:
            image = service.images.records.get(root.record.image_id)
            config = service.images.config_of(image).config
            user = config.user or "" if config is not None else ""
        except (NotFound, InvalidArgument):
            user = ""
    if not user:
        return "keep"
    from isobox.engine.userdb import resolve_user
    from isobox.linux.mounts import fd_path

    resolved = resolve_user(fd_path(root.fd), str(user))
    return resolved.uid, resolved.gid


# -- export ----------------------------------------------------------------------------

def export(service: ContainerService, ref: str, out: BinaryIO) -> None:
    """The container's file system (image and writable layer, no volumes),
    streamed as a tar archive."""
    with fsaccess.container_root(service, ref, with_volumes=False) as root:
        sink = fstree.TarSink(out)
        for node in fstree.walk(root.fd, ".", "."):
            if node.name != ".":
                sink.add(node)
        sink.finish()
