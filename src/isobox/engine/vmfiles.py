"""A VM-isolated container's files, reached from the host.

Its writable layer is an ext4 disk image that the guest wrote (``D/upper.ext4``,
the overlay's ``diff`` and ``work`` inside). The host never hands that file
system to its own kernel: ``fuse2fs`` (e2fsprogs, user space) serves it on a
mount point that exists only in a private mount namespace of this process, for
the length of one command. A running VM is asked to ``sync`` first.

- ``upper_view``: the ``diff`` directory, read-only (diff, commit) or, for a
  stopped container, writable.
- ``root_view``: the container's ``/`` read-only: an overlay of that ``diff``
  over the image's layers, with the volumes and bind mounts on top (cp out,
  export).
- ``staged_root``: ``cp`` into a stopped container: writes land in a staging
  overlay's upper directory, which is then applied to the disk as a layer
  (whiteouts and opaque directories included).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from isobox.errors import Conflict, IsoboxError, Unavailable

if TYPE_CHECKING:
    from isobox.engine.container_store import ContainerRecord
    from isobox.engine.containers import ContainerService

MOUNT_TIMEOUT = 15.0
UPPER_DIR = "diff"


def is_paused(service: ContainerService, record: ContainerRecord) -> bool:
    try:
        with open(os.path.join(service.dir(record.id), "state.json"), "rb") as f:
            return bool(json.loads(f.read()).get("paused"))
    except (OSError, ValueError):
        return False


def _running(record: ContainerRecord) -> bool:
    return record.state["Status"] in ("running", "paused", "restarting")


def _parent_death_kill() -> None:
    import signal

    from isobox.linux import identity

    identity.set_parent_death_signal(signal.SIGKILL)  # no fuse2fs outlives the command


@contextlib.contextmanager
def _fuse2fs(image: str, target: str, writable: bool) -> Iterator[None]:
    """Serve ``image`` on ``target`` (we are inside a private mount namespace:
    fuse2fs inherits it, so the mount is never seen outside)."""
    from isobox.engine.fsaccess import unmount_quietly

    if shutil.which("fuse2fs") is None:
        raise Unavailable("fuse2fs is not installed (apt-get install fuse2fs): it reads a "
                          "VM container's writable layer")
    before = os.stat(target).st_dev
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(["fuse2fs", "-f", image, target, "-o", "rw" if writable else "ro"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=_parent_death_kill)
        try:
            deadline = time.monotonic() + MOUNT_TIMEOUT
            while os.stat(target).st_dev == before:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err.seek(0)
                    detail = err.read().decode(errors="replace").strip().splitlines()
                    raise IsoboxError("cannot read the VM container's writable layer: "
                                      + (detail[-1] if detail else "fuse2fs did not mount"))
                time.sleep(0.01)
            yield
        finally:
            unmount_quietly(target)
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def upper_view(service: ContainerService, record: ContainerRecord, *,
               writable: bool = False) -> Iterator[str]:
    """The writable layer's ``diff`` directory; call inside ``private_mounts``."""
    from isobox.engine.vmspec import UPPER_DISK
    from isobox.vm import execclient

    d = service.dir(record.id)
    image = os.path.join(d, UPPER_DISK)
    if writable and _running(record):  # cp goes through the guest's agent instead
        raise Conflict(f"the writable layer of running VM-isolated container "
                       f"{record.id[:12]} cannot be changed from the host")
    if record.state["Status"] == "running" and not is_paused(service, record):
        with contextlib.suppress(IsoboxError, OSError):
            execclient.call(d, "sync")
    target = tempfile.mkdtemp(prefix="upper-", dir=d)
    snapshot = None
    try:
        if _running(record):
            # The guest has it mounted (its journal is live): read a copy with
            # the journal replayed, in user space, never the disk itself.
            snapshot = _replayed_copy(image, d)
            image = snapshot
        elif _needs_recovery(image):
            _replay_journal(image)  # a VM killed mid-write; no one else has it open
        with _fuse2fs(image, target, writable):
            upper = os.path.join(target, UPPER_DIR)
            if not os.path.isdir(upper):  # never started: an empty layer
                if writable:
                    os.mkdir(upper, 0o755)
                else:
                    upper = tempfile.mkdtemp(prefix="empty-", dir=d)
            try:
                yield upper
            finally:
                if upper.startswith(os.path.join(d, "empty-")):
                    os.rmdir(upper)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(target)
        if snapshot is not None:
            with contextlib.suppress(OSError):
                os.unlink(snapshot)


