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
import stat
from typing import TYPE_CHECKING, BinaryIO

from isobox.engine import fsaccess, fstree
from isobox.errors import Conflict, InvalidArgument, NotFound
from isobox.linux import libc

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService

_IN_ROOT = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_HOPS = 40


class HostPathError(NotFound):
    """A host path is missing: Docker's CLI reports it without the daemon prefix."""


def _asserts_dir(path: str) -> bool:
    return path.endswith("/") or posixpath.basename(path) == "."


def _in_container(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/")) if path else "/"


def _locate(root_fd: int, path: str, follow: bool
            ) -> tuple[int, str, os.stat_result | None]:
    """(directory fd, leaf, lstat of leaf or None) of the normalized absolute
    ``path`` inside the root; ``follow`` follows a final symlink, in the root.
    The parent must exist (FileNotFoundError otherwise)."""
    for _ in range(_MAX_HOPS):
        parent, leaf = posixpath.split(path)
        if not leaf:  # "/"
            fd = libc.openat2(root_fd, ".", _OPEN_DIR, resolve=_IN_ROOT)
            return fd, ".", os.fstat(fd)
        fd = libc.openat2(root_fd, parent.lstrip("/") or ".", _OPEN_DIR, resolve=_IN_ROOT)
        try:
            st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return fd, leaf, None
        except BaseException:
            os.close(fd)
            raise
        if not (follow and stat.S_ISLNK(st.st_mode)):
            return fd, leaf, st
        target = os.readlink(leaf, dir_fd=fd)
        os.close(fd)
        path = posixpath.normpath(posixpath.join(parent, target))
    raise InvalidArgument(f"{path}: too many levels of symbolic links")


def _plan(src_is_dir: bool, contents_only: bool, name: str, dest: str,
          dest_st: os.stat_result | None, dest_leaf: str) -> tuple[bool, str]:
    """(extract into the destination itself?, name of the top entry)."""
    if dest_st is not None and stat.S_ISDIR(dest_st.st_mode):
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
            pfd, leaf, st = _locate(root.fd, path, follow_link)
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
    if isinstance(src, str):
        return _copy_path_in(service, ref, src, dest, follow_link, archive)
    with fsaccess.container_root(service, ref, writable=True) as root:
        path = _in_container(dest)
        try:
            pfd, leaf, st = _locate(root.fd, path, True)
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


def _copy_path_in(service: ContainerService, ref: str, src: str, dest: str,
                  follow_link: bool, archive: bool) -> int:
    host = os.path.abspath(src)
    name = os.path.basename(host) or "."
    contents_only = os.path.basename(src) == "."
    if follow_link:
        host = os.path.realpath(host)
    try:
        st = os.lstat(host)
    except FileNotFoundError:
        raise HostPathError(f"lstat {host}: no such file or directory") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    if _asserts_dir(src) and not is_dir:
        raise InvalidArgument(f"cannot copy {src}: not a directory")
    src_parent = os.open(os.path.dirname(host) or "/", _OPEN_DIR)
    leaf = os.path.basename(host) or "."
    try:
        with fsaccess.container_root(service, ref, writable=True) as root:
            path = _in_container(dest)
            try:
                pfd, dleaf, dest_st = _locate(root.fd, path, True)
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
                for node in fstree.walk(src_parent, leaf, top, st=st):
                    sink.add(node)
                sink.finish()
                return sink.copied
            finally:
                os.close(dfd)
    finally:
        os.close(src_parent)


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
