"""Block images for a utility VM: one read-only erofs image per unpacked
layer (cached by layer key, shared by every VM that uses the layer) and a
sparse ext4 image for a container's writable layer.

erofs keeps what an overlay lower layer needs: owners, modes (setuid
included), symlinks, hardlinks, device nodes (0:0 character devices are
whiteouts) and xattrs (``trusted.overlay.opaque=y`` marks an opaque
directory). Images are uncompressed: under TCG the guest would pay for
decompression with every read."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable

from isobox.errors import InvalidArgument, IsoboxError, NotFound, Unavailable
from isobox.vm.kernel import vm_dir

_MKFS_TIMEOUT = 1800.0  # a large layer under a loaded host
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_MIN_WRITABLE = 16 << 20


def layer_images_dir(state_dir: str) -> str:
    return os.path.join(vm_dir(state_dir), "layers")


def layer_image(state_dir: str, layer_dir: str, key: str) -> str:
    """The erofs image of ``layer_dir``, built once per ``key`` (a layer digest
    or chain id). A racing build of the same key is harmless: each builds into
    its own temporary file and the rename is the commit."""
    if not _KEY.fullmatch(key) or key.startswith("."):
        raise InvalidArgument(f"layer key {key!r}: want letters, digits, and _ . : -")
    path = os.path.join(layer_images_dir(state_dir), f"{key.replace(':', '-')}.erofs")
    if os.path.exists(path):
        return path
    if not os.path.isdir(layer_dir):
        raise NotFound(f"layer directory {layer_dir} does not exist")
    os.makedirs(layer_images_dir(state_dir), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".erofs", dir=layer_images_dir(state_dir))
    os.close(fd)
    try:
        # --preserve-mtime: the container sees its files' times, not the build's.
        _run(["mkfs.erofs", "--quiet", "--preserve-mtime", tmp, layer_dir],
             "mkfs.erofs", "erofs-utils")
        os.chmod(tmp, 0o644)
        _fsync(tmp)
        os.rename(tmp, path)
        _fsync(layer_images_dir(state_dir))
    except BaseException:
        _unlink(tmp)
        raise
    return path


def create_writable(path: str, size_bytes: int) -> None:
    """A sparse ext4 image whose root is 0755 root:root; its journal keeps it
    consistent if the VM dies. Written in place: the caller owns ``path``."""
    if size_bytes < _MIN_WRITABLE:
        raise InvalidArgument(f"writable layer of {size_bytes} bytes: want at least "
                              f"{_MIN_WRITABLE >> 20} MiB")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size_bytes)
    finally:
        os.close(fd)
    try:
        # lazy_*_init: no zeroing of inode tables or journal (the file is
        # sparse, so they read as zeros); nodiscard: nothing to discard yet.
        _run(["mkfs.ext4", "-F", "-q", "-m", "0", "-b", "4096",
              "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
              path], "mkfs.ext4", "e2fsprogs")
    except BaseException:
        _unlink(path)
        raise


def remove_layer_images(state_dir: str, keep_keys: Iterable[str]) -> list[str]:
    """Delete the cached layer images whose key is not in ``keep_keys``
    (and leftovers of interrupted builds); returns the paths removed."""
    keep = {f"{k.replace(':', '-')}.erofs" for k in keep_keys}
    directory = layer_images_dir(state_dir)
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    removed = []
    for entry in sorted(entries):
        building = entry.startswith(".build-")
        if entry in keep or not entry.endswith(".erofs") or (building and _recent(directory, entry)):
            continue
        _unlink(os.path.join(directory, entry))
        removed.append(os.path.join(directory, entry))
    return removed


def _recent(directory: str, entry: str) -> bool:
    """A build still in progress (touched within the hour) is not garbage."""
    try:
        return time.time() - os.stat(os.path.join(directory, entry)).st_mtime < 3600
    except FileNotFoundError:
        return False


def _run(argv: list[str], tool: str, package: str) -> None:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=_MKFS_TIMEOUT,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise Unavailable(f"{tool} not found: install {package}") from None
    if res.returncode != 0:
        detail = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
        raise IsoboxError(f"{tool} failed: {detail}")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