def _needs_recovery(image: str) -> bool:
    result = subprocess.run(["dumpe2fs", "-h", image], capture_output=True, text=True,
                            timeout=60, check=False)
    return "needs_recovery" in result.stdout


def _replay_journal(image: str) -> None:
    result = subprocess.run(["e2fsck", "-E", "journal_only", "-y", image], capture_output=True,
                            text=True, timeout=300, check=False)
    if result.returncode not in (0, 1):  # 1: errors corrected
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise IsoboxError("the VM container's writable layer is damaged: "
                          + (detail[-1] if detail else f"e2fsck status {result.returncode}"))


def _replayed_copy(image: str, d: str) -> str:
    fd, copy = tempfile.mkstemp(prefix="upper-copy-", dir=d)
    os.close(fd)
    try:
        subprocess.run(["cp", "--sparse=always", image, copy], check=True, timeout=600,
                       capture_output=True)
        _replay_journal(copy)
    except BaseException:
        os.unlink(copy)
        raise
    return copy


def _host_spec(service: ContainerService, record: ContainerRecord) -> dict[str, Any]:
    """The guest's spec with mount sources turned back into host paths."""
    from isobox.engine import live
    from isobox.engine.vmspec import GUEST_SHARES

    spec = live.bundle_spec(service, record)
    with open(os.path.join(service.dir(record.id), "shim.json"), "rb") as f:
        shares = {s["tag"]: s["path"] for s in json.loads(f.read())["vm"]["shares"]}
    mounts = []
    for m in spec.get("mounts") or []:
        source = m.get("source") or ""
        if source.startswith(GUEST_SHARES + "/"):
            tag, _, rest = source[len(GUEST_SHARES) + 1:].partition("/")
            if tag not in shares:
                continue
            m = {**m, "source": os.path.join(shares[tag], rest) if rest else shares[tag]}
        mounts.append(m)
    return {**spec, "mounts": mounts}


@contextlib.contextmanager
def root_view(service: ContainerService, record: ContainerRecord, *,
              with_volumes: bool) -> Iterator[str]:
    """The container's ``/``, read-only (in a private mount namespace)."""
    from isobox.engine import fsaccess, layerdiff
    from isobox.linux import libc
    from isobox.linux.mounts import MS_RDONLY

    lowers = layerdiff.layer_dirs(service, record).lowers
    with fsaccess.private_mounts(), upper_view(service, record) as upper:
        target = tempfile.mkdtemp(prefix="mnt-", dir=service.dir(record.id))
        stacked: list[str] = []
        try:
            libc.mount("overlay", target, "overlay", MS_RDONLY,
                       "lowerdir=" + ":".join([upper, *lowers]))
            stacked.append(target)
            if with_volumes:
                stacked += fsaccess.mount_binds(_host_spec(service, record), target)
            yield target
        finally:
            for path in reversed(stacked):
                fsaccess.unmount_quietly(path)
            with contextlib.suppress(OSError):
                os.rmdir(target)


@contextlib.contextmanager
def staged_root(service: ContainerService, record: ContainerRecord) -> Iterator[str]:
    """A writable ``/`` for ``cp`` into a stopped VM container: what the body
    writes is applied to the container's disk when it returns normally."""
    from isobox.engine import fsaccess, layerdiff
    from isobox.images.fstree import TarSink
    from isobox.images.layers import apply_layer
    from isobox.linux import libc

    d = service.dir(record.id)
    lowers = layerdiff.layer_dirs(service, record).lowers
    with fsaccess.private_mounts(), upper_view(service, record, writable=True) as upper:
        staging = tempfile.mkdtemp(prefix="stage-", dir=d)
        try:
            for sub in ("diff", "work", "root"):
                os.mkdir(os.path.join(staging, sub), 0o755)
            root = os.path.join(staging, "root")
            libc.mount("overlay", root, "overlay", 0,
                       f"lowerdir={':'.join([upper, *lowers])},"
                       f"upperdir={staging}/diff,workdir={staging}/work")
            try:
                yield root
            finally:
                fsaccess.unmount_quietly(root)
            # The staged changes, as a layer, onto the disk's upper directory.
            with tempfile.TemporaryFile(dir=d) as layer:
                sink = TarSink(layer)
                with layerdiff.opened_dirs(layerdiff.LayerDirs(f"{staging}/diff", [upper, *lowers])) as (up, low):
                    for node in layerdiff.layer_nodes(up, low):
                        sink.add(node)
                sink.finish()
                layer.seek(0)
                apply_layer(layer, upper, mode="overlay")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
